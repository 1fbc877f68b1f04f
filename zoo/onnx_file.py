"""Reading an ONNX file from a run folder or the Hub, checked before ONNX Runtime sees it.

It is parsed and checked (onnx.checker; tensors inline, never external files; only the standard operator domains;
inputs and outputs that match config.json), and no custom-op library is ever registered, so a file cannot bring
code to run.
"""
from __future__ import annotations

import os
from pathlib import Path

from ._errors import ZooError
from .fileio import check_file_size
from .onnx_io import FEATURE_MAP_NAME, FEATURES_NAME, INPUT_NAME, OUTPUT_NAME, OnnxIO, require_onnx_runtime
from .run_layout import MAX_FILE_BYTES, ONNX_NAME

__all__ = ["STANDARD_DOMAINS", "check_onnx_file"]

# operator domains built into ONNX Runtime; any other needs a custom-op library, which is never loaded
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")


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
    # logits alone: a file exported before the features output existed (it loads, without an OOD check); without
    # feature_map: one exported before it (its heatmaps come from PyTorch)
    if (names not in ([OUTPUT_NAME], [OUTPUT_NAME, FEATURES_NAME], [OUTPUT_NAME, FEATURES_NAME, FEATURE_MAP_NAME])
            or _dims(outputs[0])[1:] != (expected.num_classes,)
            or (len(outputs) >= 2 and not _positive_width(_dims(outputs[1])))
            or (len(outputs) == 3 and not _map_of(_dims(outputs[2]), _dims(outputs[1])))):
        described = [(o.name, _dims(o)) for o in outputs]
        raise ZooError(f"{path} has outputs {described}, config.json says {OUTPUT_NAME!r} of shape "
                       f"(batch, {expected.num_classes}) and {FEATURES_NAME!r} of shape (batch, D); {fix}.")
    if any(o.type.tensor_type.elem_type != onnx.TensorProto.FLOAT for o in outputs):
        raise ZooError(f"{path}: an output is not float32; {fix}.")
    return data


def _map_of(dims: tuple, feature_dims: tuple) -> bool:
    """(batch, D, h, w) with the features' D (the exporter may leave h and w symbolic: each call's map is checked)."""
    return (len(dims) == 4 and dims[1] == feature_dims[1]
            and all((isinstance(v, int) and v >= 1) or (isinstance(v, str) and v) for v in dims[2:]))


def _positive_width(dims: tuple) -> bool:
    """(batch, D) with a fixed D >= 1."""
    return len(dims) == 2 and isinstance(dims[1], int) and dims[1] >= 1
