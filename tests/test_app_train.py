"""The Train tab and the /train API: a learner's own images (a zip built here from the packaged chest X-rays, or
class by class in Chromium) train real models through train.lesson, the models answer /compare in the same session
only, Cancel leaves no files, and bad uploads get their message."""
import re
import os
import time
import zipfile
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from _app_zoo import build_tiny_zoo, packaged_examples  # noqa: E402
from _serve import QueueRequests, browser, needs_chromium, serve  # noqa: E402, F401  (browser: the fixture)

SMALL = dict(backbones=["efficientnet_lite0"], mode="feature-extraction", img_size=64, epochs=5)


def _xrays() -> list[tuple[Path, str]]:
    from zoo.assets import medical_classifier

    return medical_classifier("pneumonia").images()


def _class_zip(path: Path, images: list[tuple[Path, str]]) -> Path:
    """A zip of class folders, as a learner would make one: <class>/<file>."""
    with zipfile.ZipFile(path, "w") as archive:
        for file, label in images:
            archive.write(file, f"{label}/{file.name}")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import app

    weights = build_tiny_zoo(tmp_path_factory.getbasetemp() / "app-zoo")
    settings = app.Settings(weights=weights, catalog=tmp_path_factory.mktemp("c") / "none.json",
                            examples_dir=tmp_path_factory.mktemp("train-examples"))
    demo, url = serve(settings)
    yield demo, url
    demo.close()


@pytest.mark.heavy
def test_train_api_on_a_zip_of_class_folders_then_compare_in_the_same_session_only(server, tmp_path):
    from gradio_client import Client, handle_file

    demo, url = server
    client = Client(url, verbose=False)
    upload = _class_zip(tmp_path / "xrays.zip", _xrays())
    records = client.predict(data=handle_file(str(upload)), dataset="", **SMALL, api_name="/train")
    assert len(records) == 1
    record = records[0]
    assert record["arch"] == "efficientnet_lite0" and record["mode"] == "feature-extraction"
    assert record["n"]["images"] == 16 and record["label_names"] == ["NORMAL", "PNEUMONIA"]
    assert "cross-validation" in record["protocol"]
    for name in ("accuracy", "balanced_accuracy"):
        low, high = record[f"{name}_ci95"]
        assert 0 <= low <= record[name] <= high <= 1
    assert "run_dir" not in record  # no server path reaches a client
    assert sum(map(sum, record["confusion_matrix"])) == 16  # every image scored once, by a fold that never saw it

    answers = client.predict(image=handle_file(str(packaged_examples()["retina"])),
                             models=[record["id"], "lenet5-scratch-digits"], api_name="/compare")
    mine = next(a for a in answers if a["model"] == record["id"])
    assert mine["error"] is None
    assert {c["label"] for c in mine["top_k"]} == {"NORMAL", "PNEUMONIA"}

    stranger = Client(url, verbose=False)  # another session: the model is not on offer there
    answers = stranger.predict(image=handle_file(str(packaged_examples()["retina"])),
                               models=[record["id"], "lenet5-scratch-digits"], api_name="/compare")
    theirs = next(a for a in answers if a["model"] == record["id"])
    assert "no model with id" in theirs["error"]


def test_train_api_refuses_bad_uploads_with_their_message(server, tmp_path):
    from gradio_client import Client, handle_file

    _, url = server
    client = Client(url, verbose=False)
    one_class = _class_zip(tmp_path / "one.zip", [(f, "NORMAL") for f, label in _xrays() if label == "NORMAL"])
    with pytest.raises(Exception, match="(?i)class"):
        client.predict(data=handle_file(str(one_class)), dataset="", **SMALL, api_name="/train")
    traversal = tmp_path / "evil.zip"
    with zipfile.ZipFile(traversal, "w") as archive:
        archive.writestr("../outside/NORMAL/a.png", b"x")
        archive.writestr("PNEUMONIA/b.png", b"y")
    with pytest.raises(Exception, match="(?i)\\.\\.|outside|path"):
        client.predict(data=handle_file(str(traversal)), dataset="", **SMALL, api_name="/train")
    with pytest.raises(Exception, match="(?i)no file uploaded"):
        client.predict(data=None, dataset="", **SMALL, api_name="/train")


def test_cancel_stops_the_job_and_leaves_no_files(tmp_path):
    from train.lesson import LessonCancelled
    from ui.training import TrainedModels, TrainingJob, request_for

    trained = TrainedModels(tmp_path / "trained")
    models = trained.models_dir("session1")
    job = TrainingJob(request_for("chest-xray", ["efficientnet_lite0"], "feature-extraction", 64, 50), models,
                      trained.stop_flag("session1")).start()
    start = time.monotonic()
    for _ in job.updates(every_s=0.05):
        if job.history:  # training has begun: press Cancel
            assert trained.cancel("session1")
            break
    cancelled_at = time.monotonic()
    for _ in job.updates(every_s=0.05):
        pass
    assert time.monotonic() - cancelled_at < 5, "Cancel took more than a few seconds"
    assert isinstance(job.error, LessonCancelled), job.error
    assert job.records is None
    assert not models.exists() or not any(models.iterdir()), sorted(models.rglob("*"))
    assert time.monotonic() - start < 60
    trained.drop("session1")
    assert not (tmp_path / "trained" / "session1").exists()


