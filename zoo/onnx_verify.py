"""Whether an ONNX file reproduces the PyTorch model: the figures, or a ZooError saying how it differs.

ONNX Runtime and PyTorch run on the same inputs (the run's test images when the caller passes them, else real
example images shipped with installed packages plus seeded random ones): the largest |difference| of a logit must
be <= TOLERANCE (times the largest |logit| when that exceeds 1: float32 precision is relative) and the top-1 class
identical; the features, and the feature map where the file gives one, are held to the same rule (their cosine
with PyTorch's is recorded as a sanity figure). Files exported before ``features`` existed (``logits`` only) are
verified on their logits. A file with a feature map also gets its Grad-CAM record (zoo.onnx_cam.cam_record: whether
the head's gradient has a closed form, checked against autograd), figures["cam"]. An int8 file is held
to a top-1 agreement instead (INT8_MIN_AGREEMENT).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._errors import ZooError
from .archs.metadata import MetadataSchema
from .onnx_cam import cam_record
from .onnx_io import (DEFAULT_THREADS, FEATURE_MAP_NAME, FEATURES_NAME, OUTPUT_NAME, SESSION_BATCH,
                      has_features_output, has_output, onnx_session, require_onnx_runtime, run_session)
from .trust import features_and_logits

__all__ = ["TOLERANCE", "INT8_MIN_AGREEMENT", "INT8_TIE", "top1_agreement", "verify_onnx", "verify_int8_onnx",
           "reference_inputs"]

TOLERANCE = 1e-4  # max |Δ| of a logit or feature between ONNX Runtime and PyTorch (relative above |value| 1)
INT8_MIN_AGREEMENT = 0.99  # top-1 agreement with fp32 an int8 model must keep
# int8 against PyTorch on first use: where PyTorch's top two logits are closer than this share of the largest
# |logit|, either class counts as the same answer (dynamic int8 moves logits by about 1% of their scale)
INT8_TIE = 0.05


def _run_torch(model: nn.Module, x: torch.Tensor, metadata: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
    """(logits, features) as PyTorch computes them: logits from the model's own forward (what stock timm
    gives), features from zoo.trust.features_and_logits (what the OOD check reads)."""
    logits, features = [], []
    with torch.inference_mode():
        for i in range(0, len(x), SESSION_BATCH):
            batch, meta = x[i:i + SESSION_BATCH], None if metadata is None else metadata[i:i + SESSION_BATCH]
            logits.append((model(batch) if meta is None else model(batch, meta)).float())
            features.append(features_and_logits(model, batch, meta)[0].float())
    return torch.cat(logits).numpy(), torch.cat(features).numpy()


def _max_abs_diff(got: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - reference).max()) if np.isfinite(got).all() else float("inf")


def _feature_figures(got: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """max |Δ| under the logits' tolerance rule, and the lowest cosine between an ONNX and a PyTorch row."""
    scale = max(1.0, float(np.abs(reference).max()))
    a, b = got.astype(np.float64), reference.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.where(norms > 0, (a * b).sum(1) / np.where(norms > 0, norms, 1.0), 1.0)  # zero rows: equal
    return {"max_abs_diff": _max_abs_diff(got, reference), "max_abs_value": float(np.abs(reference).max()),
            "tolerance": TOLERANCE * scale, "min_cosine": float(cosine.min()) if np.isfinite(a).all() else float("nan")}


def top1_agreement(reference: np.ndarray, other: np.ndarray, tie: float = 0.0) -> float:
    """Fraction of rows where `other`'s top class is the reference's (or ties with it within `tie`)."""
    ref_top, other_top = reference.argmax(1), other.argmax(1)
    rows = np.arange(len(reference))
    same = (ref_top == other_top) | (reference[rows, ref_top] - reference[rows, other_top] <= tie)
    return float(same.mean())


