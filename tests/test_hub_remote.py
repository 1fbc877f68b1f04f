"""Publishing to and downloading from the Hub, end to end with the real huggingface_hub client.

The Hub is tests/hub_server.py on 127.0.0.1; huggingface_hub is pointed at it the way HF_ENDPOINT does
(in-process by patching the constants it read from the environment at import, in the subprocess test by
the environment itself). Every cache, token file and login lives in tmp_path.
"""
import hashlib
import logging
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
import traceback
import types
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import HfApi, constants, file_download
from PIL import Image

import zoo
from hub_server import HubServer, point_client_at
from train.push import PushError, PushFailedError, main, push_run

ALICE, BOB, BAD = "hf_alice_write_0123456789abcdef", "hf_bob_write_fedcba9876543210", "hf_revoked_5555aaaa5555bbbb"
PUBLISHED = ["README.md", "config.json", "curves.png", "metrics.json", "model.safetensors", "run_config.yaml",
             "split.json"]
LABELS = ["benign", "malignant", "normal"]


# --- fixtures -----------------------------------------------------------------------------------------

def _fresh_cache(monkeypatch, tmp_path: Path, name: str) -> Path:
    cache = tmp_path / name
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with HubServer(tokens={ALICE: "alice", BOB: "bob"}) as server:
        point_client_at(monkeypatch, server.endpoint, tmp_path / "hf")
        yield server


def _make_run(folder: Path, seed: int):
    """A finished run folder as python -m train writes it, plus files that must never be published."""
    torch.manual_seed(seed)
    model = zoo.create_model("lenet5", num_classes=3).eval()
    zoo.save_pretrained(model, folder, label_names=LABELS, dataset="digits", metrics={"accuracy": 0.9})
    (folder / "metrics.json").write_text('{"headline": {"accuracy": 0.9}}\n')
    (folder / "split.json").write_text('{"seed": 0, "train": ["a.png"], "val": [], "test": ["b.png"]}\n')
    (folder / "run_config.yaml").write_text("arch: lenet5\ndata: digits\n")
    Image.new("RGB", (8, 8), "white").save(folder / "curves.png")
    torch.save({"model": model.state_dict()}, folder / "checkpoint.pt")
    (folder / "skipped_files.json").write_text("[]\n")
    (folder / "features").mkdir()
    (folder / "features" / "train.safetensors").write_bytes(b"feature cache")
    return model


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {name: (root / name, _make_run(root / name, seed)) for name, seed in (("v1", 1), ("v2", 2))}


@pytest.fixture
def run(runs):
    return runs["v1"]


X = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))


def _same(a, b) -> bool:
    with torch.no_grad():
        return torch.equal(a.eval()(X), b.eval()(X))


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- push ---------------------------------------------------------------------------------------------

def test_push_uploads_exactly_the_publishable_files(hub, run):
    run_dir, _ = run
    before = _digest(run_dir)
    assert push_run(run_dir, "alice/lenet5-digits", token=ALICE) == PUBLISHED
    repo = hub.repos["alice/lenet5-digits"]
    head = repo.resolve("main")
    assert sorted(head.files) == sorted(PUBLISHED + [".gitattributes"])  # no checkpoint, cache, skip list
    assert all(head.files[name] == (run_dir / name).read_bytes() for name in PUBLISHED)
    assert head.message == "Upload v1: lenet5 (scratch)" and not repo.private
    assert _digest(run_dir) == before


def test_dry_run_lists_the_files_and_sends_nothing(hub, run, capsys):
    run_dir, _ = run
    assert main([str(run_dir), "alice/lenet5-digits", "--dry-run"]) == 0  # needs no token either
    out = capsys.readouterr().out
    assert all(name in out for name in PUBLISHED)
    assert "left out (not publishable): checkpoint.pt, features/, skipped_files.json" in out
    assert hub.requests == [] and hub.repos == {}


def test_cli_push_to_a_branch_with_the_stored_login(hub, run, capsys):
    Path(constants.HF_TOKEN_PATH).parent.mkdir(parents=True)
    Path(constants.HF_TOKEN_PATH).write_text(ALICE)  # what `hf auth login` stores
    assert main([str(run[0]), "alice/cli", "--revision", "exp-1", "--commit-message", "first try"]) == 0
    repo = hub.repos["alice/cli"]
    assert repo.resolve("exp-1").message == "first try" and sorted(repo.resolve("main").files) == [".gitattributes"]
    assert f"pushed alice/cli@exp-1: commit {repo.branches['exp-1']}" in capsys.readouterr().out


