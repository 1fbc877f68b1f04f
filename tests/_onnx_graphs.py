"""ONNX files of another shape than zoo.export_onnx writes, for the tests of what loaders do with them."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

import zoo
from zoo.run_layout import ONNX_NAME
from zoo.trust import features_and_logits

GRAPH_KINDS = ("logits_only", "features_off")


class _Outputs(torch.nn.Module):
    """logits_only: a file exported before the features output existed; features_off: right logits, features
    1% off (a graph that must not pass verification)."""

    def __init__(self, model: torch.nn.Module, kind: str):
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, x: torch.Tensor):
        features, logits = features_and_logits(self.model, x)
        return logits if self.kind == "logits_only" else (logits, features * 1.01 + 0.01)


def write_graph(run: Path, kind: str) -> None:
    """Write RUN/model.onnx of `kind` (GRAPH_KINDS) for the run's weights, with no onnx.json record."""
    assert kind in GRAPH_KINDS, kind
    model = zoo.load_pretrained(run)
    size = json.loads((run / "config.json").read_text())["pretrained_cfg"]["input_size"]
    outputs = ["logits"] if kind == "logits_only" else ["logits", "features"]
    with warnings.catch_warnings():  # the input-size guard's checks are constants in the trace, as in export_onnx
        warnings.simplefilter("ignore")
        torch.onnx.export(_Outputs(model, kind).eval(), (torch.zeros(2, *size),), str(run / ONNX_NAME),
                          dynamo=False, opset_version=17, input_names=["pixel_values"], output_names=outputs,
                          dynamic_axes={n: {0: "batch"} for n in ["pixel_values", *outputs]})
