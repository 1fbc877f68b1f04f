"""The model card's section on running a run's model.onnx with ONNX Runtime alone (no PyTorch)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ._hub import CARD_NAME
from .fileio import atomic_write, check_file_size
from .ood import ood_method, ood_method_names
from .onnx_io import FEATURES_NAME, INPUT_NAME, METADATA_NAME, OUTPUT_NAME, OnnxIO
from .run_layout import ONNX_INFO_NAME, OOD_NAME

__all__ = ["onnx_card_section", "onnx_failure_section", "update_card_section"]


_CARD_TITLE = "## ONNX Runtime"

_SNIPPET = '''```python
import json
import os

import numpy as np
import onnxruntime as ort
from PIL import Image

cfg = json.load(open("config.json"))["pretrained_cfg"]
channels, height, width = cfg["input_size"]
session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])

# timm's evaluation transform: shorter side to size / crop_pct, centre crop, [0, 1], normalise
image = Image.open("image.png").convert("RGB" if channels == 3 else "L")
short = int(height / (cfg.get("crop_pct") or 0.875))
w, h = image.size
size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
image = image.resize(size, getattr(Image.Resampling, cfg["interpolation"].upper()))
left, top = int(round((size[0] - width) / 2.0)), int(round((size[1] - height) / 2.0))
image = image.crop((left, top, left + width, top + height))
x = np.asarray(image, dtype=np.float32).reshape(height, width, channels) / 255.0
x = (x - np.array(cfg["mean"], dtype=np.float32)) / np.array(cfg["std"], dtype=np.float32)
x = x.transpose(2, 0, 1)[None]  # (1, C, H, W)
METADATA
logits, features = (out[0] for out in session.run(["logits", "features"], FEEDS))  # (K,), (D,)
config = json.load(open("config.json"))
temperature = (config.get("zoo") or {}).get("temperature") or 1.0  # calibrated when training fitted one
scaled = logits / temperature
probabilities = np.exp(scaled - scaled.max()) / np.exp(scaled - scaled.max()).sum()
print(config.get("label_names", list(range(len(logits))))[int(probabilities.argmax())])
if os.path.exists("OOD_FILE"):  # the out-of-distribution check, by the method the file names
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open("OOD_FILE", "np") as f:
        method = f.metadata()["method"]
    ood = load_file("OOD_FILE")  # the method's arrays and threshold (1,)
OOD_SCORES    print(f"OOD score ({method}) {score:.4f}, threshold {float(ood['threshold'][0]):.4f}:",
          "unlike the training images" if score > ood["threshold"][0] else "like the training images")
```'''


_METADATA_SNIPPET = '''# metadata (zoo.MetadataSchema.encode): (age - age_mean) / age_std, age-unknown flag, one-hot sex + unknown,
# one-hot site + unknown, with the schema in config.json's model_args; here every field is unknown
schema = json.load(open("config.json"))["model_args"]["metadata_schema"]
sexes, sites = len(schema["sex"]), len(schema["site"])
metadata = np.zeros((1, 2 + sexes + 1 + sites + 1), np.float32)
metadata[0, [1, 2 + sexes, 3 + sexes + sites]] = 1.0
'''


def onnx_card_section(io_spec: OnnxIO, info: dict[str, Any]) -> str:
    """The model card's ONNX section: the file, its inputs and outputs, the verification, and how to run it.

    `info` is the onnx.json entry an export has just written (this zoo's ONNX_INFO_VERSION: every field there).
    """
    c, h, w = io_spec.input_size
    lines = [f"`model.onnx` (opset {info['opset']}, float32, dynamic batch) runs with ONNX Runtime alone, "
             "no PyTorch needed.", "",
             f"- input `{INPUT_NAME}`: float32 (batch, {c}, {h}, {w}), the image resized, centre-cropped and "
             "normalised as config.json's `pretrained_cfg` says"]
    if io_spec.metadata_features is not None:
        lines.append(f"- input `{METADATA_NAME}`: float32 (batch, {io_spec.metadata_features}), the patient metadata "
                     "encoded as `zoo.MetadataSchema.encode` does with the schema in config.json's `model_args`")
    lines += [f"- output `{OUTPUT_NAME}`: float32 (batch, {io_spec.num_classes}); softmax (of logits / config.json's "
              "`zoo.temperature` where training fitted one) gives the class probabilities, in the order of "
              "config.json's `label_names`",
              f"- output `{FEATURES_NAME}`: float32 (batch, {io_spec.num_features or 'D'}), the backbone's globally "
              f"average-pooled image features; the out-of-distribution check compares them with `{OOD_NAME}` "
              "(by the method the file names, as in the snippet)", "", _verification_sentence(info["verification"]),
              ""]
    metadata = _METADATA_SNIPPET if io_spec.metadata_features is not None else ""
    feeds = (f'{{"{INPUT_NAME}": x, "{METADATA_NAME}": metadata}}' if metadata else f'{{"{INPUT_NAME}": x}}')
    snippet = (_SNIPPET.replace("METADATA\n", metadata).replace("FEEDS", feeds).replace("OOD_FILE", OOD_NAME)
               .replace("OOD_SCORES", _ood_scores()))
    return "\n".join([_CARD_TITLE, "", *lines, snippet, ""])


def onnx_failure_section(reason: str, retry: str) -> str:
    """The model card's ONNX section when the run's export failed: why, and the command that exports it later
    (whose success replaces this section with onnx_card_section's)."""
    return "\n".join([_CARD_TITLE, "", f"`model.onnx` was not exported at the end of this run ({reason}). The PyTorch "
                      "weights, this card and the metrics are complete and do not depend on it. Once the cause is "
                      f"fixed (e.g. space freed on the disk), export it with `{retry}`: it is verified against the "
                      "PyTorch weights before it is written, and this section then describes it.", ""])


def _ood_scores() -> str:
    """The snippet's scoring branch: one per OOD method this zoo knows, each the method's own numpy statement."""
    lines = []
    for i, name in enumerate(ood_method_names()):
        lines += [f'    {"if" if i == 0 else "elif"} method == "{name}":', f"        {ood_method(name).numpy_score}"]
    lines += ["    else:", '        raise SystemExit(f"OOD method {method!r} is not known to this snippet")']
    return "\n".join(lines) + "\n"


def _verification_sentence(v: dict[str, Any]) -> str:
    """The export's verification figures (verify_onnx's, with their inputs_source) in one sentence."""
    features = v["features"]
    return (f"Verified against the PyTorch weights on {v['inputs']} {v['inputs_source']}: "
            f"max |Δ logit| {v['max_abs_diff']:.2g} (allowed {v['tolerance']:.2g}), "
            f"top-1 identical on {v['top1_agreement']:.0%}"
            + (f"; features max |Δ| {features['max_abs_diff']:.2g} (allowed {features['tolerance']:.2g}), "
               f"lowest cosine {features['min_cosine']:.6f}" if features else "")
            + f"; ONNX Runtime {v['onnxruntime']} (figures in `{ONNX_INFO_NAME}`).")


def update_card_section(card: Path, section: str) -> None:
    """Put `section` into the card, replacing an earlier ONNX section, before 'Intended use' when there."""
    check_file_size(card, CARD_NAME)
    text = card.read_text(encoding="utf-8")
    text = re.sub(rf"{re.escape(_CARD_TITLE)}\n.*?(?=^## |\Z)", "", text, flags=re.S | re.M)
    marker = "## Intended use and limitations"
    text = text.replace(marker, section + "\n" + marker, 1) if marker in text else text.rstrip("\n") + "\n\n" + section
    with atomic_write(card) as f:
        f.write(text.encode("utf-8"))
