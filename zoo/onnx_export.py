"""ONNX export of zoo models and run folders, verified against PyTorch before anything is written.

    zoo.export_onnx("weights/RUN")      # writes weights/RUN/model.onnx and weights/RUN/onnx.json
    python -m zoo export weights/RUN

The file: opset 17 from PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``),
a dynamic batch axis and the run's fixed input size (config.json ``pretrained_cfg.input_size``).

    input  ``pixel_values``  float32 (batch, C, H, W), the image normalised as config.json's pretrained_cfg says
    input  ``metadata``      float32 (batch, F), metadata-head models only (``MetadataSchema.encode``)
    output ``logits``        float32 (batch, num_classes)
    output ``features``      float32 (batch, D), the pooled backbone features (zoo.trust.features_and_logits):
                             what the out-of-distribution check compares with the run's ood.safetensors

Verification runs ONNX Runtime and PyTorch on the same inputs (the run's test images when the caller
passes them, else real example images shipped with installed packages plus seeded random ones): the
largest |difference| of a logit must be <= 1e-4 (times the largest |logit| when that exceeds 1: float32
precision is relative) and the top-1 class identical; the features are held to the same rule (their cosine
with PyTorch's is recorded as a sanity figure). Files exported before ``features`` existed (``logits``
only) still load and are still verified on their logits; they give no OOD check until re-exported. A model that fails is not written: the export
goes to a temporary file that is renamed over ``model.onnx`` only after it verified.

The figure goes to a small ``onnx.json`` beside the file, not into config.json: config.json is timm's
description of the weights, written once with them and read by stock timm, and an export must not
rewrite it; onnx.json names the ONNX file's and the weights' sha256 and the figures, one entry per ONNX
file (fp32 and int8), for readers of a published run. A loader never takes it on the folder's word
(anyone who can change model.onnx can rewrite onnx.json's hashes too): it trusts only the verification
records the zoo wrote itself, in its own cache (``remember_verification``, keyed by the sha256 of both the
ONNX file and the weights), which an export or quantization on this machine writes. The model card gets a
section on running the file with onnxruntime alone.

Reading an ONNX file (run folder or Hub): it is parsed and checked (onnx.checker; tensors inline, never
external files; only the standard operator domains; inputs and outputs that match config.json) before
ONNX Runtime sees it, and no custom-op library is ever registered, so a file cannot bring code to run.
onnx and onnxruntime are optional (``pip install 'medtl-zoo[onnx]'``); they are imported when used.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import re
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _hub  # _hub.CACHE_DIR is read at call time: tests and ZOO_CACHE point it elsewhere
from ._errors import ZooError
from ._hub import CARD_NAME, WEIGHTS_NAME, load_pretrained
from .archs.metadata import MetadataSchema
from .assets import file_sha256
from .fileio import check_file_size
from .run_layout import MAX_FILE_BYTES, ONNX_INFO_NAME, ONNX_INT8_NAME, ONNX_NAME, OOD_NAME
from .trust import features_and_logits

__all__ = [
    "INPUT_NAME", "METADATA_NAME", "OUTPUT_NAME", "FEATURES_NAME", "OPSET",
    "TOLERANCE", "DEFAULT_THREADS", "INT8_MIN_AGREEMENT", "OnnxIO", "OnnxExport", "export_onnx", "verify_onnx",
    "check_onnx_file", "onnx_session", "has_features_output", "reference_inputs", "read_onnx_info", "onnx_card_section",
    "quantize_int8", "require_onnx_runtime", "top1_agreement", "INT8_TIE", "verify_int8_onnx",
    "verification_record", "remember_verification",
]

INPUT_NAME, METADATA_NAME, OUTPUT_NAME, FEATURES_NAME = "pixel_values", "metadata", "logits", "features"
OPSET = 17
TOLERANCE = 1e-4  # max |Δ| of a logit or feature between ONNX Runtime and PyTorch (relative above |value| 1)
DEFAULT_THREADS = 2  # ONNX Runtime intra-op threads
INT8_MIN_AGREEMENT = 0.99  # top-1 agreement with fp32 an int8 model must keep
# int8 against PyTorch on first use: where PyTorch's top two logits are closer than this share of the largest
# |logit|, either class counts as the same answer (dynamic int8 moves logits by about 1% of their scale)
INT8_TIE = 0.05
INFO_FORMAT = "zoo-onnx/1"
# operator domains built into ONNX Runtime; any other needs a custom-op library, which is never loaded
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
_VERIFY_BATCH = 16
_EXPORT_LOCK = threading.Lock()  # one export at a time: the pooling patch below is process-wide


def require_onnx_runtime():
    """(onnx, onnxruntime), or a ZooError saying how to install them."""
    try:
        import onnx  # noqa: PLC0415
        import onnxruntime  # noqa: PLC0415
    except ImportError as e:
        raise ZooError(f"ONNX export and ONNX Runtime inference need the onnx and onnxruntime packages ({e}); "
                       "install them with pip install 'medtl-zoo[onnx]' (or pip install -r requirements.txt).") from None
    return onnx, onnxruntime


# --- what goes in and out ----------------------------------------------------------------------------

@dataclass(frozen=True)
class OnnxIO:
    """The inputs and outputs an ONNX file of a run must have."""

    input_size: tuple[int, int, int]     # (C, H, W)
    metadata_features: int | None        # F for a metadata head, else None
    num_classes: int
    num_features: int | None = None      # D of the `features` output; None where only the file says (config.json)

    @classmethod
    def from_model(cls, model: nn.Module) -> "OnnxIO":
        schema = getattr(model, "metadata_schema", None)
        return cls(tuple(int(v) for v in model.pretrained_cfg["input_size"]),
                   None if schema is None else MetadataSchema.from_dict(schema).num_features, int(model.num_classes),
                   int(model.num_features))

    @classmethod
    def from_config(cls, config: dict) -> "OnnxIO":
        """From a run's config.json."""
        input_size = (config.get("pretrained_cfg") or {}).get("input_size")
        if not input_size or len(input_size) != 3:
            raise ZooError(f"config.json has no pretrained_cfg.input_size (channels, height, width), got "
                           f"{input_size!r}; re-save the run with zoo.save_pretrained.")
        args = config.get("model_args") or {}
        features = (MetadataSchema.from_dict(args.get("metadata_schema")).num_features
                    if "metadata" in str(args.get("head") or "") else None)
        return cls(tuple(int(v) for v in input_size), features, int(config["num_classes"]))

    def expected(self) -> dict[str, tuple]:
        """name -> shape, batch as 'batch'."""
        shapes = {INPUT_NAME: ("batch", *self.input_size)}
        if self.metadata_features is not None:
            shapes[METADATA_NAME] = ("batch", self.metadata_features)
        return shapes