def test_private_push_needs_the_token_to_download(hub, run, monkeypatch, tmp_path):
    run_dir, model = run
    push_run(run_dir, "alice/secret", private=True, token=ALICE)
    assert hub.repos["alice/secret"].private
    with pytest.raises(zoo.ZooError, match="does not exist, or it is private"):
        zoo.load_pretrained("alice/secret")
    monkeypatch.setenv("HF_TOKEN", ALICE)
    assert _same(zoo.load_pretrained("alice/secret"), model)
    push_run(run_dir, "alice/open", token=ALICE)
    with pytest.raises(PushError, match="already exists and is public; --private does not change"):
        push_run(run_dir, "alice/open", private=True, token=ALICE)


# --- push failures ------------------------------------------------------------------------------------

@pytest.fixture
def all_logs(caplog, monkeypatch):
    """Every log record at DEBUG, huggingface_hub's (a curl line per request with HF_DEBUG) and ours."""
    import train.push

    monkeypatch.setattr(constants, "HF_DEBUG", True)
    monkeypatch.setattr(train.push, "configure_logging", lambda quiet=False: None)  # keep DEBUG
    for name in ("huggingface_hub", "train"):
        caplog.set_level(logging.DEBUG, logger=name)
        logging.getLogger(name).addHandler(caplog.handler)  # "train" may not propagate to the root
    yield caplog
    for name in ("huggingface_hub", "train"):
        logging.getLogger(name).removeHandler(caplog.handler)


def _push_cli(args, capsys, caplog) -> tuple[int, str]:
    """Exit status and everything the push printed or logged."""
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out + captured.err + caplog.text


def test_failed_pushes_exit_nonzero_and_leave_the_folder_intact(hub, run, monkeypatch, capsys, all_logs, tmp_path):
    run_dir, _ = run
    before = _digest(run_dir)
    caplog = all_logs
    bobs_commit = hub.add_repo("bob/taken", {"README.md": b"bob's model"})

    def failing(args, env_token, match, status=1):
        if env_token is None:
            monkeypatch.delenv("HF_TOKEN", raising=False)
        else:
            monkeypatch.setenv("HF_TOKEN", env_token)
        code, text = _push_cli(args, capsys, caplog)
        assert code == status and match in text, text
        for token in (ALICE, BOB, BAD):
            assert token not in text
        caplog.clear()

    failing([run_dir, "alice/x"], BAD, "the Hub refused the token (HTTP 401 Unauthorized)")
    failing([run_dir, "alice/x"], None, "no Hugging Face token: set HF_TOKEN", status=2)
    failing([run_dir, "bob/taken"], ALICE, "may not write to bob/taken (HTTP 403 Forbidden)")
    failing([run_dir, "bob/new"], ALICE, "may not write to bob/new (HTTP 403 Forbidden)")
    hub.drop_commits = True
    failing([run_dir, "alice/x"], ALICE, "was interrupted (RemoteProtocolError")
    hub.drop_commits = False
    assert sorted(hub.repos["alice/x"].resolve("main").files) == [".gitattributes"]  # nothing half-committed
    assert hub.repos["bob/taken"].resolve("main").oid == bobs_commit
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.perf_counter()
    failing([run_dir, "alice/x"], ALICE, "cannot reach the Hub at http://127.0.0.1:")
    assert time.perf_counter() - start < 5
    assert _digest(run_dir) == before

    incomplete = tmp_path / "incomplete"
    shutil.copytree(run_dir, incomplete)
    (incomplete / "model.safetensors").unlink()
    sent = len(hub.requests)
    failing([incomplete, "alice/x"], ALICE, "has no model.safetensors, so it is not a finished run", status=2)
    assert len(hub.requests) == sent  # refused before any network call


def test_the_token_is_in_no_exception_output_or_file(hub, run, capsys, all_logs):
    run_dir, _ = run
    with pytest.raises(PushFailedError) as bad:
        push_run(run_dir, "alice/tokens", token=BAD)
    hub.drop_commits = True
    with pytest.raises(PushFailedError) as dropped:
        push_run(run_dir, "alice/tokens", token=ALICE)
    hub.drop_commits = False
    push_run(run_dir, "alice/tokens", token=ALICE)
    texts = ["".join(traceback.format_exception(e.value)) for e in (bad, dropped)]
    captured = capsys.readouterr()
    texts += [captured.out, captured.err, all_logs.text]
    assert "curl -X POST" in all_logs.text  # the debug log was on
    texts += [p.read_bytes().decode("latin-1") for p in run_dir.rglob("*") if p.is_file()]
    texts += [data.decode("latin-1") for data in hub.repos["alice/tokens"].resolve("main").files.values()]
    assert "401" in texts[0] and "interrupted" in texts[1]
    assert not [t for t in texts if ALICE in t or BAD in t]


