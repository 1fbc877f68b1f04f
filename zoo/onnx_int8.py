"""Dynamic int8 quantization of a run's verified model.onnx, kept only where it keeps the fp32 file's answers."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ._errors import ZooError
from ._hub import WEIGHTS_NAME, read_config
from .assets import file_sha256
from .fileio import atomic_write
from .onnx_file import check_onnx_file
from .onnx_info import (INFO_FORMAT, ONNX_INFO_VERSION, OnnxExport, read_onnx_info, remember_verification,
                        verification_record, write_info)
from .onnx_io import DEFAULT_THREADS, onnx_session, require_onnx_runtime, run_session
from .onnx_verify import INT8_MIN_AGREEMENT, top1_agreement
from .run_layout import ONNX_INT8_NAME, ONNX_NAME

__all__ = ["quantize_int8"]


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
    (reference,) = run_session(onnx_session(fp32, threads), inputs, metadata)
    (got,) = run_session(onnx_session(data, threads), inputs, metadata)
    agreement = top1_agreement(reference, got)
    figures = {"inputs": len(inputs), "top1_agreement_with_fp32": agreement,
               "max_abs_diff_vs_fp32": float(np.abs(got - reference).max()), "min_agreement": INT8_MIN_AGREEMENT,
               "inputs_source": inputs_source or "inputs given by the caller"}
    if agreement < INT8_MIN_AGREEMENT:
        raise ZooError(f"int8 quantization of {folder.name} agrees with fp32 on the top-1 class for {agreement:.1%} of "
                       f"{len(inputs)} inputs, under the {INT8_MIN_AGREEMENT:.0%} required; {ONNX_INT8_NAME} was not "
                       "written (the fp32 model.onnx stays).")
    # descriptive fields only (opset, shapes); none where onnx.json holds no entry for it that this zoo reads
    fp32_entry = read_onnx_info(folder).get(ONNX_NAME) or {}
    info = {"format": INFO_FORMAT, "format_version": ONNX_INFO_VERSION,
            "precision": "int8-dynamic", "sha256": hashlib.sha256(data).hexdigest(),
            "weights_sha256": weights_sha256, "from": ONNX_NAME, "from_sha256": fp32_info["sha256"],
            "opset": fp32_entry.get("opset"), "inputs": fp32_entry.get("inputs"),
            "outputs": fp32_entry.get("outputs"), "verification": figures}
    with atomic_write(folder / ONNX_INT8_NAME) as f:
        f.write(data)
    write_info(folder, ONNX_INT8_NAME, info)
    remember_verification(info)
    return OnnxExport(path=folder / ONNX_INT8_NAME, info=info)