# --- export ------------------------------------------------------------------------------------------

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
    """The graph exported: (logits, features) from one backbone pass, exactly as the app computes them."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, metadata: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        features, logits = features_and_logits(self.model, x, metadata)  # (B, D), (B, K)
        return logits, features


def _export_bytes(model: nn.Module, io_spec: OnnxIO) -> bytes:
    """The model as ONNX (opset 17, dynamic batch), logits and features, in memory."""
    example = (torch.zeros(2, *io_spec.input_size),)  # batch 2: nothing may specialise on a batch of 1
    names = [INPUT_NAME]
    if io_spec.metadata_features is not None:
        example += (torch.zeros(2, io_spec.metadata_features),)
        names.append(METADATA_NAME)
    buffer = io.BytesIO()
    with _EXPORT_LOCK, _exportable_adaptive_pooling(), warnings.catch_warnings():
        # the input-size guard's Python checks are constants in the trace (the size is fixed), as intended
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")  # strided slices stay as ops
        # the wrapper takes the model's mode: the exporter restores the wrapper's mode on all its submodules
        wrapper = _LogitsAndFeatures(model).train(model.training)
        torch.onnx.export(wrapper, example, buffer, dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=[OUTPUT_NAME, FEATURES_NAME], do_constant_folding=True,
                          dynamic_axes={name: {0: "batch"} for name in [*names, OUTPUT_NAME, FEATURES_NAME]})
    return buffer.getvalue()


@dataclass
class OnnxExport:
    """A written, verified ONNX file and its record (the onnx.json entry)."""

    path: Path
    info: dict[str, Any]


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
    io_spec = OnnxIO.from_model(model)
    if inputs is None:
        inputs, metadata = reference_inputs(model)
        inputs_source = "reference inputs (example images shipped with installed packages, and random ones)"

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
    known = weights is not None or folder is not None
    weights = Path(weights) if weights is not None else (folder or path.parent) / WEIGHTS_NAME
    weights_sha256 = (file_sha256(weights) if weights.is_file() and (known or _same_weights(model, weights))
                      else None)
    info = {
        "format": INFO_FORMAT, "precision": "fp32", "sha256": hashlib.sha256(data).hexdigest(),
        # the weights it was verified against: a stale or swapped file is refused by the loader
        "weights_sha256": weights_sha256,
        "opset": OPSET, "inputs": {k: list(v) for k, v in io_spec.expected().items()},
        "outputs": {OUTPUT_NAME: ["batch", io_spec.num_classes], FEATURES_NAME: ["batch", io_spec.num_features]},
        "verification": {**figures, "inputs_source": inputs_source or "inputs given by the caller"},
        "export_s": round(export_s, 2),
    }
    _atomic_write(path, data)
    _write_info(path.parent, path.name, info)
    remember_verification(info)
    if update_card and (path.parent / CARD_NAME).is_file():
        _update_card(path.parent / CARD_NAME, onnx_card_section(io_spec, info))
    return OnnxExport(path=path, info=info)


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


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_info(folder: Path, name: str, entry: dict[str, Any]) -> None:
    info = read_onnx_info(folder)
    info[name] = entry
    _atomic_write(folder / ONNX_INFO_NAME, (json.dumps(info, indent=2) + "\n").encode())


def _record_path(digest: str, weights_sha256: str) -> Path:
    return Path(_hub.CACHE_DIR) / "onnx" / "verified" / f"{digest}-{weights_sha256}.json"


def verification_record(digest: str, weights_sha256: str | None) -> dict[str, Any] | None:
    """The verification the zoo recorded itself (in its cache) of the ONNX file with sha256 `digest` against
    the weights with sha256 `weights_sha256`; None when it has none (verify the file, then remember it)."""
    if not weights_sha256:
        return None
    try:
        record = json.loads(_record_path(digest, weights_sha256).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(record, dict) and record.get("sha256") == digest
            and record.get("weights_sha256") == weights_sha256 and isinstance(record.get("verification"), dict)):
        return None
    return record


def remember_verification(record: dict[str, Any]) -> None:
    """Record in the zoo's cache that the ONNX file record["sha256"] verified against the weights
    record["weights_sha256"] (figures in record["verification"]); nothing without the weights' hash."""
    if not record.get("weights_sha256"):
        return
    target = _record_path(record["sha256"], record["weights_sha256"])
    target.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(target, (json.dumps(record, indent=2) + "\n").encode())


