"""A model whose output is NaN or infinite has no answer: its column reports an error, not a null probability."""
import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import zoo
from ui.comparison import compare
from zoo import inference
from zoo.catalog import discover_models


def test_non_finite_outputs_are_an_error_for_that_model(tmp_path):
    # finite weights whose outputs overflow, and a weights file damaged after saving (save_pretrained
    # refuses non-finite tensors, so the NaN is written into the file directly)
    for name, bias in (("inf-weights", 3e38), ("nan-weights", None), ("fine", None)):
        torch.manual_seed(0)
        model = zoo.create_model("lenet5", num_classes=3).eval()
        if bias is not None:
            with torch.no_grad():
                model.get_classifier().weight.fill_(bias)
        zoo.save_pretrained(model, tmp_path / name, label_names=["a", "b", "c"], dataset="none")
    weights = load_file(str(tmp_path / "nan-weights" / "model.safetensors"))
    weights["fc.bias"][1] = float("nan")
    save_file(weights, str(tmp_path / "nan-weights" / "model.safetensors"), metadata={"format": "pt"})
    entries = {e.id: e for e in discover_models(tmp_path)}
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8))
    comparison = compare(zoo.images.LoadedImage(image), list(entries.values()),
                                   inference.ModelCache(), cam=False)
    records = {r["model"]: r for r in comparison.records()}
    for name in ("nan-weights", "inf-weights"):
        assert records[name]["top_k"] == [] and "NaN or infinite outputs" in records[name]["error"], records[name]
    assert records["fine"]["error"] is None and len(records["fine"]["top_k"]) == 3
    assert sorted(comparison.summary.failed) == ["inf-weights", "nan-weights"]
