"""Every file of a run folder is sized (os.stat) against the zoo's cap for it (zoo.run_layout.MAX_FILE_BYTES)
before it is read: an oversized model.onnx, ood.safetensors or model card is refused unread, with its name and
size. Real files: sparse ones made with truncate (no disk or memory spent), and a real safetensors OOD bank."""
import json
import os
import struct

import pytest
import torch

import zoo
from zoo.run_layout import CARD_NAME, MAX_FILE_BYTES, ONNX_NAME, OOD_NAME
from zoo.trust import write_ood_statistics

pytest.importorskip("onnxruntime")


@pytest.fixture
def run(tmp_path):
    torch.manual_seed(0)
    model = zoo.create_model("lenet5", num_classes=3).eval()
    zoo.save_pretrained(model, tmp_path / "run", label_names=["a", "b", "c"])
    return tmp_path / "run"


def _sparse(path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)  # a hole: the file has this size but holds no blocks


def _sparse_safetensors_bank(path, rows: int, dim: int) -> int:
    """A real safetensors file holding a (rows, dim) float32 bank and its threshold, its data left sparse."""
    bank_bytes = rows * dim * 4
    header = json.dumps({"bank": {"dtype": "F32", "shape": [rows, dim], "data_offsets": [0, bank_bytes]},
                         "threshold": {"dtype": "F32", "shape": [1], "data_offsets": [bank_bytes, bank_bytes + 4]}})
    header = header.encode() + b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + bank_bytes + 4)
    return os.path.getsize(path)


def test_an_oversized_onnx_file_is_refused_unread_and_pytorch_answers(run):
    _sparse(run / ONNX_NAME, MAX_FILE_BYTES[ONNX_NAME] + 1)  # 1 GiB + 1 byte: read whole before, by the old code
    backend = zoo.load_backend(run, "onnx", export_missing=False)
    assert backend.name == "torch"
    assert (f"model.onnx is {MAX_FILE_BYTES[ONNX_NAME] + 1:,} bytes, over the zoo's limit of "
            f"{MAX_FILE_BYTES[ONNX_NAME]:,} bytes for model.onnx; it was not read") in backend.fallback_reason


def test_an_oversized_ood_bank_is_refused_before_it_is_read(run):
    width = json.loads((run / "config.json").read_text())["num_features"]
    rows = MAX_FILE_BYTES[OOD_NAME] // (4 * width) + 1  # one row more than the cap allows
    size = _sparse_safetensors_bank(run / OOD_NAME, rows, width)
    from safetensors import safe_open
    with safe_open(str(run / OOD_NAME), framework="pt") as f:  # a well-formed safetensors file, not garbage
        assert f.get_slice("bank").get_shape() == [rows, width]
    with pytest.raises(zoo.ZooError, match=rf"ood.safetensors is {size:,} bytes, over the zoo's limit of "
                                           rf"{MAX_FILE_BYTES[OOD_NAME]:,} bytes .* it was not read"):
        zoo.load_pretrained(run)
    write_ood_statistics(run, torch.randn(50, width), 0.5)  # a real bank of 50 training images loads
    assert zoo.load_pretrained(run).trust.ood.bank.shape == (50, width)


def test_an_oversized_model_card_is_not_read_by_the_export(run):
    _sparse(run / CARD_NAME, MAX_FILE_BYTES[CARD_NAME] + 1)
    with pytest.raises(zoo.ZooError, match=r"README.md is 1,000,001 bytes, over the zoo's limit .* not read"):
        zoo.export_onnx(run)
