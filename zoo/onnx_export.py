"""ONNX export of zoo models and run folders, verified against PyTorch before anything is written.

    zoo.export_onnx("weights/RUN")      # writes weights/RUN/model.onnx and weights/RUN/onnx.json
    python -m zoo export weights/RUN

The file: opset 17 from PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``),
a dynamic batch axis and the run's fixed input size (config.json ``pretrained_cfg.input_size``); its inputs and
outputs are `zoo.onnx_io`'s. A model that fails verification (`zoo.onnx_verify`) is not written: the export goes
to a temporary file that is renamed over ``model.onnx`` only after it verified.

The figures go to a small ``onnx.json`` beside the file (`zoo.onnx_info`), not into config.json: config.json is
timm's description of the weights, written once with them and read by stock timm, and an export must not rewrite
it. The zoo's own verification record goes to its cache, and the model card gets a section on running the file
with onnxruntime alone (`zoo.onnx_card`). Reading a file is `zoo.onnx_file`, int8 quantization `zoo.onnx_int8`.

This module is also the ONNX face of the zoo: every public name of those modules is importable from here.
"""
from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._errors import ZooError
from ._hub import CARD_NAME, WEIGHTS_NAME, load_pretrained
from .assets import file_sha256
from .fileio import atomic_write
from .onnx_card import onnx_card_section, update_card_section
from .onnx_file import STANDARD_DOMAINS, check_onnx_file
from .onnx_info import (INFO_FORMAT, ONNX_INFO_VERSION, OnnxExport, info_version_problem, read_onnx_info,
                        remember_verification, verification_record, write_info)
from .onnx_int8 import quantize_int8
from .onnx_io import (DEFAULT_THREADS, FEATURE_MAP_NAME, FEATURES_NAME, INPUT_NAME, METADATA_NAME, OPSET, OUTPUT_NAME,
                      OnnxIO,
                      has_features_output, onnx_session, require_onnx_runtime)
from .onnx_verify import (INT8_MIN_AGREEMENT, INT8_TIE, TOLERANCE, reference_inputs, top1_agreement, verify_int8_onnx,
                          verify_onnx)
from .run_layout import ONNX_NAME
from .trust import features_and_logits

__all__ = [
    "INPUT_NAME", "METADATA_NAME", "OUTPUT_NAME", "FEATURES_NAME", "FEATURE_MAP_NAME", "OPSET",
    "TOLERANCE", "DEFAULT_THREADS", "INT8_MIN_AGREEMENT", "OnnxIO", "OnnxExport", "export_onnx", "verify_onnx",
    "check_onnx_file", "onnx_session", "has_features_output", "reference_inputs", "read_onnx_info", "onnx_card_section",
    "quantize_int8", "require_onnx_runtime", "top1_agreement", "INT8_TIE", "verify_int8_onnx",
    "verification_record", "remember_verification", "INFO_FORMAT", "STANDARD_DOMAINS", "ONNX_INFO_VERSION",
    "info_version_problem",
]

_EXPORT_LOCK = threading.Lock()  # one export at a time: the pooling patch below is process-wide


