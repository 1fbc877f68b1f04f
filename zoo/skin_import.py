"""`python -m zoo import skin`: sklesion's HAM10000 skin-lesion classifier (image + patient metadata) as a run folder.

sklesion==0.2.2 ships a Keras 3 model (model.keras): raw 0-255 RGB at 254x254 -> Normalization (per-channel mean and
variance) -> keras.applications Xception (global average pooled, 2048) -> Dropout(0.3) -> Dense(264, relu) ->
BatchNormalization; a 10-value metadata vector -> Dense(224, relu) -> BatchNormalization -> Dense(64, relu) ->
BatchNormalization; both concatenated (image first, 328) -> Dropout(0.2) -> Dense(32, relu) -> BatchNormalization ->
Dense(7, softmax). It becomes a `zoo_variant` on the zoo's `xception` (tf_xception: TF-"same" strided max-pools,
as Keras) with the `metadata+mlp` head, the Normalization layer as pretrained_cfg's mean/std (in 0-1 units:
mean / 255, sqrt(variance) / 255), and a MetadataSchema that encodes exactly as the package's model.py: sex
one-hot [female, male, unknown], location one-hot [arm, head-or-neck, leg-or-genital, trunk, unknown], age / 90,
age-missing flag, a missing age filled with the training mean 51.90 (all read from the package's model_props.pkl).

The package's pickles (model_props.pkl, cr_test.pkl, cl_info.pkl) are read after their sha256 check with an
unpickler that resolves only the four numpy globals they need; any other global is refused. The source's outputs
were recorded once with Keras itself (scripts/skin_reference.py) on real images that install offline; every
import compares against them and saves nothing past PARITY_TOLERANCE.
"""
from __future__ import annotations

import io
import json
import pickle
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._builder import create_model, resolve_data_config
from ._errors import ZooError
from ._hub import load_matching, save_pretrained
from .archs.metadata import MetadataSchema
from .eval_transform import RESIZE_KEY, TF_BILINEAR, eval_transform
from .assets import ASSET_PACKAGES, asset_error, asset_file, file_sha256, medical_classifier, package_folder
from .keras_import import PARITY_TOLERANCE
from .keras_weights import KerasArchive, dense_head_state, read_keras_archive, xception_backbone_state
from .modes import apply_mode, count_params
from .run_layout import METRICS_NAME

__all__ = ["SKIN_REFERENCE", "REFERENCE_IMAGES", "REFERENCE_RECORDS", "author_report", "convert_skin_model",
           "compare_with_skin_reference", "import_skin_model", "label_names", "normalization_cfg", "numpy_only_loads",
           "read_package_pickle", "skin_facts", "reference_image", "skin_metadata_schema", "skin_outputs"]

SKIN = ASSET_PACKAGES["sklesion"]
# (file inside the package, sha256) of every file read
MODEL_FILE = ("model.keras", "df1a81a62ffabeda48384c4a733138133af8bb463959503545422a2a1c1e75b1")
PROPS_FILE = ("model_props.pkl", "09faefd70f0820d086b931d3677e713dac3ea6f600e3e98d4df072c9fe8c3656")
REPORT_FILE = ("cr_test.pkl", "6430692566976a394687d4591a93c6cf1423b279800f1804f35a78ccd185d259")
CLASSES_FILE = ("cl_info.pkl", "8cc944ff7aaa1b78c97c143fd5466478951fa94a5b0c4eed5d2b825a361f514b")
SKIN_REFERENCE = Path(__file__).resolve().parent / "data" / "skin_reference.json"
# The package ships no images: the reference inputs are real images that install with the zoo's requirements,
# none of them a dermoscopic image (so the recorded outputs say nothing about accuracy, only about parity):
# scikit-image's data files (fundus, histology, micro-aneurysms, photographs) and two packaged chest X-rays.
REFERENCE_IMAGES = (("skimage", "retina.jpg"), ("skimage", "ihc.png"), ("skimage", "microaneurysms.png"),
                    ("skimage", "chelsea.png"), ("skimage", "astronaut.png"), ("skimage", "coffee.png"),
                    ("skimage", "rocket.jpg"), ("pneumonia", "NORMAL2-IM-1427-0001.jpeg"),
                    ("pneumonia", "person1946_bacteria_4874.jpeg"))