def read_onnx_info(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """onnx.json of a folder: {file name: record}; empty when there is none or it is unreadable. What the folder
    says about itself: descriptive, never proof that a file was verified (see verification_record)."""
    path = Path(folder) / ONNX_INFO_NAME
    try:
        check_file_size(path)
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, ZooError):
        return {}
    return {k: v for k, v in info.items() if isinstance(v, dict)} if isinstance(info, dict) else {}


# --- verification ------------------------------------------------------------------------------------

def onnx_session(model: bytes | str | os.PathLike, threads: int = DEFAULT_THREADS):
    """An ONNX Runtime CPU session with `threads` intra-op threads (give checked bytes: check_onnx_file)."""
    _, ort = require_onnx_runtime()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ZooError(f"ONNX Runtime threads must be an integer >= 1, got {threads!r}.")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # No busy-waiting between runs: by default each session's idle worker threads spin for a while after a run,
    # and the app runs several sessions one after another (and PyTorch for Grad-CAM) on the same cores, which the
    # spinning threads of the previous model then slow down: a six-model comparison took 153 ms with spinning and
    # 87 ms without here (2 cores), although one model alone is ~20% faster with it.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    if not isinstance(model, bytes):
        check_file_size(model, ONNX_NAME)
    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for invalid graphs
        raise ZooError(f"ONNX Runtime cannot load this model ({type(e).__name__}: {str(e).splitlines()[0]}).") from None


def _feeds(x: np.ndarray, metadata: np.ndarray | None) -> dict[str, np.ndarray]:
    feeds = {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)}
    if metadata is not None:
        feeds[METADATA_NAME] = np.ascontiguousarray(metadata, dtype=np.float32)
    return feeds