def _pool_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in): row i averages the window adaptive pooling uses for output i."""
    matrix = torch.zeros(size_out, size_in)
    for i in range(size_out):
        start, end = (i * size_in) // size_out, -((-(i + 1) * size_in) // size_out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


@contextmanager
def _exportable_adaptive_pooling():
    """Let the TorchScript exporter handle adaptive average pooling at any static input size.

    Its symbolic refuses output sizes that do not divide the input (a VGG's pre-logits at inputs under
    224 px) and inputs whose size it lost track of (AlexNet's pooling after local response norm). The
    spatial size is fixed for an export (only the batch is dynamic), so while tracing, such a pooling is
    written as the separable average it is: P_h @ x @ P_w^T. Outside tracing (other threads) it is
    PyTorch's own function.
    """
    original = F.adaptive_avg_pool2d

    def pooled(x, output_size):
        if not torch.jit.is_tracing():
            return original(x, output_size)
        out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
        in_h, in_w = int(x.shape[-2]), int(x.shape[-1])
        out_h, out_w = out_h or in_h, out_w or in_w  # None keeps that side
        if (out_h, out_w) == (1, 1):
            return original(x, output_size)  # GlobalAveragePool
        if (out_h, out_w) == (in_h, in_w):
            return x
        rows, cols = _pool_matrix(in_h, out_h).to(x), _pool_matrix(in_w, out_w).to(x)
        return torch.matmul(torch.matmul(rows, x), cols.t())  # (B, C, H, W) -> (B, C, h, w)

    F.adaptive_avg_pool2d = pooled
    try:
        yield
    finally:
        F.adaptive_avg_pool2d = original


class _LogitsAndFeatures(nn.Module):
    """The graph exported: (logits, features[, feature_map]) from one backbone pass, exactly as the app computes them
    (zoo.trust.features_and_logits: the features are the map averaged over its positions)."""

    def __init__(self, model: nn.Module, with_map: bool):
        super().__init__()
        self.model, self.with_map = model, with_map

    def forward(self, x: torch.Tensor, metadata: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        if not self.with_map:
            features, logits = features_and_logits(self.model, x, metadata)  # (B, D), (B, K)
            return logits, features
        maps = self.model.forward_features(x)  # (B, C, H, W) -> (B, D, h, w)
        features = maps.mean(dim=(2, 3))  # (B, D, h, w) -> (B, D)
        logits = self.model.forward_head(maps) if metadata is None else self.model.forward_head(maps, metadata)
        return logits, features, maps


def _map_shape(model: nn.Module, io_spec: OnnxIO) -> tuple[int, int, int] | None:
    """(D, h, w) of forward_features' map per image, None where it is not 2-D (tokens, a vector): only a 2-D map
    is exported as `feature_map`."""
    with torch.no_grad():
        maps = model.forward_features(torch.zeros(1, *io_spec.input_size))
    return tuple(int(v) for v in maps.shape[1:]) if maps.ndim == 4 else None


def _export_bytes(model: nn.Module, io_spec: OnnxIO) -> bytes:
    """The model as ONNX (opset 17, dynamic batch): logits, features and, where it has one, the feature map."""
    example = (torch.zeros(2, *io_spec.input_size),)  # batch 2: nothing may specialise on a batch of 1
    names = [INPUT_NAME]
    if io_spec.metadata_features is not None:
        example += (torch.zeros(2, io_spec.metadata_features),)
        names.append(METADATA_NAME)
    with_map = _map_shape(model, io_spec) is not None
    outputs = [OUTPUT_NAME, FEATURES_NAME] + ([FEATURE_MAP_NAME] if with_map else [])
    buffer = io.BytesIO()
    with _EXPORT_LOCK, _exportable_adaptive_pooling(), warnings.catch_warnings():
        # the input-size guard's Python checks are constants in the trace (the size is fixed), as intended
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")  # strided slices stay as ops
        # the wrapper takes the model's mode: the exporter restores the wrapper's mode on all its submodules
        wrapper = _LogitsAndFeatures(model, with_map).train(model.training)
        torch.onnx.export(wrapper, example, buffer, dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=outputs, do_constant_folding=True,
                          dynamic_axes={name: {0: "batch"} for name in [*names, *outputs]})
    return buffer.getvalue()


def export_onnx(model_or_folder: nn.Module | str | os.PathLike, path: str | os.PathLike | None = None, *,
                inputs: torch.Tensor | None = None, metadata: torch.Tensor | None = None,
                inputs_source: str | None = None, weights: str | os.PathLike | None = None,
                threads: int = DEFAULT_THREADS, update_card: bool = True) -> OnnxExport:
    """Export a model (or a run folder's) to ONNX, verify it with ONNX Runtime, and only then write it.

    `path` defaults to RUN/model.onnx for a run folder. `inputs` (B, C, H, W) (and `metadata` (B, F) for a
    metadata head) are what the verification runs on, e.g. the run's preprocessed test images, named by
    `inputs_source`; without them, `reference_inputs`. `weights` names the model.safetensors the model was
    loaded from (default: the run folder's, or the one beside `path` if it holds this model's tensors), whose
    sha256 the record keeps. Writes `path` and its entry in onnx.json beside it, the verification record in the
    zoo's cache (what loaders trust: remember_verification), and an ONNX section in the README.md there
    (`update_card`). A model that does not verify raises a ZooError and nothing is written.
    """
    require_onnx_runtime()
    model, folder, path = _model_and_target(model_or_folder, path)
    io_spec = OnnxIO.from_model(model)
    if inputs is None:
        inputs, metadata = reference_inputs(model)
        inputs_source = "reference inputs (example images shipped with installed packages, and random ones)"
    data, figures, export_s = _export_and_verify(model, io_spec, path, inputs, metadata, threads)
    known = weights is not None or folder is not None
    weights = Path(weights) if weights is not None else (folder or path.parent) / WEIGHTS_NAME
    weights_sha256 = (file_sha256(weights) if weights.is_file() and (known or _same_weights(model, weights))
                      else None)
    info = {
        "format": INFO_FORMAT, "format_version": ONNX_INFO_VERSION,
        "precision": "fp32", "sha256": hashlib.sha256(data).hexdigest(),
        # the weights it was verified against: a stale or swapped file is refused by the loader
        "weights_sha256": weights_sha256,
        "opset": OPSET, "inputs": {k: list(v) for k, v in io_spec.expected().items()},
        "outputs": _output_shapes(model, io_spec),
        "verification": {**figures, "inputs_source": inputs_source or "inputs given by the caller"},
        "export_s": round(export_s, 2),
    }
    with atomic_write(path) as f:
        f.write(data)
    try:
        write_info(path.parent, path.name, info)
    except BaseException:  # e.g. no room left for onnx.json: no model.onnx without its record
        path.unlink(missing_ok=True)
        raise
    remember_verification(info)
    if update_card and (path.parent / CARD_NAME).is_file():
        update_card_section(path.parent / CARD_NAME, onnx_card_section(io_spec, info))
    return OnnxExport(path=path, info=info)


def _output_shapes(model: nn.Module, io_spec: OnnxIO) -> dict[str, list]:
    """Each output's shape as onnx.json records it ("batch" for the dynamic axis)."""
    shapes = {OUTPUT_NAME: ["batch", io_spec.num_classes], FEATURES_NAME: ["batch", io_spec.num_features]}
    was_training = model.training
    map_shape = _map_shape(model.eval(), io_spec)
    model.train(was_training)
    if map_shape is not None:
        shapes[FEATURE_MAP_NAME] = ["batch", *map_shape]
    return shapes


def _model_and_target(model_or_folder: nn.Module | str | os.PathLike,
                      path: str | os.PathLike | None) -> tuple[nn.Module, Path | None, Path]:
    """(the model, its run folder or None, the file to write), checked to be exportable there."""
    folder = None
    if isinstance(model_or_folder, nn.Module):
        model = model_or_folder
    else:
        folder = Path(model_or_folder)
        if not folder.is_dir():
            raise ZooError(f"{folder} is not a run folder; pass a folder holding {WEIGHTS_NAME} and config.json "
                           "or a model.")
        model = load_pretrained(folder)
    if path is None:
        if folder is None:
            raise ZooError("export_onnx(model) needs a path to write, e.g. export_onnx(model, 'model.onnx').")
        path = folder / ONNX_NAME
    path = Path(path)
    if not path.parent.is_dir():
        raise ZooError(f"cannot write {path}: the folder {path.parent} does not exist.")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ZooError("export_onnx needs the model on the CPU; call model.cpu() first.")
    missing = [a for a in ("forward_features", "forward_head", "num_features") if not hasattr(model, a)]
    if missing:
        raise ZooError(f"export_onnx needs a model with timm's interface (forward_features, forward_head, "
                       f"num_features) to export its image features too; {type(model).__name__} lacks "
                       f"{', '.join(missing)}. Create it with zoo.create_model or timm.create_model.")
    return model, folder, path


def _export_and_verify(model: nn.Module, io_spec: OnnxIO, path: Path, inputs: torch.Tensor,
                       metadata: torch.Tensor | None, threads: int) -> tuple[bytes, dict[str, Any], float]:
    """(the ONNX bytes, verify_onnx's figures, seconds the export took), in eval mode; the model's mode is kept."""
    was_training = model.training
    model.eval()
    try:
        start = time.perf_counter()
        try:
            data = _export_bytes(model, io_spec)
        except ZooError:
            raise
        except Exception as e:  # the exporter's own errors (an operator it cannot write, ...)
            raise ZooError(f"{getattr(model, 'zoo_cfg', {}).get('architecture', type(model).__name__)} cannot be "
                           f"exported to ONNX ({type(e).__name__}: {str(e).splitlines()[0][:300]}); {path} was not "
                           "written.") from None
        export_s = time.perf_counter() - start
        figures = verify_onnx(model, data, inputs, metadata, threads=threads)
    except ZooError as e:
        raise ZooError(f"{e} {path} was not written (nothing changed); keep using the PyTorch weights, and report "
                       f"it with the architecture name ({getattr(model, 'zoo_cfg', {}).get('architecture')}).") from None
    finally:
        model.train(was_training)
    return data, figures, export_s


def _same_weights(model: nn.Module, weights: Path) -> bool:
    """Whether `weights` (a model.safetensors beside the export) holds exactly this model's tensors."""
    if not weights.is_file():
        return False
    from ._hub import read_safetensors  # noqa: PLC0415

    try:
        saved = read_safetensors(weights)
    except ZooError:
        return False
    state = model.state_dict()
    return saved.keys() == state.keys() and all(torch.equal(saved[k], state[k].detach().cpu()) for k in state)
