"""The last step of a run: model.onnx beside the weights, verified against PyTorch on the run's test images.

The run is complete without it: a model that does not verify, or a disk with no room for the file, leaves a warning
and a model-card section saying why and how to export it later (``python -m zoo export RUN``).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

import zoo
from zoo.fileio import is_disk_full
from zoo.onnx_card import onnx_failure_section, update_card_section
from zoo.run_layout import CARD_NAME, ONNX_NAME, WEIGHTS_NAME

from .engine import SplitData

__all__ = ["ONNX_VERIFY_IMAGES", "export_run_onnx"]

_logger = logging.getLogger("train")

ONNX_VERIFY_IMAGES = 64  # test images the ONNX export is verified on (all of a smaller test split)


def export_run_onnx(run_dir: Path, model: torch.nn.Module, test: SplitData) -> None:
    """model.onnx beside the weights, verified against PyTorch on the run's test images.

    A model that does not verify, or a disk with no room for the file, leaves the run complete without it: a warning
    and the model card say why and how to export it later.
    """
    count = min(ONNX_VERIFY_IMAGES, len(test.dataset))
    inputs = torch.stack([test.dataset[i][0] for i in range(count)]) if count else None  # (N, C, H, W)
    metadata = test.metadata[:count] if count and test.metadata is not None else None
    try:
        result = zoo.export_onnx(model, run_dir / ONNX_NAME, inputs=inputs, metadata=metadata,
                                 inputs_source=f"test images of {run_dir.name}" if count else None,
                                 weights=run_dir / WEIGHTS_NAME)
    except (zoo.ZooError, OSError) as e:  # the run is complete without it (a full disk, a model that does not verify)
        _onnx_not_exported(run_dir, e)
        return
    v = result.info["verification"]
    _logger.info("onnx: %s verified on %d %s: max |Δ logit| %.2g, top-1 identical on %.0f%%", result.path,
                 v["inputs"], "test images" if count else "reference inputs", v["max_abs_diff"],
                 100 * v["top1_agreement"])


def _onnx_not_exported(run_dir: Path, error: Exception) -> None:
    """Say in the log and the model card why model.onnx is missing and how to export it later."""
    reason = (f"{error.strerror}: there was no room for {ONNX_NAME}" if is_disk_full(error) else
              f"{type(error).__name__}: {error}" if isinstance(error, OSError) else str(error))
    retry = f"python -m zoo export {run_dir}"
    _logger.warning("%s not written (%s); the run's weights, card and metrics are complete. Export it later with "
                    "%s", ONNX_NAME, reason, retry)
    try:
        update_card_section(run_dir / CARD_NAME, onnx_failure_section(reason, retry))
    except (zoo.ZooError, OSError) as e:
        _logger.warning("the model card could not say so either (%s)", e)
