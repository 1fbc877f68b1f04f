"""sklesion's HAM10000 skin-lesion model imported as a run folder (zoo.skin_import), checked against the outputs
Keras itself recorded (zoo/data/skin_reference.json, scripts/skin_reference.py); no Keras or TensorFlow here."""
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import zoo
from zoo import ZooError
from zoo.skin_import import (REFERENCE_IMAGES, REFERENCE_RECORDS, SKIN_REFERENCE, import_skin_model,
                             numpy_only_loads, reference_image, skin_metadata_schema, skin_outputs)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

RECORDED = json.loads(SKIN_REFERENCE.read_text())
UPSCALED = "microaneurysms.png"  # 102 px, enlarged to 254: its top class changes with the metadata
OLD_MAN_FACE = {"age": 70, "sex": "male", "site": "head-or-neck"}
DIGITS_MODEL = "lenet5-scratch-digits"  # the second column a comparison needs (tests/_app_zoo.py)
YOUNG_WOMAN_LEG = {"age": 25, "sex": "female", "site": "leg-or-genital"}
UNKNOWN_TRUNK = {"age": None, "sex": "unknown", "site": "trunk"}


def recorded_probs(image: str, metadata: dict) -> np.ndarray:
    return np.asarray(next(o["probs"] for o in RECORDED["outputs"] if o["image"] == image and o["metadata"] == metadata))


@pytest.fixture(scope="module")
def skin_run(tmp_path_factory):
    return import_skin_model(tmp_path_factory.mktemp("skin-zoo") / "skin-xception")


def test_metadata_encoding_is_the_sources():
    """The schema read from model_props.pkl encodes each record as the package's model.py did (recorded)."""
    schema = skin_metadata_schema()
    encoded = schema.encode([{"age": r["age"], "sex": r["sex"], "location": r["site"]} for r in REFERENCE_RECORDS])
    vectors = [o["metadata_vector"] for o in RECORDED["outputs"][:len(REFERENCE_RECORDS)]]
    assert encoded.numpy() == pytest.approx(np.asarray(vectors), abs=1e-6)
    assert schema.sex == ("female", "male") and schema.site == ("arm", "head-or-neck", "leg-or-genital", "trunk")


def test_import_reproduces_the_recorded_keras_outputs(skin_run):
    """Every image x metadata record within 1e-4 of Keras's probabilities, from the saved run folder."""
    model = zoo.load_pretrained(skin_run)
    rows = skin_outputs(model)
    assert len(rows) == len(REFERENCE_IMAGES) * len(REFERENCE_RECORDS) == len(RECORDED["outputs"])
    worst = max(float(np.abs(r["probs"] - recorded_probs(r["image"], r["metadata"])).max()) for r in rows)
    assert worst < 1e-4
    parity = json.loads((skin_run / "config.json").read_text())["zoo"]["source_parity"]
    assert parity["n"] == len(rows) and parity["max_abs_prob_diff"] < 1e-4


def test_import_refuses_to_save_past_the_tolerance(tmp_path):
    record = json.loads(SKIN_REFERENCE.read_text())
    record["outputs"][3]["probs"] = [1.0] + [0.0] * 6
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(record))
    with pytest.raises(ZooError, match="differs from the recorded Keras outputs.*nothing was saved"):
        import_skin_model(tmp_path / "run", reference=forged)
    assert not (tmp_path / "run").exists()


def test_numpy_only_unpickler_refuses_any_other_global():
    array = np.arange(3, dtype=np.int64)
    assert (numpy_only_loads(pickle.dumps({"a": array}, protocol=4), "test.pkl")["a"] == array).all()
    with pytest.raises(ZooError, match=r"test\.pkl.*posix\.system|test\.pkl.*os\.system"):
        numpy_only_loads(pickle.dumps(os.system, protocol=4), "test.pkl")


def test_run_folder_states_licence_author_evaluation_facts_and_skipped_trust(skin_run):
    config = json.loads((skin_run / "config.json").read_text())
    block = config["zoo"]
    assert config["model_args"]["head"] == "metadata+mlp" and block["license"] == "cc-by-nc-4.0"
    assert config["model_args"]["metadata_schema"]["age_fill"] == pytest.approx(51.9018, abs=1e-4)
    facts = block["facts"]
    assert facts["training_data_license"] == "CC BY-NC 4.0"
    assert {e["by"] for e in facts["evaluation"]} == {"the model's author"}
    assert {(e["metric"], e["n"]) for e in facts["evaluation"]} == {("accuracy", 1511), ("macro F1", 1511)}
    assert facts["not_tested_on"] and facts["failure_modes"]
    card = (skin_run / "README.md").read_text()
    assert "license: cc-by-nc-4.0" in card and "non-commercial" in card
    assert "Evaluation by the model's author (not by us)" in card and "0.825" in card
    assert "no labelled dermoscopic image is available offline" in card
    trust = zoo.load_pretrained(skin_run).trust
    assert trust.ood is None and trust.ood_reason.startswith("no OOD check: sklesion ships no images")
    assert trust.temperature is None and trust.calibration_reason.startswith("not calibrated")
    metrics = json.loads((skin_run / "metrics.json").read_text())
    assert metrics["author_evaluation"]["per_class"]["mel"]["f1"] == pytest.approx(0.5789, abs=1e-4)


