"""`python -m train ... --push-to-hub OWNER/NAME`: the finished run goes to the Hub; a bad target fails first.

The Hub is tests/hub_server.py on 127.0.0.1, selected as in tests/test_hub_remote.py (the constants that
HF_ENDPOINT / HF_HOME set at import, patched in-process).
"""
import hashlib
from pathlib import Path

import pytest
from huggingface_hub import constants

import zoo
from hub_server import HubServer, point_client_at
from train import main

ALICE, BAD = "hf_alice_write_0123456789abcdef", "hf_revoked_5555aaaa5555bbbb"
TRAIN = ["--arch", "lenet5", "--data", "digits", "--epochs", "1", "--quiet"]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    with HubServer(tokens={ALICE: "alice"}) as server:
        point_client_at(monkeypatch, server.endpoint, home)
        yield server


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_train_pushes_the_finished_run(hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", ALICE)
    out = tmp_path / "run"
    assert main(TRAIN + ["--out", str(out), "--push-to-hub", "alice/demo", "--revision", "exp",
                         "--commit-message", "digits, one epoch"]) == 0
    head = hub.repos["alice/demo"].resolve("exp")
    assert head.message == "digits, one epoch"
    published = {name for name in head.files if name != ".gitattributes"}
    assert {"model.safetensors", "config.json", "README.md", "metrics.json", "split.json",
            "run_config.yaml", "curves.png"} <= published
    assert "checkpoint.pt" not in published and "checkpoint.pt" in _digest(out)
    assert all(head.files[name] == (out / name).read_bytes() for name in published)
    assert b"alice/demo" not in head.files["run_config.yaml"]  # publishing is no part of the repeatable run
    assert ALICE not in capsys.readouterr().out
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "fresh-cache"))
    model = zoo.load_pretrained("alice/demo", revision="exp")
    assert model.pretrained_cfg["label_names"] == [str(d) for d in range(10)]


def test_a_bad_push_target_fails_before_training(hub, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert main(TRAIN + ["--out", str(out), "--push-to-hub", "alice/demo"]) == 2  # no token at all
    assert "no Hugging Face token" in capsys.readouterr().err
    monkeypatch.setenv("HF_TOKEN", ALICE)
    assert main(TRAIN + ["--out", str(out), "--push-to-hub", "alice-demo"]) == 2
    assert "is not of the form OWNER/NAME" in capsys.readouterr().err
    assert not out.exists() and hub.requests == []  # nothing trained, nothing sent


def test_a_refused_token_leaves_a_complete_run_to_push_later(hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", BAD)  # well-formed but revoked: only the Hub can tell
    out = tmp_path / "run"
    assert main(TRAIN + ["--out", str(out), "--push-to-hub", "alice/demo"]) == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and f"push it later with python -m train.push {out} alice/demo" in err
    assert BAD not in err and "alice/demo" not in hub.repos
    assert {"model.safetensors", "config.json", "README.md", "metrics.json"} <= set(_digest(out))
    zoo.load_pretrained(out)
