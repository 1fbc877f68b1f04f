"""The app towards remote users: no server paths nor the list of every model id in what it says, every
handler that reads an image under the comparisons' concurrency limit, and uploads deleted after their
lifetime (ZOO_APP_UPLOAD_TTL_S)."""
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import gradio as gr
import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import zoo  # noqa: E402
from _serve import browser, needs_chromium, serve  # noqa: E402, F401  (browser: the fixture)
from ui.public_errors import public_message  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_public_message_shortens_server_paths_only():
    weights = "/srv/zoo/weights"
    cases = {
        f"{weights}/run-a/config.json: num_classes must be a whole number": "run-a/config.json: num_classes must",
        f"{weights}/run-b is a symbolic link to a folder outside {weights}; move it":
            "run-b is a symbolic link to a folder outside the weights folder; move it",
        "/home/me/.cache/huggingface/hub/models--o--n/snapshots/abc/config.json is not valid JSON.":
            "…/config.json is not valid JSON.",
        "'/tmp/gradio/0f3a/scan.png' is not an image": "'…/scan.png' is not an image",
        f"{weights}2/other/config.json": "…/config.json",  # a longer name that starts the same is not the folder
    }
    for text, expected in cases.items():
        assert public_message(text, weights).startswith(expected), (text, public_message(text, weights))
    kept = ("see https://huggingface.co/owner/name/tree/main", "ratio 20:1, 3/4 of classes", "run-a/config.json",
            "input of at least 32x32 pixels")
    for text in kept:
        assert public_message(text, weights) == text
    assert public_message(None) is None


def _run(weights: Path, name: str) -> Path:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = zoo.create_model("lenet5", num_classes=3, mode="scratch")
    return zoo.save_pretrained(model.eval(), weights / name, label_names=["a", "b", "c"], dataset="digits")


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    from ui.settings import Settings
    from ui.state import ComparisonApp

    weights = tmp_path_factory.mktemp("weights")
    _run(weights, "good-a"), _run(weights, "good-b")
    broken = _run(weights, "labels-wrong")
    config = json.loads((broken / "config.json").read_text())
    config["label_names"] = ["a"]
    (broken / "config.json").write_text(json.dumps(config))
    cache = shutil.copytree(weights / "good-a", tmp_path_factory.mktemp("cache") / "snapshot")
    (weights / "good-b" / "config.json").unlink()  # a link out of the weights folder: listed, not followed
    os.symlink(cache / "config.json", weights / "good-b" / "config.json")
    return ComparisonApp(Settings(weights=weights, examples_dir=tmp_path_factory.mktemp("examples")))


def _no_server_path(text: str, state) -> None:
    for secret in (str(state.settings.weights), tempfile.gettempdir() + "/"):
        assert secret not in text, text


def test_reasons_and_records_name_run_folders_not_server_paths(state):
    reasons = {e.id: e.reason for e in state.entries.values()}
    assert reasons["labels-wrong"].startswith("labels-wrong/config.json: label_names has 1 names for 3 classes")
    assert "good-b/config.json is a symbolic link to …/config.json, outside the weights folder" in reasons["good-b"]
    example = str(state.examples[0][0])
    comparison = state.compare(example, ["good-a", "labels-wrong", "good-b", "no-such-model"], cam=False)
    text = json.dumps(comparison.records()) + comparison.summary.markdown
    _no_server_path(text, state)
    errors = {r["model"]: r["error"] for r in comparison.records()}
    assert errors["good-a"] is None and "labels-wrong/config.json: label_names has 1" in errors["labels-wrong"]
    # an unknown id: how many models there are and where they are listed, never the ids themselves
    assert "no model with id 'no-such-model'; this app offers 3 models" in errors["no-such-model"]
    assert "All models on offer" in errors["no-such-model"] and "good-a" not in errors["no-such-model"]