def test_a_token_inside_a_published_file_is_refused(hub, run, tmp_path):
    leaky = tmp_path / "leaky"
    shutil.copytree(run[0], leaky)
    (leaky / "run_config.yaml").write_text(f"arch: lenet5\nhub_token: {ALICE}\n")
    with pytest.raises(PushError, match="run_config.yaml contains your Hugging Face token") as e:
        push_run(leaky, "alice/leaky", token=ALICE)
    assert ALICE not in str(e.value) and hub.requests == []


@pytest.mark.parametrize("repo_id", ["noslash", "a/b/c", "a/b--c", "a/.b", "a/" + "x" * 97])
def test_a_bad_repo_id_is_refused_before_any_network_call(repo_id, run):
    with pytest.raises(PushError, match="repo id"):
        push_run(run[0], repo_id, token=ALICE)
    with pytest.raises(zoo.ZooError, match="neither a model folder nor a Hub repo id|is not a Hub repo id"):
        zoo.load_pretrained(repo_id)


# --- download and load --------------------------------------------------------------------------------

def test_download_loads_with_the_zoo_and_with_timm(hub, run, monkeypatch, tmp_path):
    run_dir, model = run
    push_run(run_dir, "alice/lenet5-digits", token=ALICE)
    cache = _fresh_cache(monkeypatch, tmp_path, "fresh")
    loaded = zoo.load_pretrained("alice/lenet5-digits")
    assert _same(loaded, model) and loaded.label_names == LABELS and not loaded.training
    snapshot = next((cache / "models--alice--lenet5-digits" / "snapshots").iterdir())
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "model.safetensors"]  # nothing else read
    assert _same(timm.create_model("hf-hub:alice/lenet5-digits", pretrained=True), model)


def test_pinned_revisions_branch_tag_and_commit(hub, runs, monkeypatch, tmp_path):
    (v1_dir, v1), (v2_dir, v2) = runs["v1"], runs["v2"]
    push_run(v1_dir, "alice/pinned", token=ALICE)
    first = hub.repos["alice/pinned"].branches["main"]
    HfApi(endpoint=constants.ENDPOINT, token=ALICE).create_tag("alice/pinned", tag="v1")
    push_run(v2_dir, "alice/pinned", token=ALICE)
    push_run(v1_dir, "alice/pinned", token=ALICE, revision="stable")
    assert _same(zoo.load_pretrained("alice/pinned"), v2)
    for revision in (first, "v1", "stable"):
        assert _same(zoo.load_pretrained("alice/pinned", revision=revision), v1), revision
    assert _same(timm.create_model("hf-hub:alice/pinned@v1", pretrained=True), v1)
    for revision in ("no-such-branch", "0" * 40):
        with pytest.raises(zoo.ZooError, match=f"has no revision '{revision}'"):
            zoo.load_pretrained("alice/pinned", revision=revision)
    with pytest.raises(zoo.ZooError, match="'alice/missing' does not exist"):
        zoo.load_pretrained("alice/missing")


def test_offline_loads_from_the_cache_and_fails_at_once_without_it(hub, run, monkeypatch, tmp_path):
    run_dir, model = run
    push_run(run_dir, "alice/offline", token=ALICE)
    first = hub.repos["alice/offline"].branches["main"]
    zoo.load_pretrained("alice/offline")
    zoo.load_pretrained("alice/offline", revision=first)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    sent = len(hub.requests)
    assert _same(zoo.load_pretrained("alice/offline"), model)
    assert _same(zoo.load_pretrained("alice/offline", revision=first), model)
    assert _same(timm.create_model("hf-hub:alice/offline", pretrained=True), model)
    assert len(hub.requests) == sent  # not one request while offline
    _fresh_cache(monkeypatch, tmp_path, "empty")
    start = time.perf_counter()
    with pytest.raises(zoo.ZooError, match=r"Hub repo alice/offline at revision v2 is not in the local Hugging "
                                           r"Face cache .* HF_HUB_OFFLINE is set"):
        zoo.load_pretrained("alice/offline", revision="v2")
    assert time.perf_counter() - start < 2


