"""A disk that fills during a run's final writes: one line (no traceback), no torn file, and the run is finished by
`--resume` (card, metrics, ONNX, trust rewritten from its checkpoint) or, when only the ONNX export found no room, the
run stands and says how to export it later.

ENOSPC is injected where a real full disk reports it for every file of a run folder: the os.fsync of
zoo.fileio.atomic_write's temporary file (ext4 and xfs report a delayed allocation that found no room at fsync at
the latest; tmpfs at write). It is a real OSError(ENOSPC) from the real call path, raised in this process, so the
tests need neither root nor a small filesystem (a tmpfs mount needs privileges CI does not have).
"""
import errno
import os
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
    """os.fsync raising ENOSPC once the temporary file of `first` (atomic_write's ``.<name>.<random>.tmp``) is synced:
    from then on for every file (the disk stays full) or, with ``only``, for that file alone (room for small files,
    not for this one). ``free()`` makes room again."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, first: str, only: bool = False):
        self.first, self.only, self.full, self.refused = first, only, False, []
        self._fsync = os.fsync
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        name = Path(path).name
        temporary = name.startswith(".") and name.endswith(".tmp")
        if temporary and name.startswith(f".{self.first}."):
            self.full = True
        if temporary and self.full and (name.startswith(f".{self.first}.") or not self.only):
            self.refused.append(name)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        self._fsync(fd)

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
    assert disk.refused and disk.refused[0].startswith(f".{CONFIG_NAME}.")
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
    import json
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