# metadata as the app passes it (age, sex, site); None / "unknown" are missing values
REFERENCE_RECORDS = ({"age": None, "sex": None, "site": None},
                     {"age": 70, "sex": "male", "site": "head-or-neck"},
                     {"age": 25, "sex": "female", "site": "leg-or-genital"},
                     {"age": None, "sex": "unknown", "site": "trunk"},
                     {"age": 45, "sex": "female", "site": "arm"})
# Keras layer (own name) -> zoo module; the image side's Dense(264) is Keras's "dense", the metadata's first
# Dense(224) is "dense_1" (Keras numbers layers in creation order)
HEAD_LAYERS = {"dense": "image_projection.fc", "batch_normalization_4": "image_projection.norm",
               "dense_1": "metadata_encoder.layers.0.fc", "batch_normalization_5": "metadata_encoder.layers.0.norm",
               "dense_2": "metadata_encoder.layers.1.fc", "batch_normalization_6": "metadata_encoder.layers.1.norm",
               "dense_3": "fc.fc1", "batch_normalization_7": "fc.norm", "dense_4": "fc.fc2"}
HEAD_SHAPE = {"dense": (264, "relu"), "dense_1": (224, "relu"), "dense_2": (64, "relu"), "dense_3": (32, "relu"),
              "dense_4": (7, "softmax"), "dropout": 0.3, "dropout_1": 0.2}
TRAINING_DATA = ("HAM10000 (Tschandl et al., Sci. Data 2018, doi 10.1038/sdata.2018.161): dermoscopic images of "
                 "pigmented skin lesions with patient age, sex and body site")
TRAINING_LICENSE = "CC BY-NC 4.0"
LICENSE_NOTE = ("sklesion's code is MIT, but the weights were trained on HAM10000, which is CC BY-NC 4.0: treat "
                "them as non-commercial (cc-by-nc-4.0) and credit HAM10000's authors.")
# numpy globals that numpy arrays and scalars pickle through (numpy 1's module name, as the package's pickles
# use it, and numpy 2's)
_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype"),
                  *((module, name) for module in _MULTIARRAY for name in ("_reconstruct", "scalar"))}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only _NUMPY_GLOBALS: no other class or function can run while reading."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        from numpy._core import multiarray  # noqa: PLC0415  (numpy 2's home of numpy.core.multiarray)

        return getattr(multiarray if module in _MULTIARRAY else np, name)


def numpy_only_loads(data: bytes, where: str) -> object:
    """Unpickle `data` (from the file `where`) resolving no global but numpy's array and scalar constructors."""
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise ZooError(f"{where} cannot be read with numpy-only unpickling ({e}); only numpy arrays, scalars and "
                       "plain Python values are read from a pickle. Use the pinned, unchanged file.") from None


def read_package_pickle(file: tuple[str, str]) -> object:
    """A pickle of the sklesion package (name, sha256), after its sha256 check, through numpy_only_loads."""
    path = asset_file(SKIN, *file)
    try:
        return numpy_only_loads(path.read_bytes(), f"{SKIN.pin}: {file[0]}")
    except ZooError as e:
        raise asset_error(SKIN, str(e)) from None


@lru_cache(maxsize=1)
def _model_props() -> dict:
    props = read_package_pickle(PROPS_FILE)
    if not isinstance(props, dict) or not {"img_shape", "age_mean", "age_max", "i_cl_map", "oh_map"} <= set(props):
        raise asset_error(SKIN, f"{PROPS_FILE[0]} lacks img_shape, age_mean, age_max, i_cl_map or oh_map")
    return props