def test_an_upload_error_names_the_file_not_its_server_path(state, tmp_path):
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(gr.Error) as caught:
        state.read_image(str(bad))
    assert "scan.png" in caught.value.message
    _no_server_path(caught.value.message, state)
    captions = [caption for _, caption in state.model_inputs(str(state.examples[0][0]), ["good-a", "labels-wrong"])]
    assert "labels-wrong/config.json" in captions[1]
    _no_server_path(captions[1], state)


BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def test_an_upload_name_with_bidirectional_controls_is_shown_escaped(state, tmp_path):
    # "report\u202egnp.exe" displays as "reportexe.png": the override reverses what follows it
    disguised = tmp_path / "report\u202egnp.exe"
    shutil.copy(state.examples[0][0], disguised)
    _, info = state.preview(str(disguised))
    assert "**report\\u202egnp.exe**: " in info and "\u202e" not in info
    every = tmp_path / f"every{BIDI_CONTROLS}.png"
    every.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a broken PNG: its name is in the error
    with pytest.raises(gr.Error) as caught:
        state.read_image(str(every))
    message = caught.value.message
    assert not set(BIDI_CONTROLS) & set(message), message
    assert "every" + "".join(f"\\u{ord(c):04x}" for c in BIDI_CONTROLS) + ".png: " in message


@pytest.mark.heavy
@needs_chromium
def test_gradios_file_widget_shows_an_upload_name_escaped_in_chromium(browser, tmp_path):
    """gr.File shows the name it serves a file under: on the old app "report\u202egnp.exe" read "reportpng.exe"
    there (and in its download link) while the app's own text said report\\u202egnp.exe."""
    import app
    from PIL import Image
    from playwright.sync_api import expect

    demo, url = serve(app.Settings(weights=tmp_path / "none", examples_dir=tmp_path / "examples"))
    dropped, replaced = tmp_path / "report\u202egnp.exe", tmp_path / "scan\u2067\u200f1.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(dropped, format="PNG")
    Image.new("L", (30, 20), 90).save(replaced, format="PNG")
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(60_000)
    try:
        page.goto(url)
        page.locator("#compare-button").wait_for()
        name, link = page.locator("#image-file td.filename"), page.locator("#image-file a.download-link")
        for path, shown, info in ((dropped, "report\\u202egnp.exe", "PNG, 40×30 px"),
                                  (replaced, "scan\\u2067\\u200f1.png", "PNG, 30×20 px")):
            if path is dropped:  # dropped on the empty file box
                page.locator("#image-file input[type=file]").set_input_files(str(path))
            else:  # the Replace button
                with page.expect_file_chooser() as chooser:
                    page.locator("#replace-image").click()
                chooser.value.set_files(str(path))
            expect(name).to_have_attribute("aria-label", shown)
            assert "".join(name.inner_text().split()) == shown
            expect(link).to_have_attribute("download", shown)
            expect(page.locator("#image-info")).to_contain_text(f"{shown}: {info}")
            text = page.evaluate("() => document.querySelector('#image-file').outerHTML")
            assert not set(BIDI_CONTROLS) & set(text), [c for c in text if c in BIDI_CONTROLS]
    finally:
        page.close()
        demo.close()


def test_every_handler_that_reads_an_image_shares_the_comparison_limit(tmp_path):
    import app

    settings = app.Settings(weights=tmp_path / "none", examples_dir=tmp_path / "examples", concurrency=2)
    demo = app.build_demo(settings)
    image_fns = [fn for fn in demo.fns.values()
                 if any(isinstance(c, gr.File) and not isinstance(c, gr.UploadButton) for c in fn.inputs)
                 or any(isinstance(c, (gr.Image, gr.Plot)) for c in fn.outputs)]
    names = {fn.name for fn in image_fns}
    assert {"upload_preview", "window_preview", "model_inputs", "compare", "run_api", "selection", "_show"} <= names, names
    training = {"on_train", "on_curve", "on_api"}  # the Train tab: one job per process, beside the comparisons
    assert training <= names, names
    batch = {"on_batch"}  # the Batch tab: one batch job per process (issue 24), queued with its position shown
    assert batch <= names, names
    for fn in image_fns:
        expected = ("training", 1) if fn.name in training else ("batch", 1) if fn.name in batch else ("inference", 2)
        assert (fn.concurrency_id, fn.concurrency_limit) == expected, fn.name
    assert demo.delete_cache == (300, 3600)