def has_features_output(session) -> bool:
    """Whether an ONNX Runtime session's graph gives `features` (files exported before it existed do not)."""
    return FEATURES_NAME in {o.name for o in session.get_outputs()}


def _run_session(session, x: torch.Tensor, metadata: torch.Tensor | None,
                 outputs: tuple[str, ...] = (OUTPUT_NAME,)) -> list[np.ndarray]:
    """The named outputs over `x` in batches, one array each."""
    out = []
    for i in range(0, len(x), _VERIFY_BATCH):
        meta = None if metadata is None else metadata[i:i + _VERIFY_BATCH].numpy()
        out.append(session.run(list(outputs), _feeds(x[i:i + _VERIFY_BATCH].numpy(), meta)))
    return [np.concatenate(arrays) for arrays in zip(*out)]


def _run_torch(model: nn.Module, x: torch.Tensor, metadata: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
    """(logits, features) as PyTorch computes them: logits from the model's own forward (what stock timm
    gives), features from zoo.trust.features_and_logits (what the OOD check reads)."""
    logits, features = [], []
    with torch.inference_mode():
        for i in range(0, len(x), _VERIFY_BATCH):
            batch, meta = x[i:i + _VERIFY_BATCH], None if metadata is None else metadata[i:i + _VERIFY_BATCH]
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
    got, *got_features = _run_session(session, inputs, metadata,
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
    return figures


def verify_int8_onnx(model: nn.Module, onnx_model: bytes, inputs: torch.Tensor,
                     metadata: torch.Tensor | None = None, threads: int = DEFAULT_THREADS) -> dict[str, Any]:
    """Compare an int8 file with the PyTorch model on `inputs`: its figures, or a ZooError when its top-1 class
    agrees on fewer than INT8_MIN_AGREEMENT of them (where PyTorch's own top two are within INT8_TIE of the
    largest |logit|, either counts) or its outputs are not finite or of PyTorch's shape."""
    inputs = inputs.detach().float().cpu()
    metadata = None if metadata is None else metadata.detach().float().cpu()
    reference, _ = _run_torch(model, inputs, metadata)
    (got,) = _run_session(onnx_session(onnx_model, threads), inputs, metadata)
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


# --- reading a file ----------------------------------------------------------------------------------

def _graphs(graph):
    """A graph and every subgraph inside its nodes' attributes."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _graphs(sub)


def _tensors(graph):
    yield from graph.initializer
    yield from (s.values for s in graph.sparse_initializer)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors


def _dims(value_info) -> tuple:
    return tuple(d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim)


def check_onnx_file(path: str | os.PathLike, config: dict) -> bytes:
    """The bytes of an ONNX file that parses, passes onnx.checker, needs no external file or custom op,
    and whose inputs/outputs match the run's config.json; a ZooError naming the problem otherwise."""
    onnx, _ = require_onnx_runtime()
    path = Path(path)
    fix = "re-export it with `python -m zoo export RUN` (or delete it to use the PyTorch weights)"
    try:
        check_file_size(path, path.name if path.name in MAX_FILE_BYTES else ONNX_NAME)  # before it is read whole
    except OSError as e:
        raise ZooError(f"{path} cannot be read ({e}).") from None
    try:
        data = path.read_bytes()
        proto = onnx.load_model_from_string(data)
    except OSError as e:
        raise ZooError(f"{path} cannot be read ({e}).") from None
    except Exception as e:  # protobuf's DecodeError and friends
        raise ZooError(f"{path} is not a valid ONNX file ({type(e).__name__}: {e}); {fix}.") from None
    if not proto.graph.node:
        raise ZooError(f"{path} is not a valid ONNX file (it has no graph); {fix}.")
    for graph in _graphs(proto.graph):
        for tensor in _tensors(graph):
            if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
                raise ZooError(f"{path} keeps tensor {tensor.name!r} in an external file; the zoo reads only "
                               f"self-contained ONNX files (no other file is opened); {fix}.")
        for node in graph.node:
            if node.domain not in STANDARD_DOMAINS:
                raise ZooError(f"{path} uses operator {node.op_type!r} of domain {node.domain!r}, which needs a "
                               "custom-op library; the zoo never loads one from a model file.")
    try:
        onnx.checker.check_model(data)  # the bytes as read: the proto would be serialised again (slower)
    except Exception as e:  # onnx.checker.ValidationError
        raise ZooError(f"{path} fails the ONNX checker ({str(e).splitlines()[0]}); {fix}.") from None
    expected = OnnxIO.from_config(config)
    initializers = {t.name for t in proto.graph.initializer}
    inputs = {i.name: i for i in proto.graph.input if i.name not in initializers}
    want = expected.expected()
    if set(inputs) != set(want):
        raise ZooError(f"{path} takes inputs {sorted(inputs)}, but config.json describes {sorted(want)}; the file "
                       f"belongs to another model; {fix}.")
    for name, shape in want.items():
        dims = _dims(inputs[name])
        if len(dims) != len(shape) or tuple(dims[1:]) != tuple(shape[1:]):
            raise ZooError(f"{path}: input {name!r} has shape {dims}, config.json says {shape} (batch, "
                           f"{'channels, height, width' if name == INPUT_NAME else 'features'}); {fix}.")
        if inputs[name].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ZooError(f"{path}: input {name!r} is not float32; {fix}.")
    outputs = list(proto.graph.output)
    names = [o.name for o in outputs]
    # logits alone: a file exported before the features output existed (it loads, without an OOD check)
    if (names not in ([OUTPUT_NAME], [OUTPUT_NAME, FEATURES_NAME]) or _dims(outputs[0])[1:] != (expected.num_classes,)
            or (len(outputs) == 2 and not _positive_width(_dims(outputs[1])))):
        described = [(o.name, _dims(o)) for o in outputs]
        raise ZooError(f"{path} has outputs {described}, config.json says {OUTPUT_NAME!r} of shape "
                       f"(batch, {expected.num_classes}) and {FEATURES_NAME!r} of shape (batch, D); {fix}.")
    if any(o.type.tensor_type.elem_type != onnx.TensorProto.FLOAT for o in outputs):
        raise ZooError(f"{path}: an output is not float32; {fix}.")
    return data


def _positive_width(dims: tuple) -> bool:
    """(batch, D) with a fixed D >= 1."""
    return len(dims) == 2 and isinstance(dims[1], int) and dims[1] >= 1


# --- the model card ----------------------------------------------------------------------------------

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
if os.path.exists("OOD_FILE"):  # the out-of-distribution check: 1 - cosine to the nearest training image
    from safetensors.numpy import load_file

    ood = load_file("OOD_FILE")  # bank (N, D) of unit rows, threshold (1,)
    score = max(0.0, 1.0 - float((ood["bank"] @ (features / max(np.linalg.norm(features), 1e-12))).max()))
    print(f"OOD score {score:.4f}, threshold {float(ood['threshold'][0]):.4f}:",
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
    """The model card's ONNX section: the file, its inputs and outputs, the verification, and how to run it."""
    c, h, w = io_spec.input_size
    v = info.get("verification", {})
    lines = [f"`model.onnx` (opset {info.get('opset', OPSET)}, float32, dynamic batch) runs with ONNX Runtime alone, "
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
              "(nearest-neighbour cosine distance, as in the snippet)", ""]
    if v:
        lines += [f"Verified against the PyTorch weights on {v.get('inputs')} {v.get('inputs_source', 'inputs')}: "
                  f"max |Δ logit| {v.get('max_abs_diff', float('nan')):.2g} (allowed {v.get('tolerance', TOLERANCE):.2g}), "
                  f"top-1 identical on {v.get('top1_agreement', 0):.0%}"
                  + (f"; features max |Δ| {v['features']['max_abs_diff']:.2g} (allowed "
                     f"{v['features']['tolerance']:.2g}), lowest cosine {v['features']['min_cosine']:.6f}"
                     if v.get("features") else "")
                  + f"; ONNX Runtime {v.get('onnxruntime')} (figures in `{ONNX_INFO_NAME}`).", ""]
    metadata = _METADATA_SNIPPET if io_spec.metadata_features is not None else ""
    feeds = (f'{{"{INPUT_NAME}": x, "{METADATA_NAME}": metadata}}' if metadata else f'{{"{INPUT_NAME}": x}}')
    snippet = _SNIPPET.replace("METADATA\n", metadata).replace("FEEDS", feeds).replace("OOD_FILE", OOD_NAME)
    return "\n".join([_CARD_TITLE, "", *lines, snippet, ""])


def _update_card(card: Path, section: str) -> None:
    """Put `section` into the card, replacing an earlier ONNX section, before 'Intended use' when there."""
    check_file_size(card, CARD_NAME)
    text = card.read_text(encoding="utf-8")
    text = re.sub(rf"{re.escape(_CARD_TITLE)}\n.*?(?=^## |\Z)", "", text, flags=re.S | re.M)
    marker = "## Intended use and limitations"
    text = text.replace(marker, section + "\n" + marker, 1) if marker in text else text.rstrip("\n") + "\n\n" + section
    _atomic_write(card, text.encode("utf-8"))


# --- int8 --------------------------------------------------------------------------------------------

def quantize_int8(folder: str | os.PathLike, inputs: torch.Tensor, metadata: torch.Tensor | None = None, *,
                  inputs_source: str | None = None, threads: int = DEFAULT_THREADS) -> OnnxExport:
    """ONNX Runtime's dynamic int8 quantization of RUN/model.onnx's fully connected layers (the bulk of a VGG
    or AlexNet), written as RUN/model.int8.onnx only when its
    top-1 class agrees with the fp32 file on >= 99% of `inputs` (the run's test split); a ZooError otherwise.

    A separate file and backend ('onnx-int8'); the fp32 model.onnx is never replaced.
    """
    require_onnx_runtime()
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    folder = Path(folder)
    from ._hub import read_config  # noqa: PLC0415

    config = read_config(folder)
    fp32 = check_onnx_file(folder / ONNX_NAME, config) if (folder / ONNX_NAME).is_file() else None
    weights_sha256 = file_sha256(folder / WEIGHTS_NAME) if (folder / WEIGHTS_NAME).is_file() else None
    # the zoo's own record, never onnx.json's word: that file is what int8 is measured against
    fp32_info = fp32 and verification_record(hashlib.sha256(fp32).hexdigest(), weights_sha256)
    if not fp32_info:
        raise ZooError(f"{folder} has no {ONNX_NAME} verified by this zoo against its weights; export it first "
                       f"(python -m zoo export {folder}).")
    inputs = inputs.detach().float().cpu()
    metadata = None if metadata is None else metadata.detach().float().cpu()
    with tempfile.TemporaryDirectory() as tmp:
        source, prepared, target = Path(tmp) / ONNX_NAME, Path(tmp) / "prepared.onnx", Path(tmp) / ONNX_INT8_NAME
        source.write_bytes(fp32)
        quant_pre_process(str(source), str(prepared))  # shape inference and folding, as ONNX Runtime advises
        # fully connected layers only: dynamically quantized convolutions (ConvInteger) ran 4-9x slower than
        # fp32 here and changed the top class of 13-88% of the inputs (resnet18, efficientnet_lite0 at 224 px)
        quantize_dynamic(prepared, target, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        data = target.read_bytes()
    (reference,) = _run_session(onnx_session(fp32, threads), inputs, metadata)
    (got,) = _run_session(onnx_session(data, threads), inputs, metadata)
    agreement = top1_agreement(reference, got)
    figures = {"inputs": len(inputs), "top1_agreement_with_fp32": agreement,
               "max_abs_diff_vs_fp32": float(np.abs(got - reference).max()), "min_agreement": INT8_MIN_AGREEMENT,
               "inputs_source": inputs_source or "inputs given by the caller"}
    if agreement < INT8_MIN_AGREEMENT:
        raise ZooError(f"int8 quantization of {folder.name} agrees with fp32 on the top-1 class for {agreement:.1%} of "
                       f"{len(inputs)} inputs, under the {INT8_MIN_AGREEMENT:.0%} required; {ONNX_INT8_NAME} was not "
                       "written (the fp32 model.onnx stays).")
    fp32_entry = read_onnx_info(folder).get(ONNX_NAME) or {}  # descriptive fields only (opset, shapes)
    info = {"format": INFO_FORMAT, "precision": "int8-dynamic", "sha256": hashlib.sha256(data).hexdigest(),
            "weights_sha256": weights_sha256, "from": ONNX_NAME, "from_sha256": fp32_info["sha256"],
            "opset": fp32_entry.get("opset"), "inputs": fp32_entry.get("inputs"),
            "outputs": fp32_entry.get("outputs"), "verification": figures}
    _atomic_write(folder / ONNX_INT8_NAME, data)
    _write_info(folder, ONNX_INT8_NAME, info)
    remember_verification(info)
    return OnnxExport(path=folder / ONNX_INT8_NAME, info=info)