def _categories(one_hot: dict, what: str) -> tuple[str, ...]:
    """The categories of a one-hot map {name: [0, 1, 0]} in vector order, 'unknown' last (dropped: the schema
    adds its unknown category at the end)."""
    order = sorted(one_hot, key=lambda k: list(one_hot[k]).index(1))
    if order[-1] != "unknown" or any(sorted(one_hot[k]) != [0] * (len(order) - 1) + [1] for k in order):
        raise asset_error(SKIN, f"{PROPS_FILE[0]}: the {what} encoding is not one-hot with 'unknown' last ({one_hot})")
    return tuple(order[:-1])


def skin_metadata_schema() -> MetadataSchema:
    """The package's metadata encoding (model.py's preprocess, model_props.pkl's values) as a zoo schema."""
    props = _model_props()
    return MetadataSchema(sex=_categories(props["oh_map"]["sex"], "sex"),
                          site=_categories(props["oh_map"]["loc"], "location"),
                          age_mean=0.0, age_std=float(props["age_max"]),  # model.py: age / age_max
                          age_fill=float(props["age_mean"]),  # model.py: a missing age is the training mean
                          sex_field="sex", site_field="location", layout=("sex", "site", "age", "age_unknown"))


def label_names() -> list[str]:
    """The 7 classes in output order (model_props.pkl's i_cl_map), named as cl_info.pkl names them."""
    props, classes = _model_props(), read_package_pickle(CLASSES_FILE)
    codes = [props["i_cl_map"][i] for i in range(len(props["i_cl_map"]))]
    return [f"{classes[code]['name']} ({code})" for code in codes]


def _check_head(archive: KerasArchive) -> None:
    cfg = archive.layer_configs
    for layer, expected in HEAD_SHAPE.items():
        found = cfg.get(layer, {})
        actual = found.get("rate") if isinstance(expected, float) else (found.get("units"), found.get("activation"))
        if actual != expected:
            raise asset_error(SKIN, f"{MODEL_FILE[0]}: layer {layer!r} is {actual}, the conversion expects {expected}")


def normalization_cfg(archive: KerasArchive) -> dict:
    """pretrained_cfg's mean/std from the Keras Normalization layer: (x - mean) / sqrt(var) on 0-255 input is
    (x/255 - mean/255) / (sqrt(var)/255) on ToTensor's 0-1 input."""
    cls, (mean, variance, _count) = archive.layers["normalization"]
    return {"mean": tuple(round(float(m) / 255, 9) for m in mean),
            "std": tuple(round(float(np.sqrt(v)) / 255, 9) for v in variance)}


