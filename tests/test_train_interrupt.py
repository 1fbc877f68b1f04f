"""Every interrupted run can be resumed and ends exactly like an uninterrupted one.

Two run folders are interrupted several times each, then resumed to the end: SIGKILL before the first
checkpoint (as soon as run_config.yaml exists), SIGTERM during feature extraction (a clean stop, exit
130; once in a child process, once in this process after the first split's features were stored in the
disk cache), SIGKILL during extraction after two splits were stored, SIGKILL after the first checkpoint.
Each `--resume` finishes with the metrics and history of an uninterrupted run. (The kills are timed by
watching the run folder's files and the progress bars on stderr.)
Also: a corrupt or foreign checkpoint.pt and non-finite options are refused with a clear message.
"""
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train.engine
from train import TrainError, TrainingInterrupted, main, run_training

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:mode='feature-extraction' freezes")
# a frozen random LeNet-5 whose classifier trains on cached features: extraction ~1 s, epochs much less
OPTIONS = dict(arch="lenet5", mode="feature-extraction", pretrained=False, data="digits", epochs=2,
               batch_size=8, lr=0.01, seed=1, cache="disk", workers=0)


def _command(out: Path, cache: Path) -> list[str]:
    command = [sys.executable, "-m", "train", "--out", str(out), "--cache-dir", str(cache)]
    for key, value in OPTIONS.items():
        flag = "--" + key.replace("_", "-")
        command += [flag, str(value).lower()] if isinstance(value, bool) else [flag, str(value)]
    return command


def _comparable(history):
    return [{k: v for k, v in h.items() if "time" not in k and "per_s" not in k} for h in history]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    return run_training(out=str(root / "run"), cache_dir=str(root / "cache"), quiet=True, **OPTIONS)