@pytest.mark.heavy
def test_a_trained_model_answers_with_grad_cam_and_says_which_trust_checks_it_lacks(tmp_path_factory):
    from ui.settings import Settings
    from ui.state import ComparisonApp
    from ui.training import TrainingJob, request_for

    weights = build_tiny_zoo(tmp_path_factory.getbasetemp() / "app-zoo")
    app = ComparisonApp(Settings(weights=weights, catalog=tmp_path_factory.mktemp("c") / "none.json",
                                 examples_dir=tmp_path_factory.mktemp("cam-examples")))
    job = TrainingJob(request_for("chest-xray", ["efficientnet_lite0"], "feature-extraction", 64, 5),
                      app.trained.models_dir("learner"), app.trained.stop_flag("learner")).start()
    for _ in job.updates():
        pass
    assert job.error is None, job.error
    trained_id = job.records[0].id
    xray = str(_xrays()[0][0])
    result = app.compare(xray, [trained_id, "lenet5-scratch-digits"], cam=True, session="learner")
    mine = next(r for r in result.results if r.model == trained_id)
    assert mine.error is None and mine.cam_error is None, (mine.error, mine.cam_error)
    assert {label for label, _ in mine.top_k} == {"NORMAL", "PNEUMONIA"}
    heatmap = mine.heatmap
    assert heatmap is not None and heatmap.ndim == 3 and heatmap.shape[2] == 3 and mine.cam_layer
    assert heatmap.std() > 1, "the heatmap overlay is flat"
    # 16 images go to cross-validation: no split is left to fit a temperature, sets or an OOD bank, and the record
    # says so instead of showing raw figures as calibrated
    assert mine.temperature is None and mine.prediction_set is None and mine.ood is None
    assert mine.ood_reason and mine.trust_notes, (mine.ood_reason, mine.trust_notes)
    app.trained.drop("learner")


def test_session_ids_are_checked_and_the_download_holds_loadable_run_folders(tmp_path):
    import timm
    import torch

    import zoo
    from train import ConfigError
    from train.lesson import LessonRequest, run_lesson
    from ui.training import TrainedModels, save_to_weights, zip_runs

    trained = TrainedModels(tmp_path / "trained")
    with pytest.raises(ConfigError):
        trained.folder("../escape")
    assert trained.entries("nobody") == {}
    records = run_lesson(LessonRequest(data="chest-xray", backbones=("efficientnet_lite0",), img_size=64, epochs=3),
                         trained.models_dir("s"))
    assert list(trained.entries("s")) == [records[0].id]
    weights = tmp_path / "weights"
    assert save_to_weights(trained, "s", weights) == [records[0].id]
    assert (weights / records[0].id / "model.safetensors").is_file()
    assert save_to_weights(trained, "s", weights) == []  # never over an existing folder
    archive = zip_runs([r.run_dir for r in records], tmp_path / "models.zip")
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "unzipped")
    folder = tmp_path / "unzipped" / records[0].id
    assert {"model.safetensors", "config.json", "README.md", "metrics.json"} <= {p.name for p in folder.iterdir()}
    ours = zoo.load_pretrained(folder).eval()
    stock = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), stock(x), atol=1e-6)


