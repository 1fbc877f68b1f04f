"""The evaluation transform is built in one place (zoo.eval_transform) and is exactly timm's: a source scan finds no
other evaluation `create_transform(` call and no second copy of its key tuple, and for several zoo models the
builder gives stock timm's transform and tensors."""
import ast
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import zoo
from train.augment import eval_transform as training_eval_transform
from zoo.eval_transform import EVAL_TRANSFORM_KEYS, eval_transform

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("zoo", "train", "ui", "scripts", "benchmarks", "app.py")
BUILDER = ROOT / "zoo" / "eval_transform.py"


def _source_files() -> list[Path]:
    files = []
    for source in SOURCES:
        path = ROOT / source
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return [f for f in files if f != BUILDER]


def _is_evaluation(call: ast.Call) -> bool:
    """create_transform builds an evaluation transform unless told is_training=True."""
    flag = next((k.value for k in call.keywords if k.arg == "is_training"), None)
    return not (isinstance(flag, ast.Constant) and flag.value is True)


def test_no_other_module_builds_the_evaluation_transform():
    found = []
    for file in _source_files():
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
            if isinstance(node, ast.Call) and _is_evaluation(node):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if name == "create_transform":
                    found.append(f"{file.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"build the evaluation transform with zoo.eval_transform.eval_transform, not at {found}"


def test_the_transform_keys_are_typed_once():
    copies = []
    for file in _source_files():
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                strings = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                if set(EVAL_TRANSFORM_KEYS) <= strings:
                    copies.append(f"{file.relative_to(ROOT)}:{node.lineno}")
    assert not copies, f"import zoo.eval_transform.EVAL_TRANSFORM_KEYS instead of typing it again at {copies}"


@pytest.mark.parametrize("name", ["lenet5", "googlenet", "efficientnet_lite0", "inception_v3"])
def test_the_builder_is_stock_timms_transform(name):
    model = zoo.create_model(name, num_classes=3)
    config = timm.data.resolve_model_data_config(model)
    stock = timm.data.create_transform(**config)
    # a run folder's config carries other keys too: the builder reads only its own
    built = eval_transform({**config, "num_classes": 3, "label_names": ["a", "b", "c"]})
    assert repr(built) == repr(stock)
    assert training_eval_transform is eval_transform  # training evaluates with the same builder
    pixels = np.random.default_rng(0).integers(0, 256, (300, 410, 3), dtype=np.uint8)
    mode = "L" if config["input_size"][0] == 1 else "RGB"
    image = Image.fromarray(pixels).convert(mode)  # not square: the resize and the crop both matter
    assert torch.equal(built(image), stock(image))
    assert set(EVAL_TRANSFORM_KEYS) >= set(config)  # everything timm resolves reaches the transform