def test_hub_down_loads_from_the_cache_and_fails_at_once_without_it(hub, run, monkeypatch, tmp_path):
    run_dir, model = run
    push_run(run_dir, "alice/down", token=ALICE)
    zoo.load_pretrained("alice/down")
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        constants.ENDPOINT + "/{repo_id}/resolve/{revision}/{filename}")
    assert _same(zoo.load_pretrained("alice/down"), model)
    _fresh_cache(monkeypatch, tmp_path, "empty")
    start = time.perf_counter()
    with pytest.raises(zoo.ZooError, match=r"alice/down at revision main is not in the local .* cannot be reached"):
        zoo.load_pretrained("alice/down")
    assert time.perf_counter() - start < 5


def test_a_bad_token_on_download_is_a_clear_error(hub, run, monkeypatch):
    push_run(run[0], "alice/public", token=ALICE)
    monkeypatch.setenv("HF_TOKEN", BAD)
    with pytest.raises(zoo.ZooError, match=r"refused the token \(HTTP 401\)") as e:
        zoo.load_pretrained("alice/public")
    assert BAD not in str(e.value)


class _Payload:
    """Unpickling this makes a folder: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_repo_with_only_pickle_weights_is_refused_unread(hub, run, tmp_path):
    marker = tmp_path / "unpickled"
    hub.add_repo("bob/pickled", {"config.json": (run[0] / "config.json").read_bytes(),
                                 "pytorch_model.bin": pickle.dumps(_Payload(marker))})
    with pytest.raises(zoo.ZooError, match="has no model.safetensors. The zoo .* never unpickles pytorch_model.bin"):
        zoo.load_pretrained("bob/pickled")
    assert not marker.exists()
    assert not [path for _, path in hub.requests if path.endswith("pytorch_model.bin")]


def test_an_unknown_architecture_is_refused_before_the_weights_download(hub, run):
    config = (run[0] / "config.json").read_text().replace('"architecture": "lenet5"', '"architecture": "mystery_net"')
    hub.add_repo("bob/mystery", {"config.json": config.encode(),
                                 "model.safetensors": (run[0] / "model.safetensors").read_bytes()})
    with pytest.raises(zoo.ZooError, match="names architecture 'mystery_net'.*`import zoo` registers"):
        zoo.load_pretrained("bob/mystery")
    assert not [path for _, path in hub.requests if path.endswith("model.safetensors")]


def test_an_interrupted_download_leaves_no_partial_file_and_a_retry_works(hub, run, monkeypatch, tmp_path):
    run_dir, model = run
    push_run(run_dir, "alice/flaky", token=ALICE)
    cache = _fresh_cache(monkeypatch, tmp_path, "flaky-cache")
    # huggingface_hub resumes a cut download 5 times, 1 s apart; skip the pauses
    monkeypatch.setattr(file_download, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    hub.cut_downloads = "model.safetensors"
    with pytest.raises(zoo.ZooError, match="downloading model.safetensors of Hub repo alice/flaky at revision main "
                                           "was interrupted .* Nothing partial was kept"):
        zoo.load_pretrained("alice/flaky")
    repo_cache = cache / "models--alice--flaky"
    assert not list(repo_cache.rglob("*.incomplete"))
    assert not list(repo_cache.glob("snapshots/*/model.safetensors"))
    assert len(list(repo_cache.glob("blobs/*"))) == 1  # config.json only
    hub.cut_downloads = None
    assert _same(zoo.load_pretrained("alice/flaky"), model)


def test_hf_hub_offline_from_the_environment(hub, run, tmp_path):
    """A fresh interpreter with HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE=1 set, as a user would."""
    run_dir, _ = run
    push_run(run_dir, "alice/env", token=ALICE)
    zoo.load_pretrained("alice/env")  # fills the cache
    sent = len(hub.requests)
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_CACHE": constants.HF_HUB_CACHE, "HF_HUB_OFFLINE": "1"}
    env.pop("HF_TOKEN", None)
    script = (f"import timm, torch, zoo\n"
              f"x = torch.randn(2, 1, 32, 32)\n"
              f"local = zoo.load_pretrained({str(run_dir)!r})\n"
              f"hub = zoo.load_pretrained('alice/env')\n"
              f"stock = timm.create_model('hf-hub:alice/env', pretrained=True).eval()\n"
              f"assert torch.equal(local(x), hub(x)) and torch.equal(local(x), stock(x))\n"
              f"try:\n    zoo.load_pretrained('alice/never-downloaded')\n"
              f"except zoo.ZooError as e:\n    print(e)\n")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    assert "alice/never-downloaded at revision main is not in the local Hugging Face cache" in result.stdout
    assert "HF_HUB_OFFLINE is set" in result.stdout
    assert len(hub.requests) == sent
