"""The Batch tab served on 127.0.0.1: a zip of class folders (real digits, a corrupt file, a DICOM) through the public
/batch API (gradio_client) and in Chromium (upload, the table, the summary, the CSV download); a zip with a path out
of it refused with the reason; a second batch waiting in line with its place shown; the tab's model list following
a rescan of the weights folder."""
import csv
import os
import re
import shutil
import threading
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from _batch_inputs import CLASSES, PER_CLASS, class_folder_entries, digit_png, write_zip  # noqa: E402
from _serve import browser, needs_chromium, served_app  # noqa: E402, F401  (browser: the fixture)

from zoo.batch_report import CSV_COLUMNS  # noqa: E402

MODELS = ["lenet5-scratch-digits", "quadsnet-scratch-digits"]
IMAGES = len(CLASSES) * PER_CLASS + 1  # the digits and the DICOM; the corrupt file and the note are skipped


@pytest.fixture(scope="module")
def served(weights, tmp_path_factory):
    """(demo, url, client) for the tiny zoo."""
    with served_app(weights, tmp_path_factory.mktemp("examples")) as served:
        yield served


@pytest.fixture(scope="module")
def upload(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("batch-upload")
    return write_zip(folder / "digits.zip", class_folder_entries())


def batch(client, files, models):
    from gradio_client import handle_file
    return client.predict([handle_file(str(f)) for f in files], models, api_name="/batch")


def test_the_batch_api_gives_the_table_the_agreement_the_summary_and_the_csv(served, upload):
    _, _, client = served
    summary, agreement, table, csv_path = batch(client, [upload], MODELS)
    rows = table["data"]
    assert table["headers"][:4] == ["File", "True label", "Model", "Top-1"]
    assert len(rows) == IMAGES * len(MODELS) and {r[2] for r in rows} == set(MODELS)
    assert all(r[10] == "" and r[3] for r in rows)  # every image answered by every model
    assert [r[0] for r in agreement["data"]] == list(dict.fromkeys(r[0] for r in rows))
    assert all(("agree" in r[2]) or r[2].startswith("one model") for r in agreement["data"])
    assert any("right:" in r[2] for r in agreement["data"] if r[1])  # the folders name the class
    for model in MODELS:
        assert f"**{model}** on the {len(CLASSES) * PER_CLASS} images of the zip digits.zip" in summary
    assert "95% Wilson interval" in summary and "| folder ↓ / predicted → |" in summary
    assert "Skipped (2)" in summary and "1/corrupt.png" in summary and "truncated or corrupt" in summary
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        records = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    assert [(r["file"], r["model"], r["top1"]) for r in records] == [(r[0], r[2], r[3]) for r in rows]


def test_the_batch_api_refuses_a_zip_with_a_path_out_of_it_and_bad_selections(served, tmp_path):
    from gradio_client.exceptions import AppError

    _, _, client = served
    evil = write_zip(tmp_path / "evil.zip", {"0/1.png": digit_png(0), "../../evil.png": digit_png(1)})
    with pytest.raises(AppError, match=r"evil\.zip: the entry '\.\./\.\./evil\.png' points outside"):
        batch(client, [evil], MODELS)
    with pytest.raises(AppError, match=r"Select 1 to 6 models; 0 selected"):
        batch(client, [evil], [])
    # the app is still up, and loose image files (no class folders) are classified without a summary
    (tmp_path / "a.png").write_bytes(digit_png(3))
    summary, _, table, _ = batch(client, [tmp_path / "a.png"], MODELS[:1])
    assert len(table["data"]) == 1 and "no accuracy: the images are not in class folders" in summary


def tick(page, models) -> None:
    """Tick exactly `models` in the Batch tab's model list, as a person clicks the boxes."""
    boxes = page.locator("#batch-models input[type=checkbox]")
    boxes.first.wait_for()
    for i in range(boxes.count()):
        box = boxes.nth(i)
        if (box.locator("xpath=..").inner_text().strip() in models) != box.is_checked():
            box.click()


@needs_chromium
def test_the_batch_tab_in_chromium_shows_the_table_and_downloads_the_csv(served, upload, browser, tmp_path):
    from playwright.sync_api import expect

    _, url, _ = served
    page = browser.new_page(viewport={"width": 900, "height": 1000}, accept_downloads=True)  # a narrow window
    page.set_default_timeout(90_000)
    try:
        page.goto(url)
        page.get_by_role("tab", name="Batch").click()
        tick(page, MODELS)
        page.locator("#batch-files input[type=file]").set_input_files(str(upload))
        expect(page.locator("#batch-files")).to_contain_text("digits.zip")
        page.locator("#batch-button").click()
        page.locator("#batch-button").click()  # a quick second click queues a second job, never a broken page
        summary = page.locator("#batch-summary")
        expect(summary).to_contain_text("95% Wilson interval")
        expect(summary).to_contain_text(f"{IMAGES} image(s) from the zip digits.zip")
        expect(page.locator("#batch-table")).to_contain_text(MODELS[1])
        expect(page.locator("#batch-agreement")).to_contain_text("scan.dcm")
        link = page.locator("#batch-csv a").first
        link.wait_for()
        with page.expect_download() as download:
            link.click()
        saved = tmp_path / "downloaded.csv"
        download.value.save_as(saved)
        with open(saved, newline="") as f:
            records = list(csv.DictReader(f))
        assert len(records) == IMAGES * len(MODELS) and {r["model"] for r in records} == set(MODELS)
        assert {r["true_label"] for r in records} == {*CLASSES, ""}
    finally:
        page.close()


@needs_chromium
def test_a_second_batch_waits_with_its_place_shown_and_the_list_follows_a_rescan(weights, browser, tmp_path,
                                                                                monkeypatch):
    """Two people start a batch at once: the second waits (one batch job per process) and its page says where it
    stands in the line, then both get their table. A run folder added to the weights folder joins the Batch tab's
    list at the Compare tab's "Rescan models" (when the Batch tab is opened again) and at the Batch tab's own."""
    from playwright.sync_api import expect

    import ui.batch

    run_first, running = threading.Event(), threading.Event()
    classify = ui.batch.classify_batch

    def held(*args, **kwargs):  # the first job holds its slot until the test has seen the second one wait
        if args[2] is held.cache:  # this test's server only (run_batch passes the app's model cache third)
            running.set()
            run_first.wait(timeout=120)
        return classify(*args, **kwargs)

    monkeypatch.setattr(ui.batch, "classify_batch", held)
    folder = tmp_path / "weights"
    for model in MODELS:
        shutil.copytree(weights / model, folder / model)
    (tmp_path / "a.png").write_bytes(digit_png(3))
    with served_app(folder, tmp_path / "examples") as (demo, url, _):
        held.cache = demo.zoo_app.cache
        pages = [browser.new_page(viewport={"width": 700, "height": 900}) for _ in range(2)]  # narrow windows
        try:
            for page in pages:
                page.set_default_timeout(60_000)
                page.goto(url)
                page.get_by_role("tab", name="Batch").click()
                tick(page, MODELS)
                page.locator("#batch-files input[type=file]").set_input_files(str(tmp_path / "a.png"))
                # a narrow file list may break the name between its stem and extension ("a .png")
                expect(page.locator("#batch-files")).to_contain_text(re.compile(r"a\s*\.png"))
            first, second = pages
            first.locator("#batch-button").click()
            assert running.wait(timeout=60), "the first batch never started"
            second.locator("#batch-button").click()
            # Gradio's status line on the second page's outputs: "queue: 1/1 |" while the first job runs
            expect(second.locator("#batch-summary")).to_contain_text(re.compile(r"queue: 1/\d+"))
            run_first.set()
            for page in pages:
                expect(page.locator("#batch-summary")).to_contain_text("1 image(s) from 1 file(s) given one by one")
            expect(second.locator("#batch-summary")).not_to_contain_text("queue:")

            shutil.copytree(weights / "lite0-fe-digits", folder / "lite0-fe-digits")
            second.get_by_role("tab", name="Compare").click()
            second.locator("#rescan").click()
            expect(second.locator("#models")).to_contain_text("lite0-fe-digits")
            second.get_by_role("tab", name="Batch").click()
            expect(second.locator("#batch-models")).to_contain_text("lite0-fe-digits")
            shutil.copytree(weights / "lenet5-meta-lesions", folder / "lenet5-meta-lesions")
            first.locator("#batch-rescan").click()
            expect(first.locator("#batch-models")).to_contain_text("lenet5-meta-lesions")
            for model in MODELS:  # the ticked models stay ticked
                expect(first.locator("#batch-models label", has_text=model).locator("input")).to_be_checked()
        finally:
            run_first.set()
            for page in pages:
                page.close()
