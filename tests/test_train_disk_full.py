"""A disk that fills during a run's final writes: one line (no traceback), no torn file, and the run is finished by
`--resume` (card, metrics, ONNX, trust rewritten from its checkpoint) or, when only the ONNX export found no room, the
run stands and says how to export it later.

The full disk is the kernel's own: from the moment it "fills", the temporary file of each atomic write
(zoo.fileio.atomic_write's ``.<name>.<random>.tmp``, through which every file of a run folder is written) is a link to
/dev/full, where every write fails with ENOSPC. So each writer meets a real ENOSPC in its own way: Python's file
objects, torch.save's zip writer (which reports it as a RuntimeError), safetensors' Rust writer (a SafetensorError),
matplotlib. Tried by hand as well, as root, on real tmpfs mounts of several sizes (the report lists them); a tmpfs
mount needs privileges CI does not have, /dev/full does not.
"""
import errno
import json
import os
import tempfile
from pathlib import Path

import pytest

import zoo
from train import main
from zoo.run_layout import CARD_NAME, CONFIG_NAME, METRICS_NAME, ONNX_INFO_NAME, ONNX_NAME, WEIGHTS_NAME

pytestmark = pytest.mark.filterwarnings("ignore:mode='feature-extraction' freezes")
# a frozen random LeNet-5 whose classifier trains on in-memory features: the cheapest complete run there is
ARGV = ["--arch", "lenet5", "--mode", "feature-extraction", "--pretrained", "false", "--data", "digits",
        "--epochs", "1", "--batch-size", "32", "--lr", "0.01", "--seed", "1", "--workers", "0", "--quiet"]


class FullDisk:
    """The disk fills when the file `first` is written: from then on every atomic write's temporary file is a link to
    /dev/full (ENOSPC on every write), or, with ``only``, just `first`'s (room for small files, not for this one).
    ``free()`` makes room again. (A link to /dev/full never gets a successful write, and fsync refuses a device, so
    atomic_write never renames or chmods one: it removes the link.)"""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, first: str, only: bool = False):
        self.first, self.only, self.full, self.refused = first, only, False, []
        self._mkstemp = tempfile.mkstemp
        monkeypatch.setattr(tempfile, "mkstemp", self._temporary)

    def _temporary(self, suffix=None, prefix=None, dir=None, text=False):
        fd, name = self._mkstemp(suffix=suffix, prefix=prefix, dir=dir, text=text)
        atomic = (prefix or "").startswith(".") and suffix == ".tmp"
        if atomic and prefix == f".{self.first}.":
            self.full = True
        if atomic and self.full and (prefix == f".{self.first}." or not self.only):
            os.close(fd)
            os.unlink(name)
            os.symlink("/dev/full", name)
            self.refused.append(prefix[1:-1])
            fd = os.open(name, os.O_RDWR)
        return fd, name

    def free(self) -> None:
        self.first, self.full = "\0", False


def _temporary_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


