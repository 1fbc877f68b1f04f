"""The Batch tab served on 127.0.0.1: a zip of class folders (real digits, a corrupt file, a DICOM) through the public
/batch API (gradio_client) and in Chromium (upload, the table, the summary, the CSV download); a zip with a path out
of it refused with the reason."""
import csv
import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from _app_zoo import build_tiny_zoo  # noqa: E402
from _batch_inputs import CLASSES, PER_CLASS, class_folder_entries, digit_png, write_zip  # noqa: E402
from _serve import browser, needs_chromium, serve  # noqa: E402, F401  (browser: the fixture)

from zoo.batch_report import CSV_COLUMNS  # noqa: E402

MODELS = ["lenet5-scratch-digits", "quadsnet-scratch-digits"]
IMAGES = len(CLASSES) * PER_CLASS + 1  # the digits and the DICOM; the corrupt file and the note are skipped


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(demo, url, client) for the tiny zoo."""
    import app
    from gradio_client import Client

    weights = build_tiny_zoo(tmp_path_factory.getbasetemp() / "app-zoo")
    settings = app.Settings(weights=weights, examples_dir=tmp_path_factory.mktemp("examples"))
    demo, url = serve(settings)
    client = Client(url, verbose=False)
    yield demo, url, client
    demo.close()


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


@needs_chromium
def test_the_batch_tab_in_chromium_shows_the_table_and_downloads_the_csv(served, upload, browser, tmp_path):
    from playwright.sync_api import expect

    _, url, _ = served
    page = browser.new_page(viewport={"width": 900, "height": 1000}, accept_downloads=True)  # a narrow window
    page.set_default_timeout(90_000)
    try:
        page.goto(url)
        page.get_by_role("tab", name="Batch").click()
        boxes = page.locator("#batch-models input[type=checkbox]")
        boxes.first.wait_for()
        for i in range(boxes.count()):
            box = boxes.nth(i)
            if (box.locator("xpath=..").inner_text().strip() in MODELS) != box.is_checked():
                box.click()
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
