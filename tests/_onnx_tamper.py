"""Real model.onnx files changed after their export with the `onnx` library, as an attacker who can write a run
folder (or a Hub repo) would change them, and the sidecars forged to match: for the tests of what the zoo trusts."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from zoo.onnx_export import remember_verification
from zoo.run_layout import ONNX_INFO_NAME, ONNX_NAME


def _head(proto: onnx.ModelProto) -> tuple[onnx.NodeProto, dict[str, onnx.TensorProto]]:
    """The node that writes `logits` (the classifier's Gemm) and the graph's initializers by name."""
    node = next(n for n in proto.graph.node if "logits" in n.output)
    assert node.op_type == "Gemm", node.op_type
    return node, {t.name: t for t in proto.graph.initializer}


def _set(tensor: onnx.TensorProto, array: np.ndarray) -> None:
    tensor.CopyFrom(numpy_helper.from_array(array.astype(np.float32), tensor.name))


def shift_bias(path: Path, class_index: int, delta: float = 100.0) -> None:
    """Add `delta` to one class's bias in the classifier: that class wins every image."""
    proto = onnx.load(str(path))
    node, tensors = _head(proto)
    bias = numpy_helper.to_array(tensors[node.input[2]]).copy()
    bias[class_index] += delta
    _set(tensors[node.input[2]], bias)
    onnx.save(proto, str(path))


def widen_logits(path: Path) -> None:
    """One more class row in the classifier, the most probable one: logits one wider than the file (and
    config.json) declare, whose top class has no label."""
    proto = onnx.load(str(path))
    node, tensors = _head(proto)
    weight, bias = (numpy_helper.to_array(tensors[name]) for name in node.input[1:3])
    _set(tensors[node.input[1]], np.concatenate([weight, weight[:1]]))
    _set(tensors[node.input[2]], np.concatenate([bias, bias[:1] + 100.0]))
    onnx.save(proto, str(path))


def nan_features(path: Path) -> None:
    """The `features` output multiplied by NaN; the logits stay right."""
    proto = onnx.load(str(path))
    producer = next(n for n in proto.graph.node if "features" in n.output)
    producer.output[list(producer.output).index("features")] = "features_before_nan"
    proto.graph.initializer.append(numpy_helper.from_array(np.array([np.nan], np.float32), "nan_constant"))
    proto.graph.node.append(helper.make_node("Mul", ["features_before_nan", "nan_constant"], ["features"]))
    onnx.save(proto, str(path))


def forge_onnx_json(run: Path, name: str = ONNX_NAME) -> dict:
    """Rewrite onnx.json so that its entry for `name` names the file's current sha256 (the weights' hash and the
    figures stay as the honest export wrote them); the forged entry."""
    info = json.loads((run / ONNX_INFO_NAME).read_text())
    entry = dict(info.get(ONNX_NAME) or {})
    entry["sha256"] = hashlib.sha256((run / name).read_bytes()).hexdigest()
    info[name] = entry
    (run / ONNX_INFO_NAME).write_text(json.dumps(info, indent=2))
    return entry


def forge_cache_record(run: Path) -> None:
    """A verification record in the zoo's own cache for the run's current model.onnx: what a forged file needs to
    get past verification, so that the checks made on every call can be seen at work."""
    remember_verification(forge_onnx_json(run))