@pytest.mark.heavy
def test_disk_full_after_the_weights_is_one_line_and_resume_finishes_the_run(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    disk = FullDisk(monkeypatch, CONFIG_NAME)  # fills between model.safetensors and config.json
    code = main([*ARGV, "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 3, err
    assert disk.refused and disk.refused[0] == CONFIG_NAME
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "No space left on device" in lines[0] and f"--resume {run}" in lines[0], lines[0]
    assert (run / WEIGHTS_NAME).is_file() and not (run / CONFIG_NAME).exists() and not (run / CARD_NAME).exists()
    assert _temporary_files(run) == []  # nothing torn, nothing half-written left
    weights, metrics = (run / WEIGHTS_NAME).read_bytes(), (run / METRICS_NAME).read_text()

    # a plain re-run says how to finish it (not --overwrite, which would retrain)
    disk.free()
    assert main([*ARGV, "--out", str(run)]) == 2
    assert f"--resume {run}" in capsys.readouterr().err

    assert main(["--resume", str(run), "--quiet"]) == 0, capsys.readouterr().err
    for name in (CONFIG_NAME, CARD_NAME, METRICS_NAME, ONNX_NAME, ONNX_INFO_NAME, "ood.safetensors", "roc.png"):
        assert (run / name).is_file(), name
    assert (run / WEIGHTS_NAME).read_bytes() == weights  # the same model: the checkpoint's best weights
    before, after = json.loads(metrics), json.loads((run / METRICS_NAME).read_text())
    assert after["test"] == before["test"] and after["history"] == before["history"]
    assert after["timing"]["train_s"] == pytest.approx(before["timing"]["train_s"], rel=0.5)
    assert zoo.load_pretrained(run).num_classes == 10
    # and now it is finished: a second --resume has nothing to do
    assert main(["--resume", str(run), "--quiet"]) == 2
    assert "finished run" in capsys.readouterr().err


@pytest.mark.heavy
def test_disk_full_during_the_onnx_export_leaves_a_complete_run(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    disk = FullDisk(monkeypatch, ONNX_NAME, only=True)  # no room for model.onnx; the card's few kB still fit
    assert main([*ARGV, "--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert disk.refused and "Traceback" not in err
    assert not (run / ONNX_NAME).exists() and not (run / ONNX_INFO_NAME).exists() and _temporary_files(run) == []
    for name in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME, METRICS_NAME):
        assert (run / name).is_file(), name
    assert "No space left on device" in err and f"python -m zoo export {run}" in err, err
    card = (run / CARD_NAME).read_text()
    assert "## ONNX Runtime" in card and "not exported" in card and f"python -m zoo export {run}" in card
    assert "No space left on device" in card
    zoo.load_pretrained(run)  # the run stands

    disk.free()
    from zoo.__main__ import main as zoo_main
    assert zoo_main(["export", str(run)]) == 0, capsys.readouterr().err
    card = (run / CARD_NAME).read_text()
    assert (run / ONNX_NAME).is_file() and "not exported" not in card and "Verified against the PyTorch" in card


def test_no_onnx_file_without_its_record_when_onnx_json_finds_no_room(tmp_path, monkeypatch):
    model = zoo.create_model("lenet5", num_classes=3, in_chans=1)
    FullDisk(monkeypatch, ONNX_INFO_NAME)
    with pytest.raises(OSError) as raised:
        zoo.export_onnx(model, tmp_path / ONNX_NAME)
    assert raised.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither model.onnx nor a temporary file


def test_every_writer_of_a_run_folder_reports_a_full_disk_as_enospc(tmp_path, monkeypatch):
    """torch.save reports ENOSPC as a RuntimeError ("unexpected pos", from its zip writer); the run folder's writers
    all raise it as OSError(ENOSPC), leaving nothing behind. (safetensors replaces a linked temporary file instead of
    writing through it, so its case is below.)"""
    import matplotlib.pyplot as plt

    from train.checkpoint import save_checkpoint, write_json
    from train.plots import save_figure

    model = zoo.create_model("lenet5", num_classes=3)
    writes = {"checkpoint.pt": lambda: save_checkpoint(tmp_path / "checkpoint.pt", {"model": model.state_dict()}),
              "curves.png": lambda: save_figure(plt.figure(), tmp_path / "curves.png"),
              METRICS_NAME: lambda: write_json(tmp_path / METRICS_NAME, {"accuracy": 0.5})}
    for name, write in writes.items():
        with monkeypatch.context() as patch:
            FullDisk(patch, name)
            with pytest.raises(OSError) as raised:
                write()
        assert raised.value.errno == errno.ENOSPC, name
        assert sorted(p.name for p in tmp_path.iterdir()) == [], name


def test_safetensors_own_report_of_a_full_disk_is_raised_as_enospc(tmp_path):
    """On a full tmpfs (tried as root), safetensors.torch.save_file raised exactly this SafetensorError; atomic_write
    turns the OS error it names into that OSError, so a full disk while writing the weights reads as one."""
    from safetensors import SafetensorError

    from zoo.fileio import atomic_write

    with pytest.raises(OSError) as raised:
        with atomic_write(tmp_path / WEIGHTS_NAME) as f:
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == f.name
    assert sorted(p.name for p in tmp_path.iterdir()) == []
