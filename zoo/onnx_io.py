"""What goes in and out of a run's ONNX file, and running one with ONNX Runtime.

    input  ``pixel_values``  float32 (batch, C, H, W), the image normalised as config.json's pretrained_cfg says
    input  ``metadata``      float32 (batch, F), metadata-head models only (``MetadataSchema.encode``)
    output ``logits``        float32 (batch, num_classes)
    output ``features``      float32 (batch, D), the pooled backbone features (zoo.trust.features_and_logits)
    output ``feature_map``   float32 (batch, D, h, w), forward_features' map that `features` averages (files exported
                             since ONNX_INFO_VERSION 3, for models whose map is 4-D): Grad-CAM's input (zoo.onnx_cam)

onnx and onnxruntime are optional (``pip install 'medtl-zoo[onnx]'``); they are imported when used.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._errors import ZooError
from .archs.metadata import MetadataSchema
from .fileio import check_file_size
from .run_layout import ONNX_NAME

__all__ = ["INPUT_NAME", "METADATA_NAME", "OUTPUT_NAME", "FEATURES_NAME", "FEATURE_MAP_NAME", "OPSET", "DEFAULT_THREADS",
           "SESSION_BATCH",
           "OnnxIO", "require_onnx_runtime", "onnx_session", "has_features_output", "has_output", "run_session"]

INPUT_NAME, METADATA_NAME, OUTPUT_NAME, FEATURES_NAME = "pixel_values", "metadata", "logits", "features"
FEATURE_MAP_NAME = "feature_map"
OPSET = 17
DEFAULT_THREADS = 2  # ONNX Runtime intra-op threads
SESSION_BATCH = 16  # inputs per ONNX Runtime (and PyTorch) call while verifying


def require_onnx_runtime():
    """(onnx, onnxruntime), or a ZooError saying how to install them."""
    try:
        import onnx  # noqa: PLC0415
        import onnxruntime  # noqa: PLC0415
    except ImportError as e:
        raise ZooError(f"ONNX export and ONNX Runtime inference need the onnx and onnxruntime packages ({e}); "
                       "install them with pip install 'medtl-zoo[onnx]' (or pip install -r requirements.txt).") from None
    return onnx, onnxruntime


@dataclass(frozen=True)
class OnnxIO:
    """The inputs and outputs an ONNX file of a run must have."""

    input_size: tuple[int, int, int]     # (C, H, W)
    metadata_features: int | None        # F for a metadata head, else None
    num_classes: int
    num_features: int | None = None      # D of the `features` output; None where only the file says (config.json)

    @classmethod
    def from_model(cls, model: nn.Module) -> "OnnxIO":
        """The inputs and outputs an export of this model has: input size, metadata width, classes, feature width."""
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
    return has_output(session, FEATURES_NAME)


def has_output(session, name: str) -> bool:
    """Whether an ONNX Runtime session's graph has the output `name` (older files lack the newer ones)."""
    return name in {o.name for o in session.get_outputs()}


def run_session(session, x: torch.Tensor, metadata: torch.Tensor | None,
                 outputs: tuple[str, ...] = (OUTPUT_NAME,)) -> list[np.ndarray]:
    """The named outputs over `x` in batches, one array each."""
    out = []
    for i in range(0, len(x), SESSION_BATCH):
        meta = None if metadata is None else metadata[i:i + SESSION_BATCH].numpy()
        out.append(session.run(list(outputs), _feeds(x[i:i + SESSION_BATCH].numpy(), meta)))
    return [np.concatenate(arrays) for arrays in zip(*out)]