def _open_train_tab(browser, url):
    """A page on the app's Train tab, as a learner opens it, with its queue requests counted."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    requests = QueueRequests(page)
    page.goto(url)
    page.locator("#compare-button").wait_for()
    page.get_by_role("tab", name="Train").click()
    return page, requests


@needs_chromium
@pytest.mark.heavy
def test_class_by_class_upload_trains_shows_curves_and_joins_compare(server, browser, tmp_path):
    from playwright.sync_api import expect

    _, url = server
    page, requests = _open_train_tab(browser, url)
    page.get_by_label("My images: class by class").check()
    images = _xrays()
    for i, label in enumerate(("NORMAL", "PNEUMONIA")):
        page.locator(f"#class-name-{i} textarea, #class-name-{i} input").first.fill(label.lower())
        page.locator(f"#class-files-{i} input[type=file]").set_input_files([str(f) for f, y in images if y == label])
    requests.settle(page, quiet_s=2)
    page.locator("#train-button").click()
    deadline = time.monotonic() + 120
    while "Done in" not in page.locator("#train-status").inner_text():  # poll: keeps the page busy too
        assert "⚠" not in page.locator("#train-status").inner_text(), page.locator("#train-status").inner_text()
        assert time.monotonic() < deadline, "training did not finish in 120 s"
        time.sleep(0.2)
    expect(page.locator("#train-live img")).to_be_visible()
    expect(page.locator("#train-results")).to_contain_text("efficientnet_lite0")
    expect(page.locator("#train-lesson")).to_contain_text("held-out answers right")
    expect(page.locator("#train-download a")).to_have_attribute("href", re.compile(r"/trained-models\.zip$"))
    expect(page.locator("#train-status")).to_contain_text("16 images")
    page.get_by_role("tab", name="Compare").click()
    trained = page.locator("#models label", has_text="trained here")
    expect(trained).to_have_count(1)
    boxes = page.locator("#models input[type=checkbox]")
    for i in range(boxes.count()):  # the trained model and one digits model, nothing else
        name = boxes.nth(i).locator("xpath=..").inner_text()
        if ("trained here" in name or name.strip() == "lenet5-scratch-digits") != boxes.nth(i).is_checked():
            boxes.nth(i).click()
    page.locator("#image-file input[type=file]").set_input_files(str(packaged_examples()["retina"]))
    expect(page.locator("#image-info")).to_contain_text("retina.jpg", timeout=60_000)
    page.locator("#compare-button").click()
    expect(page.locator("#col-0")).to_be_visible(timeout=60_000)
    headers = " ".join(page.locator(f"#header-{i}").inner_text() for i in range(2))
    assert "efficientnet_lite0-feature-extraction" in headers
    expect(page.locator("#label-0")).to_contain_text("%", timeout=60_000)
    page.close()


def _training_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == "zoo-train" and t.is_alive()]


@needs_chromium
@pytest.mark.heavy
def test_closing_the_page_cancels_its_job_and_deletes_its_files(server, browser, tmp_path_factory):
    _, url = server
    page, requests = _open_train_tab(browser, url)
    page.locator("#train-mode").get_by_text("Fine-tuning").click()  # a job long enough to be running at the close
    requests.settle(page, quiet_s=1)
    before = set(_training_threads())
    page.locator("#train-button").click()
    deadline = time.monotonic() + 60
    while not (set(_training_threads()) - before) or "epoch" not in page.locator("#train-status").inner_text():
        assert "⚠" not in page.locator("#train-status").inner_text(), page.locator("#train-status").inner_text()
        assert time.monotonic() < deadline, "the job did not start training in 60 s"
        time.sleep(0.2)
    job = next(iter(set(_training_threads()) - before))
    sessions = list(tmp_path_factory.getbasetemp().glob("train-examples*/zoo-app-examples-*/trained/*"))
    assert sessions, "the running job wrote nothing under the session's folder"
    page.close()  # the learner closes the tab mid-training
    closed = time.monotonic()
    job.join(30)
    assert not job.is_alive(), "the job kept training 30 s after its page was closed"
    print(f"job stopped {time.monotonic() - closed:.1f} s after the page closed")
    deadline = time.monotonic() + 10
    while any(p.exists() for p in sessions) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(p.exists() for p in sessions), "the closed page's images and models were left on disk"


def test_the_time_cap_refuses_a_long_job_up_front_and_stops_one_that_runs_over(tmp_path):
    from train import ConfigError
    from train.lesson import LessonCancelled
    from ui.training import TrainedModels, TrainingJob, check_time_cap, request_for

    slow = request_for("digits", ["efficientnet_lite0"], "fine-tune", 224, 50)
    with pytest.raises(ConfigError, match="over this server's cap of 60 s"):
        check_time_cap(slow, 1797, 60)
    quick = request_for("chest-xray", ["efficientnet_lite0"], "feature-extraction", 64, 50)
    assert check_time_cap(quick, 16, 60) < 60
    trained = TrainedModels(tmp_path / "trained")
    job = TrainingJob(quick, trained.models_dir("s"), trained.stop_flag("s"), max_s=0.5).start()
    for _ in job.updates(every_s=0.05):
        pass
    assert job.timed_out and isinstance(job.error, LessonCancelled)
    models = trained.models_dir("s")
    assert not models.exists() or not any(models.iterdir())


@pytest.mark.parametrize("server_name, value, expected", [("", "", True), ("127.0.0.1", "", True),
                                                          ("0.0.0.0", "", False), ("0.0.0.0", "1", True),
                                                          ("127.0.0.1", "0", False)])
def test_saving_trained_models_is_off_by_default_beyond_localhost(monkeypatch, server_name, value, expected):
    from ui.settings import Settings

    monkeypatch.setenv("GRADIO_SERVER_NAME", server_name)
    monkeypatch.setenv("ZOO_APP_SAVE_TRAINED", value)
    assert Settings.from_env().save_trained is expected


def test_a_bad_save_setting_is_named(monkeypatch):
    from ui.settings import Settings, SettingsError

    monkeypatch.setenv("ZOO_APP_SAVE_TRAINED", "yes")
    with pytest.raises(SettingsError, match="ZOO_APP_SAVE_TRAINED='yes' must be 0 or 1"):
        Settings.from_env()