def _interrupt(command: list[str], ready, sig: int) -> tuple[int, str]:
    """Run `command` (not quiet: progress bars on stderr), send `sig` once `ready(stderr so far)` holds."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: process.stderr.read(32), "")),
                              daemon=True)
    reader.start()
    deadline = time.time() + 180
    while not ready("".join(chunks)):
        assert process.poll() is None, f"the run ended before the moment to interrupt it: {''.join(chunks)[-2000:]}"
        assert time.time() < deadline, "timed out waiting for the moment to interrupt the run"
        time.sleep(0.005)
    process.send_signal(sig)
    code = process.wait(timeout=120)
    reader.join(timeout=10)
    return code, "".join(chunks)


def _resume_matches(run_dir: Path, reference) -> None:
    resumed = run_training(resume=str(run_dir), resume_overrides={"quiet": True})
    assert resumed.metrics == reference.metrics
    assert _comparable(resumed.history) == _comparable(reference.history)


def test_killed_before_its_first_checkpoint_and_stopped_during_extraction_then_resumed(tmp_path, reference):
    out, cache = tmp_path / "run", tmp_path / "cache"
    # 1. SIGKILL as soon as the run folder exists: no checkpoint, nothing extracted
    code, _ = _interrupt(_command(out, cache), lambda _: (out / "run_config.yaml").is_file(), signal.SIGKILL)
    assert code == -signal.SIGKILL and not (out / "checkpoint.pt").exists()
    # a plain rerun points at --resume, which restarts the run from its saved configuration
    assert main(["--out", str(out), "--arch", "lenet5", "--data", "digits"]) == 2
    # 2. SIGTERM while the restarted run extracts features: a clean stop, exit 130, no traceback
    resume = [sys.executable, "-m", "train", "--resume", str(out)]
    code, stderr = _interrupt(resume, lambda err: "features train" in err, signal.SIGTERM)
    assert code == 130, stderr[-2000:]
    assert "SIGTERM received during feature extraction" in stderr and "--resume" in stderr, stderr[-2000:]
    assert "Traceback" not in stderr and not (out / "checkpoint.pt").exists()
    _resume_matches(out, reference)


def test_stopped_and_killed_during_extraction_and_after_a_checkpoint_then_resumed(tmp_path, reference, monkeypatch):
    out, cache = tmp_path / "run", tmp_path / "cache"
    extracted = []
    real = train.engine.extract_features

    def stop_at_val(model, level, batches, device, total=None, desc="", progress=True):
        extracted.append(desc)
        if extracted == ["features train", "features val"]:  # train done and stored: a real SIGTERM now
            os.kill(os.getpid(), signal.SIGTERM)
        return real(model, level, batches, device, total=total, desc=desc, progress=progress)

    # 1. SIGTERM (in this process) after the train split's features were stored: they are kept
    monkeypatch.setattr(train.engine, "extract_features", stop_at_val)
    with pytest.raises(TrainingInterrupted, match=r"SIGTERM received during feature extraction \(val split, "
                                                  r"0 batches done\).*--resume.*features of the train split.*kept"):
        run_training(out=str(out), cache_dir=str(cache), quiet=False, **OPTIONS)  # resumed with progress bars
    monkeypatch.undo()
    assert extracted == ["features train", "features val"] and not (out / "checkpoint.pt").exists()
    assert set(load_file(str(next(cache.glob("*.safetensors"))))) == {"train"}
    # 2. SIGKILL while the resumed run extracts the test split: train (cached) and val are kept
    resume = [sys.executable, "-m", "train", "--resume", str(out)]
    code, stderr = _interrupt(resume, lambda err: "features test" in err, signal.SIGKILL)
    assert code == -signal.SIGKILL and "features train" not in stderr  # train came from the cache
    assert {"train", "val"} <= set(load_file(str(next(cache.glob("*.safetensors")))))
    # 3. SIGKILL after the first checkpoint
    code, _ = _interrupt(resume, lambda _: (out / "checkpoint.pt").is_file(), signal.SIGKILL)
    assert code == -signal.SIGKILL and not (out / "model.safetensors").exists()
    _resume_matches(out, reference)


def test_corrupt_or_foreign_checkpoint_is_refused_clearly(tmp_path, reference, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run_config.yaml").write_text((reference.run_dir / "run_config.yaml").read_text())
    good = (reference.run_dir / "checkpoint.pt").read_bytes()

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    foreign = tmp_path / "foreign.pt"
    torch.save({"model": Payload()}, foreign)
    for content, phrase in ((good[: len(good) // 2], "is unreadable or corrupt"),
                            (b"\x00" * 100, "is unreadable or corrupt"),
                            (foreign.read_bytes(), "not one this trainer wrote: it holds Python objects"),
                            (pickle.dumps({"model": 1}, protocol=2), "unreadable or corrupt|not one this trainer")):
        (out / "checkpoint.pt").write_bytes(content)
        assert main(["--resume", str(out)]) == 2
        err = capsys.readouterr()
        assert f"checkpoint {out / 'checkpoint.pt'}" in err.err and "--overwrite" in err.err
        assert any(p in err.err for p in phrase.split("|")), err.err
        assert "weights_only" not in err.err and "Traceback" not in err.err
        assert "this must never run" not in err.out
    torch.save({"format": 1, "state": {}}, out / "checkpoint.pt")  # readable, but not ours
    with pytest.raises(TrainError, match=r"not a checkpoint of this trainer.*'model'"):
        run_training(resume=str(out))


@pytest.mark.parametrize("option, value", [("--lr", "nan"), ("--lr", "inf"), ("--lr", "-0.1"), ("--lr", "0"),
                                           ("--momentum", "nan"), ("--weight-decay", "inf")])
def test_non_finite_or_negative_options_are_refused_before_anything_is_written(tmp_path, capsys, option, value):
    out = tmp_path / "run"
    assert main(["--arch", "lenet5", "--data", "digits", "--out", str(out), option, value]) == 2
    err = capsys.readouterr().err
    assert option in err and "Traceback" not in err
    assert not out.exists()