def verify_onnx(model: nn.Module, onnx_model: bytes | str | os.PathLike, inputs: torch.Tensor,
                metadata: torch.Tensor | None = None, threads: int = DEFAULT_THREADS) -> dict[str, Any]:
    """Compare ONNX Runtime with PyTorch on `inputs`; the figures, or a ZooError when they differ.

    Passes when max |Δ logit| <= TOLERANCE x max(1, max |logit|), the top-1 class is the same on every
    input (a tie within that tolerance counts as the same) and, when the file has a `features` output,
    max |Δ feature| <= TOLERANCE x max(1, max |feature|). figures["features"] is None for a logits-only file.
    """
    _, ort = require_onnx_runtime()
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4 or len(inputs) == 0:
        raise ZooError(f"verification inputs must be a non-empty (batch, C, H, W) tensor, got "
                       f"{type(inputs).__name__} {tuple(getattr(inputs, 'shape', ()))}.")
    inputs = inputs.detach().float().cpu()
    metadata = None if metadata is None else metadata.detach().float().cpu()
    reference, reference_features = _run_torch(model, inputs, metadata)
    if not (np.isfinite(reference).all() and np.isfinite(reference_features).all()):
        raise ZooError("PyTorch's outputs on the verification inputs are NaN or infinite, so the ONNX file cannot be "
                       "verified against them; the weights are probably damaged.")
    session = onnx_session(onnx_model, threads)
    with_features = has_features_output(session)
    got, *got_features = run_session(session, inputs, metadata,
                                      (OUTPUT_NAME, FEATURES_NAME) if with_features else (OUTPUT_NAME,))
    if got.shape != reference.shape:
        raise ZooError(f"the ONNX model's output has shape {got.shape}, PyTorch's {reference.shape}.")
    if with_features and got_features[0].shape != reference_features.shape:
        raise ZooError(f"the ONNX model's {FEATURES_NAME!r} output has shape {got_features[0].shape}, PyTorch's "
                       f"pooled features {reference_features.shape}.")
    scale = max(1.0, float(np.abs(reference).max()))
    diff = _max_abs_diff(got, reference)
    tolerance = TOLERANCE * scale
    agreement = top1_agreement(reference, got, tie=tolerance)
    features = _feature_figures(got_features[0], reference_features) if with_features else None
    figures = {"inputs": len(inputs), "max_abs_diff": diff, "max_abs_logit": float(np.abs(reference).max()),
               "tolerance": tolerance, "top1_agreement": agreement, "features": features,
               "onnxruntime": ort.__version__, "torch": torch.__version__}
    if diff > tolerance or agreement < 1.0:
        raise ZooError(f"the ONNX model does not reproduce PyTorch: max |Δ logit| {diff:.3g} (allowed {tolerance:.3g}), "
                       f"top-1 identical on {agreement:.1%} of {len(inputs)} inputs.")
    if features is not None and not features["max_abs_diff"] <= features["tolerance"]:
        raise ZooError(f"the ONNX model does not reproduce PyTorch's image features: max |Δ feature| "
                       f"{features['max_abs_diff']:.3g} (allowed {features['tolerance']:.3g}, lowest cosine "
                       f"{features['min_cosine']:.6f}) on {len(inputs)} inputs.")
    if has_output(session, FEATURE_MAP_NAME):
        figures.update(_verify_map(model, onnx_model, session, inputs, metadata, got_features[0]))
    return figures


def _verify_map(model: nn.Module, onnx_model: bytes | str | os.PathLike, session, inputs: torch.Tensor,
                metadata: torch.Tensor | None, onnx_features: np.ndarray) -> dict[str, Any]:
    """{"feature_map": figures, "cam": zoo.onnx_cam.cam_record}: the map held to the features' rule, then whether
    Grad-CAM has a closed form on it; a ZooError when the map differs from PyTorch's."""
    import onnx  # noqa: PLC0415

    (got,) = run_session(session, inputs, metadata, (FEATURE_MAP_NAME,))
    with torch.inference_mode():
        reference = torch.cat([model.forward_features(inputs[i:i + SESSION_BATCH]).float()
                               for i in range(0, len(inputs), SESSION_BATCH)]).numpy()
    if got.shape != reference.shape:
        raise ZooError(f"the ONNX model's {FEATURE_MAP_NAME!r} output has shape {got.shape}, PyTorch's "
                       f"forward_features map {reference.shape}.")
    figures = _feature_figures(got.reshape(len(got), -1), reference.reshape(len(reference), -1))
    if not figures["max_abs_diff"] <= figures["tolerance"]:
        raise ZooError(f"the ONNX model does not reproduce PyTorch's feature map: max |Δ| "
                       f"{figures['max_abs_diff']:.3g} "
                       f"(allowed {figures['tolerance']:.3g}) on {len(inputs)} inputs.")
    proto = onnx.load_from_string(onnx_model if isinstance(onnx_model, bytes) else Path(onnx_model).read_bytes())
    input_size = tuple(int(v) for v in inputs.shape[1:])
    return {"feature_map": figures, "cam": cam_record(model, proto, inputs, metadata, onnx_features, input_size)}


