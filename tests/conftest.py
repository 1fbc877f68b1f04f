import os
import sys
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True, scope="session")
def _zoo_cache(tmp_path_factory):
    """One zoo cache (offline weights, ONNX exports and verification records) for the session, never the user's
    ~/.cache: session-scoped, so that module fixtures building run folders write there too."""
    import zoo._hub

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zoo._hub, "CACHE_DIR", tmp_path_factory.getbasetemp() / "zoo-cache")
        yield


@pytest.fixture(scope="session")
def medical_zoo(tmp_path_factory):
    """(weights folder, {name: run folder}): the two packaged Keras classifiers imported as `python -m zoo import`
    does (each checked against Keras's recorded outputs; seconds each), once for the asset and app tests."""
    from zoo.keras_import import import_keras_classifier

    root = tmp_path_factory.getbasetemp() / "medical-zoo"
    return root, {name: import_keras_classifier(name, root / f"{name}-xception") for name in ("pneumonia", "braintumor")}


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """One LeNet-5 trained on the bundled digits as `python -m train --arch lenet5 --data digits --epochs 8`
    does, shared by the tests that need a real trained run (its folder is `<zoo>/lenet5-digits`)."""
    from train import run_training

    out = tmp_path_factory.mktemp("digits-zoo") / "lenet5-digits"
    start = time.perf_counter()
    result = run_training(arch="lenet5", mode="scratch", data="digits", epochs=8, out=str(out), quiet=True)
    result.timing["wall_s"] = time.perf_counter() - start
    return result


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    """The app tests' small zoo of run folders (tests/_app_zoo.py), built once per session."""
    from _app_zoo import build_tiny_zoo

    return build_tiny_zoo(tmp_path_factory.getbasetemp() / "app-zoo")


@pytest.fixture(scope="module")
def entries(weights):
    """The app tests' zoo as the catalog lists it, by id."""
    from zoo.catalog import discover_models

    return {e.id: e for e in discover_models(weights)}