def test_uploads_are_deleted_after_their_lifetime(tmp_path, monkeypatch):
    import app
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from ui.settings import Settings
    monkeypatch.setenv("ZOO_APP_UPLOAD_TTL_S", "1")
    monkeypatch.setenv("ZOO_APP_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setenv("ZOO_APP_EXAMPLES", str(tmp_path / "examples"))
    settings = Settings.from_env()
    assert settings.upload_ttl_s == 1 and settings.delete_cache == (1, 1)
    demo, url = serve(settings)
    try:
        upload = tmp_path / "upload.png"
        shutil.copy(demo.zoo_app.examples[0][0], upload)
        with pytest.raises(AppError, match="Select 2 to 6 models"):  # the file is uploaded all the same
            Client(url, verbose=False).predict(handle_file(str(upload)), ["one"], api_name="/compare")
        uploaded = [Path(p) for p in demo.upload_file_set if Path(p).name == "upload.png"]
        assert uploaded and all(p.exists() for p in uploaded)
        deadline = time.monotonic() + 15
        while any(p.exists() for p in uploaded) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not any(p.exists() for p in uploaded), "the upload outlived ZOO_APP_UPLOAD_TTL_S"
    finally:
        demo.close()
    monkeypatch.setenv("ZOO_APP_UPLOAD_TTL_S", "0")
    with pytest.raises(app.SettingsError, match="ZOO_APP_UPLOAD_TTL_S='0' must be at least 1"):
        Settings.from_env()


KILLED_MID_WRITE = r"""
import os, signal, sys
from zoo.fileio import atomic_write
with atomic_write(sys.argv[1]) as f:
    f.write(b"half an ONNX file")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of the write
"""


def test_app_start_deletes_what_a_killed_export_left_in_the_cache_and_nothing_else(tmp_path, monkeypatch):
    import subprocess
    import sys

    import zoo._hub
    from ui.settings import Settings
    from ui.state import ComparisonApp

    cache = tmp_path / "zoo-cache"
    monkeypatch.setattr(zoo._hub, "CACHE_DIR", cache)
    export = cache / "onnx" / "0123abcd-4567-v2"  # where the app's cached export of a run goes
    export.mkdir(parents=True)
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(export / "model.onnx")], cwd=ROOT)
    assert killed.returncode == -9
    orphans = list(export.glob(".model.onnx.*.tmp"))
    assert len(orphans) == 1 and not (export / "model.onnx").exists()
    an_hour_ago = time.time() - 3600
    os.utime(orphans[0], (an_hour_ago, an_hour_ago))  # left by an earlier app process
    (export / ".onnx.json.live.tmp").write_text("{}")  # being written right now by another app process
    (cache / "onnx" / "verified").mkdir()
    finished = cache / "onnx" / "verified" / "record.json"
    finished.write_text("{}")
    outside = tmp_path / "not-the-cache.tmp"
    outside.write_text("keep")
    os.symlink(outside, cache / ".a-link.tmp")
    for path in (finished, outside):
        os.utime(path, (an_hour_ago, an_hour_ago), follow_symlinks=True)
    ComparisonApp(Settings(weights=tmp_path / "none", examples_dir=tmp_path / "examples"))
    assert not orphans[0].exists(), "the app start left the orphaned temporary file of a killed export"
    assert (export / ".onnx.json.live.tmp").exists() and finished.exists()
    assert (cache / ".a-link.tmp").is_symlink() and outside.read_text() == "keep"


def test_every_setting_is_documented_on_the_settings_page():
    from ui.settings import ENVIRONMENT_HELP
    page = (ROOT / "docs" / "settings.md").read_text()
    names = re.findall(r"ZOO_APP_\w+", ENVIRONMENT_HELP)
    assert "ZOO_APP_UPLOAD_TTL_S" in names
    assert [n for n in names if f"`{n}`" not in page] == []