def verify_int8_onnx(model: nn.Module, onnx_model: bytes, inputs: torch.Tensor,
                     metadata: torch.Tensor | None = None, threads: int = DEFAULT_THREADS) -> dict[str, Any]:
    """Compare an int8 file with the PyTorch model on `inputs`: its figures, or a ZooError when its top-1 class
    agrees on fewer than INT8_MIN_AGREEMENT of them (where PyTorch's own top two are within INT8_TIE of the
    largest |logit|, either counts) or its outputs are not finite or of PyTorch's shape."""
    inputs = inputs.detach().float().cpu()
    metadata = None if metadata is None else metadata.detach().float().cpu()
    reference, _ = _run_torch(model, inputs, metadata)
    (got,) = run_session(onnx_session(onnx_model, threads), inputs, metadata)
    if got.shape != reference.shape or not np.isfinite(got).all():
        raise ZooError(f"the int8 ONNX model's logits (shape {got.shape}) are not finite values of PyTorch's shape "
                       f"{reference.shape}.")
    scale = max(1.0, float(np.abs(reference).max()))
    agreement = top1_agreement(reference, got, tie=INT8_TIE * scale)
    figures = {"inputs": len(inputs), "top1_agreement_with_pytorch": agreement, "min_agreement": INT8_MIN_AGREEMENT,
               "max_abs_diff_vs_pytorch": _max_abs_diff(got, reference), "tie": INT8_TIE * scale}
    if agreement < INT8_MIN_AGREEMENT:
        raise ZooError(f"the int8 ONNX model's top-1 class agrees with PyTorch's on {agreement:.1%} of "
                       f"{len(inputs)} inputs, under the {INT8_MIN_AGREEMENT:.0%} required.")
    return figures


def reference_inputs(model: nn.Module, num_random: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inputs to verify an export on when the run's own images are not at hand.

    Real images shipped with installed packages (pydicom's CT_small.dcm and MR_small.dcm, scikit-image's
    retina.jpg, where installed) through the model's own eval transform, plus `num_random` seeded
    standard-normal inputs; for a metadata head, metadata records from unknown to fully known.
    """
    from timm.data import resolve_model_data_config  # noqa: PLC0415

    from .eval_transform import eval_transform  # noqa: PLC0415

    from .images import load_image, to_model_mode  # noqa: PLC0415

    data_config = resolve_model_data_config(model)
    transform = eval_transform(data_config)
    channels = data_config["input_size"][0]
    images = []
    for path in _example_images():
        try:
            images.append(transform(to_model_mode(load_image(path).image, channels)))
        except (ZooError, OSError):
            continue  # a missing or unreadable example leaves the random inputs
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_random, *data_config["input_size"], generator=generator)
    x = torch.cat([torch.stack(images), x]) if images else x  # (N, C, H, W)
    schema = getattr(model, "metadata_schema", None)
    if schema is None:
        return x, None
    schema = MetadataSchema.from_dict(schema)
    records = [{}] + [{schema.age_field: 20 + 7 * i, schema.sex_field: schema.sex[i % len(schema.sex)],
                       schema.site_field: schema.site[i % len(schema.site)]} for i in range(len(x) - 1)]
    return x, schema.encode(records)  # (N, F)


def _example_images() -> list[Path]:
    paths = []
    try:
        from pydicom.data import get_testdata_file  # noqa: PLC0415
        paths += [Path(p) for p in (get_testdata_file(n, download=False) for n in ("CT_small.dcm", "MR_small.dcm")) if p]
    except (ImportError, OSError, ValueError):
        pass
    spec = importlib.util.find_spec("skimage")  # located, not imported
    if spec is not None and spec.origin:
        retina = Path(spec.origin).parent / "data" / "retina.jpg"
        if retina.is_file():
            paths.append(retina)
    return paths