def test_app_transform_resizes_as_tensorflow_from_the_zoo_block(skin_run):
    """A shrunk image (retina.jpg, 1411 px) through the app's backend transform equals the parity path; PIL's
    bilinear (stock timm's transform for the same pretrained_cfg) would not."""
    from zoo.backends import Backend
    from zoo.eval_transform import eval_transform
    from zoo.images import load_image, to_model_mode

    config = json.loads((skin_run / "config.json").read_text())
    assert config["zoo"]["resize"] == "tf-bilinear"
    backend_config = Backend(skin_run, config, "torch", None).data_config
    image = to_model_mode(load_image(reference_image("skimage", "retina.jpg")).image, 3)
    ours = eval_transform(backend_config)(image)
    expected = eval_transform(zoo.resolve_data_config(zoo.load_pretrained(skin_run)))(image)
    pil = eval_transform({k: v for k, v in backend_config.items() if k != "resize"})(image)
    assert torch.equal(ours, expected) and float((ours - pil).abs().max()) > 0.05


def test_stock_timm_loads_the_run_folder(skin_run):
    model = timm.create_model(f"local-dir:{skin_run}").eval()
    schema = model.metadata_schema
    x = torch.zeros(1, 3, 254, 254)
    with torch.inference_mode():
        assert model(x, schema.encode([{}])).shape == (1, 7)
    assert tuple(model.pretrained_cfg["std"]) == pytest.approx((0.14076, 0.15266, 0.17005), abs=1e-5)


@pytest.fixture(scope="module")
def served(skin_run, weights, tmp_path_factory):
    """The app on the tests' tiny zoo (a comparison takes two models) plus the skin run, listed by the catalog."""
    import app
    from gradio_client import Client
    from _serve import serve

    catalog = tmp_path_factory.mktemp("catalog") / "catalog.json"
    catalog.write_text(json.dumps({"models": [{"id": "skin-xception", "source": "local", "path": str(skin_run)}]}))
    settings = app.Settings(weights=weights, catalog=catalog, examples_dir=tmp_path_factory.mktemp("examples"),
                            backend="torch")
    demo, url = serve(settings)
    client = Client(url, verbose=False)
    yield demo, client
    demo.close()


def test_compare_answers_with_metadata_as_the_source_does(served):
    """Through /compare, age/sex/site change the answer on the same image as they change Keras's."""
    from gradio_client import handle_file

    demo, client = served
    path = handle_file(str(reference_image("skimage", UPSCALED)))
    answers = {}
    for record in (OLD_MAN_FACE, YOUNG_WOMAN_LEG, UNKNOWN_TRUNK):  # the last: age left empty, sex "unknown"
        result, _ = client.predict(path, ["skin-xception", DIGITS_MODEL], record["age"], record["sex"], record["site"], 7,
                                  api_name="/compare")
        assert result["error"] is None
        answers[record["sex"]] = {t["label"]: t["probability"] for t in result["top_k"]}
    labels = json.loads((Path(demo.zoo_app.entries["skin-xception"].run_dir) / "config.json").read_text())["label_names"]
    for sex, record in (("male", OLD_MAN_FACE), ("female", YOUNG_WOMAN_LEG), ("unknown", UNKNOWN_TRUNK)):
        source = recorded_probs(UPSCALED, record)
        # the app resizes as TensorFlow does (the zoo block's "resize": "tf-bilinear"), so it answers as Keras did
        assert max(abs(answers[sex][label] - p) for label, p in zip(labels, source)) < 1e-4
        assert max(answers[sex], key=answers[sex].get) == labels[int(source.argmax())]
    assert labels[int(recorded_probs(UPSCALED, OLD_MAN_FACE).argmax())] != \
        labels[int(recorded_probs(UPSCALED, YOUNG_WOMAN_LEG).argmax())]


def test_the_compare_buttons_handler_passes_the_pages_metadata_fields_to_the_model(served):
    """The page's Compare button (ui/events.py, what the browser calls) with the age, sex and site fields filled in
    answers as Keras did for that record; its column shows the source's class name."""
    from ui.events import AppEvents

    demo, _ = served
    image = str(reference_image("skimage", UPSCALED))
    record = OLD_MAN_FACE
    summary, records, results, *columns = AppEvents(demo.zoo_app).compare(
        image, ["skin-xception", DIGITS_MODEL], record["age"], record["sex"], record["site"], 7, False, False,
        None, None, None, request=None, progress=lambda *args, **kwargs: None)
    skin = next(r for r in records if r["model"] == "skin-xception")
    assert skin["error"] is None, skin["error"]
    labels = json.loads((Path(demo.zoo_app.entries["skin-xception"].run_dir) / "config.json").read_text())["label_names"]
    source = recorded_probs(UPSCALED, record)
    answer = {t["label"]: t["probability"] for t in skin["top_k"]}
    assert max(abs(answer[label] - p) for label, p in zip(labels, source)) < 1e-4
    assert skin["top_k"][0]["label"] == labels[int(source.argmax())]


def test_ui_offers_the_models_own_vocabulary_with_unknown(served):
    demo, _ = served
    show, sexes, sites = demo.zoo_app.metadata_fields(["skin-xception"])
    assert show and sexes == ["unknown", "female", "male"]
    assert sites == ["unknown", "arm", "head-or-neck", "leg-or-genital", "trunk"]


def test_import_command_knows_skin(tmp_path, monkeypatch):
    from zoo.__main__ import main
    from zoo.model_imports import IMPORTS

    calls = []
    monkeypatch.setitem(IMPORTS, "skin", lambda *a, **k: calls.append((a, k)) or tmp_path / "skin")
    assert main(["import", "skin", "--out", str(tmp_path / "skin")]) == 0
    assert main(["import", "skin", "--out", str(tmp_path / "skin"), "--reference", str(SKIN_REFERENCE)]) == 0
    assert calls == [((str(tmp_path / "skin"),), {}), ((str(tmp_path / "skin"),), {"reference": str(SKIN_REFERENCE)})]
