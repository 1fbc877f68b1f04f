"""The demo zoo builder's online path (`bash run.sh --data medmnist:FLAG[:SIZE]`) against local stand-ins: the Hub
stand-in (tests/hub_server.py, via HF_ENDPOINT) serving timm-format ImageNet weights, and a MedMNIST-format .npz made
from the packaged chest X-rays, placed where the medmnist package keeps its files (~/.medmnist)."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors.torch import save as save_safetensors

from hub_server import HubServer

from zoo import assets

ROOT = Path(__file__).resolve().parents[1]
FLAG = "pneumoniamnist"
RESNET = "timm/resnet18.a1_in1k"  # zoo.get_architecture("resnet18").imagenet_tag on the Hub


def _pneumoniamnist_npz(path: Path) -> None:
    """PneumoniaMNIST's layout at 28 px (label 0 normal, 1 pneumonia) from the 16 packaged chest X-rays: each X-ray
    and its mirror image, the two versions split so that every split holds both classes."""
    rows = {"train": [], "val": [], "test": []}
    for i, (file, label) in enumerate(assets.medical_classifier("pneumonia").images()):
        image = Image.open(file).convert("L")
        for j, version in enumerate((image, ImageOps.mirror(image))):
            split = "train" if j == 0 or i % 4 < 2 else ("val" if i % 4 == 2 else "test")
            rows[split].append((np.asarray(version.resize((28, 28), Image.Resampling.BILINEAR)),
                                int(label == "PNEUMONIA")))
    arrays = {}
    for split, items in rows.items():
        arrays[f"{split}_images"] = np.stack([x for x, _ in items]).astype(np.uint8)  # (N, 28, 28)
        arrays[f"{split}_labels"] = np.array([[y] for _, y in items], dtype=np.uint8)  # (N, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def _timm_weights() -> dict[str, bytes]:
    """resnet18's ImageNet weights in the timm Hub layout (random values: what matters is where they come from)."""
    import timm
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False)
    config = {"architecture": "resnet18", "num_classes": 1000, "num_features": model.num_features,
              "pretrained_cfg": {k: v for k, v in model.pretrained_cfg.items() if isinstance(v, (str, int, float,
                                                                                                 list, tuple))}}
    return {"model.safetensors": save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()}),
            "config.json": json.dumps(config).encode()}


def _build(tmp_path: Path, endpoint: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf"), "HOME": str(tmp_path),
           "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    for name in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN"):
        env.pop(name, None)
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "build_demo_zoo.py"), "--weights",
                           str(tmp_path / "weights"), "--data", f"medmnist:{FLAG}:28", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_medmnist_demo_zoo_trains_on_hub_weights_and_the_medmnist_file(tmp_path):
    _pneumoniamnist_npz(tmp_path / ".medmnist" / f"{FLAG}.npz")
    served = _timm_weights()
    with HubServer() as hub:
        hub.add_repo(RESNET, served)
        result = _build(tmp_path, hub.endpoint, "--only", "resnet18,quadsnet,lenet5", "--epochs", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    names = ["resnet18-fine-tune-pneumoniamnist28", "quadsnet-scratch-pneumoniamnist28",
             "lenet5-scratch-pneumoniamnist28"]
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == sorted(names)
    for name in names:
        folder = tmp_path / "weights" / name
        config = json.loads((folder / "config.json").read_text())
        assert config["zoo"]["dataset"] == FLAG and config["num_classes"] == 2
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["epochs_run"] == 1 and metrics["test"]["num_samples"] == 4
    resnet = json.loads((tmp_path / "weights" / names[0] / "config.json").read_text())["zoo"]
    assert resnet["pretrained"] and resnet["weights"] == "resnet18.a1_in1k" and resnet["mode"] == "fine-tune"
    # the ImageNet weights came from the Hub stand-in, through the Hugging Face cache
    cached = list((tmp_path / "hf").rglob("models--timm--resnet18.a1_in1k/snapshots/*/model.safetensors"))
    assert len(cached) == 1 and cached[0].read_bytes() == served["model.safetensors"]
    assert "[1/3] resnet18-fine-tune-pneumoniamnist28 ... test balanced accuracy" in result.stdout


def test_medmnist_demo_zoo_without_the_hub_fails_within_seconds_and_keeps_the_offline_zoo(tmp_path):
    _pneumoniamnist_npz(tmp_path / ".medmnist" / f"{FLAG}.npz")
    offline = tmp_path / "weights" / "lenet5-scratch-digits"
    offline.mkdir(parents=True)
    (offline / "config.json").write_text("{}")
    (offline / "model.safetensors").write_bytes(b"kept")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    start = time.perf_counter()
    result = _build(tmp_path, f"http://127.0.0.1:{closed}")
    elapsed = time.perf_counter() - start
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot be reached" in result.stderr and "resnet18.a1_in1k" in result.stderr
    assert "(the offline demo zoo stays)" in result.stderr
    assert [p.name for p in (tmp_path / "weights").iterdir()] == ["lenet5-scratch-digits"]
    assert (offline / "model.safetensors").read_bytes() == b"kept"
    assert elapsed < 60, elapsed  # the Python start-up and imports; the network check itself is 3 s at most


def test_medmnist_demo_zoo_without_the_data_fails_within_seconds(tmp_path):
    with HubServer() as hub:  # the Hub is there, the data is not (no file; no medmnist package, or no data host)
        start = time.perf_counter()
        result = _build(tmp_path, hub.endpoint)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{FLAG}.npz is not there" in result.stderr or "data host zenodo.org cannot be reached" in result.stderr
    assert str(tmp_path / ".medmnist") in result.stderr
    assert not (tmp_path / "weights").exists()
    assert time.perf_counter() - start < 60
