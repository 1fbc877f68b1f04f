"""The tiny test zoo (tests/_app_zoo.py, whose run folders have a verified model.onnx, as `python -m train`
writes one) with what private mode needs besides: a temperature and conformal threshold for one model, so that
the page's calibrated probabilities and prediction sets are checked too. Also the real images of the parity
checks, written from installed packages."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

import zoo
from _app_zoo import LESIONS, TINY_MODELS, build_tiny_zoo, packaged_examples

CALIBRATED = "lenet5-scratch-digits"
WITH_OOD = "lite0-fe-digits"  # gets OOD statistics fitted on digits, so the page's OOD check is compared too
# gets Mahalanobis OOD statistics fitted on digits (with the digits' labels): an untrained model, so the parity
# check compares the page's arithmetic with the server's, not what the statistics mean
WITH_MAHALANOBIS = "lenet5-meta-lesions"
TRUST = {"temperature": 1.7, "conformal": {"alpha": 0.1, "threshold": 0.85, "n_calibration": 100}}
SCHEMA = dict(sex=["female", "male"], site=["back", "face", "hand"])
# runs whose Grad-CAM has the closed form (zoo.onnx_cam), so that the page computes their heatmaps: LeNet-5 at 48 px
# (its C5 map is 5x5 there; 1x1 at the tiny zoo's 32 px, which falls back) with the mlp head and the metadata head
# (its linear layer's first D columns), untrained: the page's arithmetic is compared with the server's
CAM_MODELS = {"lenet48-mlp-lesions": dict(head="mlp", mlp_hidden=16),
              "lenet48-meta-lesions": dict(head="metadata", metadata_hidden=8, metadata_schema=SCHEMA)}
CAM_SIZE = 48


def build_private_zoo(weights: Path) -> Path:
    """The tiny zoo (model.onnx in each model's run folder) with trust figures for CALIBRATED (once)."""
    marker = weights / ".private-complete"
    if marker.is_file():
        return weights
    build_tiny_zoo(weights)
    assert all((weights / run / "model.onnx").is_file() for run in TINY_MODELS)
    config_path = weights / CALIBRATED / "config.json"
    config = json.loads(config_path.read_text())
    config["zoo"].update(TRUST)
    config_path.write_text(json.dumps(config, indent=2))
    fit_digit_ood(weights / WITH_OOD)
    fit_digit_ood(weights / WITH_MAHALANOBIS, method="mahalanobis")
    for seed, (run, kwargs) in enumerate(CAM_MODELS.items(), start=10):
        add_cam_run(weights / run, seed, kwargs)
    marker.write_text("ok")
    return weights


def add_cam_run(folder: Path, seed: int, kwargs: dict) -> None:
    """An exported LeNet-5 run at CAM_SIZE px with these create_model kwargs (random weights, fixed seed)."""
    import warnings

    import torch

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = zoo.create_model("lenet5", num_classes=len(LESIONS), mode="scratch", **kwargs)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (1, CAM_SIZE, CAM_SIZE)}
    zoo.save_pretrained(model.eval(), folder, label_names=LESIONS, dataset="lesions")
    zoo.export_onnx(folder)


def fit_digit_ood(folder: Path, count: int = 300, method: str = "knn-cosine") -> None:
    """OOD statistics for a digits run: the features of `count` scikit-learn digits through the model, and the
    score 95% of them pass; for knn-cosine each scored against the others (leave-one-out), as an imported model's
    are, for another method (zoo/ood/) fitted with the digits' labels and scored as they are."""
    import torch
    from sklearn.datasets import load_digits

    from zoo.inference import build_transform
    from zoo.ood import ood_method, save_ood_statistics, threshold_at_pass_rate
    from zoo.trust import features_and_logits, leave_one_out_scores, write_ood_statistics

    model = zoo.load_pretrained(folder).eval()
    transform = build_transform(zoo.resolve_data_config(model))
    channels = model.pretrained_cfg["input_size"][0]
    digits = load_digits()
    images = (digits.images[:count] * (255 / 16)).astype(np.uint8)
    x = torch.stack([transform(Image.fromarray(d, "L").convert("RGB" if channels == 3 else "L")) for d in images])
    with torch.no_grad():
        features, _ = features_and_logits(model, x)  # (N, D)
    if method == "knn-cosine":
        write_ood_statistics(folder, features, float(leave_one_out_scores(features).quantile(0.95)))
        return
    statistics = ood_method(method).fit(features, digits.target[:count])
    save_ood_statistics(folder, statistics.with_threshold(threshold_at_pass_rate(statistics.scores(features))))


def chest_xray() -> Path:
    """A real chest X-ray (grey JPEG, about 1000-1400 px) from the installed pneumonia-model-package."""
    return zoo.assets.medical_classifier("pneumonia").images()[0][0]


def parity_images(folder: Path) -> dict[str, Path]:
    """name -> file: a scikit-learn digit upscaled, retina.jpg, a non-square crop, a greyscale and an RGBA image."""
    from sklearn.datasets import load_digits

    folder.mkdir(parents=True, exist_ok=True)
    retina = packaged_examples()["retina"]
    digit = (load_digits().images[7] * (255 / 16)).astype(np.uint8)
    files = {"digit": folder / "digit.png", "retina": retina, "non-square": folder / "wide.jpg",
             "greyscale": folder / "grey.png", "rgba": folder / "rgba.png"}
    Image.fromarray(digit, "L").resize((96, 96), Image.Resampling.BILINEAR).save(files["digit"])
    with Image.open(retina) as im:
        photo = im.convert("RGB")
    photo.crop((200, 300, 1100, 700)).save(files["non-square"], quality=92)
    photo.convert("L").resize((300, 300), Image.Resampling.BICUBIC).save(files["greyscale"])
    rgba = photo.resize((180, 120)).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, 180, dtype=np.uint8), (120, 1))  # every opacity from clear to opaque
    rgba.putalpha(Image.fromarray(alpha, "L"))
    rgba.save(files["rgba"])
    return files