def convert_skin_model(archive: KerasArchive | None = None) -> nn.Module:
    """sklesion's model as a zoo model in eval mode, in fine-tune mode: every one of its Xception's tensors differs
    from Keras's ImageNet weights, so the author trained the whole network on HAM10000 (from which start is not
    stated)."""
    archive = archive or read_keras_archive(asset_file(SKIN, *MODEL_FILE), SKIN)
    _check_head(archive)
    labels, size = label_names(), tuple(int(s) for s in _model_props()["img_shape"])
    with warnings.catch_warnings(), torch.random.fork_rng():  # every weight is replaced next
        warnings.simplefilter("ignore")
        model = create_model("xception", num_classes=len(labels), mode="scratch", head="metadata+mlp",
                             metadata_schema=skin_metadata_schema().to_dict(), metadata_hidden=[224, 64],
                             image_hidden=264, image_drop_rate=HEAD_SHAPE["dropout"], drop_rate=HEAD_SHAPE["dropout_1"],
                             mlp_hidden=32, fusion_batch_norm=True)
    backbone = {f"backbone.{k}": v for k, v in xception_backbone_state(archive, SKIN).items()}
    load_matching(model, {**backbone, **dense_head_state(archive, HEAD_LAYERS)}, what=f"{SKIN.pin} {MODEL_FILE[0]}")
    apply_mode(model, "fine-tune", pretrained=True)
    model.pretrained_cfg = {**model.pretrained_cfg, **normalization_cfg(archive), "input_size": (3, *size),
                            "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "squash"}
    model.label_names = labels
    # the source resized with tf.image.resize: zoo.eval_transform does the same for a zoo block that says so
    model.zoo_cfg.update(pretrained=True, weights=f"{SKIN.pin}: {MODEL_FILE[0]}", **{RESIZE_KEY: TF_BILINEAR})
    return model.eval()


def reference_image(source: str, name: str) -> Path:
    """One of REFERENCE_IMAGES: a scikit-image data file or an image of pneumonia-model-package."""
    if source == "skimage":
        import importlib.util  # noqa: PLC0415

        spec = importlib.util.find_spec("skimage")  # located, not imported
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / name if spec else None
        if path is None or not path.is_file():
            raise ZooError(f"scikit-image's data file {name} is missing; reinstall scikit-image (requirements.txt).")
        return path
    classifier = medical_classifier(source)
    path = package_folder(classifier.asset) / classifier.image_dir / name
    if not path.is_file():
        raise asset_error(classifier.asset, f"image {name} is missing")
    return path


def _model_input(model: nn.Module, path: Path) -> torch.Tensor:
    """(3, H, W): the image through the zoo's reader and the app's own transform (TensorFlow's resize, as the
    model's zoo block asks, and the source's normalisation)."""
    from .images import load_image, to_model_mode  # noqa: PLC0415

    return eval_transform(resolve_data_config(model))(to_model_mode(load_image(path).image, 3))


def skin_outputs(model: nn.Module) -> list[dict]:
    """The model's probabilities for every REFERENCE_IMAGES x REFERENCE_RECORDS pair, in the reference's order."""
    schema = model.metadata_schema
    records = [{schema.age_field: r["age"], schema.sex_field: r["sex"], schema.site_field: r["site"]}
               for r in REFERENCE_RECORDS]
    rows = []
    for source, name in REFERENCE_IMAGES:
        x = _model_input(model, reference_image(source, name))[None]  # (1, 3, H, W)
        with torch.inference_mode():  # one backbone pass per image, its features shared by every record
            maps = model.forward_features(x).expand(len(records), -1, -1, -1)
            probs = model.forward_head(maps, schema.encode(records)).softmax(-1).double().numpy()
        rows += [{"image": name, "metadata": r, "probs": p} for r, p in zip(REFERENCE_RECORDS, probs)]
    return rows


def compare_with_skin_reference(rows: list[dict], reference: Path = SKIN_REFERENCE) -> dict:
    """Max |probability difference| against Keras's recorded outputs; a ZooError past PARITY_TOLERANCE."""
    try:
        record = json.loads(Path(reference).read_text())
        recorded = {(r["image"], json.dumps(r["metadata"], sort_keys=True)): r["probs"] for r in record["outputs"]}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ZooError(f"{reference} is not sklesion's Keras reference record ({type(e).__name__}: {e}); make it "
                       "with scripts/skin_reference.py.") from None
    keys = [(r["image"], json.dumps(r["metadata"], sort_keys=True)) for r in rows]
    missing = [k for k in keys if k not in recorded]
    if missing:
        raise ZooError(f"{reference} has no Keras outputs for {missing[:3]}; record them with scripts/skin_reference.py.")
    delta = max(float(np.abs(r["probs"] - np.asarray(recorded[k])).max()) for r, k in zip(rows, keys))
    if not delta < PARITY_TOLERANCE:
        raise ZooError(f"the converted skin model differs from the recorded Keras outputs by up to {delta:.2e} in "
                       f"probability (tolerance {PARITY_TOLERANCE}); the conversion is wrong, nothing was saved.")
    return {"reference": Path(reference).name, "produced_by": record.get("produced_by"), "date": record.get("date"),
            "max_abs_prob_diff": delta, "n": len(rows), "images": len(REFERENCE_IMAGES),
            "metadata_records": len(REFERENCE_RECORDS), "tolerance": PARITY_TOLERANCE}


def author_report() -> dict:
    """The author's own test report (cr_test.pkl: scikit-learn's classification_report as a dict) in the zoo's
    terms: accuracy, macro F1, per-class precision/recall/F1/support, n."""
    report = read_package_pickle(REPORT_FILE)
    try:
        per_class = {code: {"precision": float(report["precision"][code]), "recall": float(report["recall"][code]),
                            "f1": float(report["f1-score"][code]), "support": int(report["support"][code])}
                     for code in _model_props()["i_cl_map"].values()}
        return {"accuracy": float(report["f1-score"]["accuracy"]), "f1_macro": float(report["f1-score"]["macro avg"]),
                "n": int(report["support"]["macro avg"]), "per_class": per_class}
    except (KeyError, TypeError, ValueError) as e:
        raise asset_error(SKIN, f"{REPORT_FILE[0]} is not a classification report ({type(e).__name__}: {e})") from None


def _trust_skipped() -> dict[str, dict[str, str]]:
    """config.json's ``ood``, ``calibration`` and ``conformal`` for a model imported without a single image of its task."""
    why = "sklesion ships no images and no dermoscopic image installs offline"
    return {"ood": {"skipped": f"no OOD check: {why}, so there are no in-distribution features to fit it on"},
            "calibration": {"skipped": f"not calibrated: {why}; the probabilities are the raw softmax"},
            "conformal": {"skipped": f"no prediction sets: {why} to calibrate a 90% set on"}}


def skin_facts(report: dict) -> dict:
    """The model's facts (the shape every imported model's config.json states): only what is known."""
    return {
        "intended_use": "Research and teaching: a 7-class guess for a dermoscopic image of a pigmented skin lesion, "
                        "with the patient's age, sex and body site when known. Not a diagnosis.",
        "training_data": TRAINING_DATA + " (the author's split; which images were held out is not published)",
        "training_data_license": TRAINING_LICENSE,
        "evaluation": [{"data": "HAM10000 test split of the package's author", "n": report["n"], "metric": metric,
                        "value": report[key], "ci95": None, "by": "the model's author"}
                       for metric, key in (("accuracy", "accuracy"), ("macro F1", "f1_macro"))],
        "not_tested_on": ["any image that is not a dermoscopic image of a skin lesion (clinical photographs, "
                          "histology, other body imaging)", "data from hospitals, devices or populations outside "
                          "HAM10000 (by us: no skin-lesion image is available offline)", "lesion types outside the 7 "
                          "HAM10000 classes"],
        "failure_modes": ["answers one of the 7 classes for any image, with no check that it is a skin lesion (no "
                          "OOD check)", "melanoma is its weakest class in the author's report (F1 "
                          f"{report['per_class']['mel']['f1']:.3f}, recall {report['per_class']['mel']['recall']:.3f})",
                          "probabilities are not calibrated"],
    }


def _card_sections(sha: str, keras_version: str, parity: dict, report: dict, labels: list[str]) -> dict[str, str]:
    schema = skin_metadata_schema()
    rows = [f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
            for label, m in zip(labels, report["per_class"].values())]
    skipped = _trust_skipped()
    return {
        "Provenance": "\n".join([
            f"- Converted from `{MODEL_FILE[0]}` in the PyPI package `{SKIN.pin}` (saved by Keras {keras_version}), "
            f"file sha256 `{sha}`; no TensorFlow or Keras at run time (zipfile + h5py).",
            "- Source architecture: raw 0-255 RGB 254x254 -> Normalization -> Keras Xception (average-pooled; every "
            "tensor differs from Keras's ImageNet Xception: trained on HAM10000 by the author, from a start the "
            "package does not state) -> Dropout(0.3) -> Dense(264, relu) -> BatchNorm; metadata (10) -> Dense(224, relu) -> "
            "BatchNorm -> Dense(64, relu) -> BatchNorm; concatenated -> Dropout(0.2) -> Dense(32, relu) -> BatchNorm "
            "-> Dense(7, softmax). Here: `xception` (tf_xception, TF-\"same\" max-pools) with the zoo's "
            "`metadata+mlp` head, tensor for tensor.",
            "- Preprocessing as the source's model.py: `tf.image.resize(img, (254, 254))` (bilinear, half-pixel "
            "centres, no antialiasing, float), reproduced with torch `F.interpolate(mode='bilinear', "
            "align_corners=False, antialias=False)` (config.json's zoo block: `\"resize\": \"tf-bilinear\"`, which "
            "zoo.eval_transform follows; stock timm's transform would use PIL's bilinear instead, which rounds to 8 "
            "bits and smooths when shrinking); the Normalization layer is pretrained_cfg's mean and std (mean/255, "
            "sqrt(variance)/255).",
            f"- Metadata: sex {list(schema.sex)} + unknown, body site {list(schema.site)} + unknown, age / "
            f"{schema.age_std:g}, an age-missing flag; a missing age counts as {schema.age_fill:.2f} years (the "
            "training mean), as the source does.",
            f"- Parity, checked at every import: on {parity['images']} real images x {parity['metadata_records']} "
            f"metadata records the probabilities differ from Keras's own ({parity['produced_by']}, recorded "
            f"{parity['date']}) by at most {parity['max_abs_prob_diff']:.1e} (tolerance {parity['tolerance']:g}). "
            "None of those images is a skin lesion: they test the conversion, not the model."]),
        "Licences": "\n".join(["- sklesion's code: MIT.", f"- Training data: HAM10000, {TRAINING_LICENSE}.",
                               f"- Weights: **non-commercial** (`license: cc-by-nc-4.0`). {LICENSE_NOTE}"]),
        "Evaluation by the model's author (not by us)": "\n".join([
            f"From the package's `{REPORT_FILE[0]}`: the author's test split of HAM10000, n = {report['n']}; "
            f"accuracy {report['accuracy']:.3f}, macro F1 {report['f1_macro']:.3f}. No intervals or confusion "
            "matrix are published; we could not re-run it.", "",
            "| class | precision | recall | F1 | n |", "|---|---|---|---|---|", *rows]),
        "Our evaluation": "None: no labelled dermoscopic image is available offline (none ships with the package "
                          "or any installable data package), so we have not measured this model's accuracy.",
        "Calibration and out-of-distribution check": "\n".join(f"- {block['skipped']}." for block in skipped.values()),
    }


def import_skin_model(out: str | Path, reference: str | Path = SKIN_REFERENCE) -> Path:
    """Convert sklesion's model into the run folder `out` after checking it against Keras's recorded outputs in
    `reference` (nothing is saved past PARITY_TOLERANCE). Returns the folder."""
    keras_file = asset_file(SKIN, *MODEL_FILE)
    archive = read_keras_archive(keras_file, SKIN)
    model = convert_skin_model(archive)
    parity = compare_with_skin_reference(skin_outputs(model), Path(reference))
    report, labels = author_report(), list(model.label_names)
    provenance = {"package": SKIN.package, "version": SKIN.version, "file": MODEL_FILE[0],
                  "sha256": file_sha256(keras_file), "keras_version": archive.keras_version}
    author = {"data": "HAM10000, the package author's test split", "n": report["n"], "by": "the model's author",
              "accuracy": report["accuracy"], "f1_macro": report["f1_macro"], "per_class": report["per_class"]}
    extra = {"medical": True, "source": provenance, "license": "cc-by-nc-4.0", "license_note": LICENSE_NOTE,
             "training_data_license": TRAINING_LICENSE, "author_evaluation": author,
             "evaluation": {"skipped": "no labelled dermoscopic images offline: not evaluated by us"},
             "source_parity": parity, "facts": skin_facts(report), **_trust_skipped()}
    folder = save_pretrained(model, out, label_names=labels, dataset="HAM10000 (skin lesions, dermoscopy)",
                             card_sections=_card_sections(provenance["sha256"], archive.keras_version, parity,
                                                          report, labels), extra_config=extra)
    total, trainable = count_params(model)
    metrics = {"test": {"skipped": extra["evaluation"]["skipped"]}, "author_evaluation": author,
               "params": {"total": total, "trainable": trainable}, "source": provenance, "source_parity": parity,
               **_trust_skipped()}
    (Path(folder) / METRICS_NAME).write_text(json.dumps(metrics, indent=1) + "\n")
    return Path(folder)
