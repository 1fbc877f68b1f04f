"""The Leaderboard tab's rows sent to the Compare tab: which run folders become ticked models and why the others do
not (ui/leaderboard_link.py); published results set beside the sweep's rows (ui/reference_results.py); and in
Chromium, a person clicking rows and the button."""
from __future__ import annotations

import json
import shutil

import pytest

from _app_zoo import BROKEN, UNFINISHED, zoo_of
from _sweep_rows import write_results_csv
from _serve import CHROMIUM, CHROMIUM_ARGS, QueueRequests, needs_chromium, serve

LENET = "digits · lenet5 · scratch · 32 px"
QUADS = "digits · quadsnet · scratch · 16 px"
UNFINISHED_ROW = "digits · lenet5 · fine-tune · 32 px"
BROKEN_ROW = "digits · lenet5 · feature-extraction · 32 px"
NESTED = "digits · lenet5 · scratch · 28 px"
CELL = "digits__lenet5__scratch__img28__seed0"


def _row(arch, mode, size, seed, folder, status="done", **figures):
    return {"data": "digits", "arch": arch, "mode": mode, "img_size": str(size), "seed": str(seed),
            "run_folder": folder, "status": status, "balanced_accuracy": "0.8", "accuracy": "0.8",
            "onnx_latency_ms": "0.5", **figures}


@pytest.fixture
def swept(weights, tmp_path):
    """A weights folder holding the tiny zoo's runs as a sweep written with --out set to it (results.csv beside the
    run folders, their paths as recorded on another machine), and a second sweep in sweeps/a whose one cell the
    app does not offer."""
    folder = zoo_of(tmp_path / "weights", *(weights / name for name in
                                            ("lenet5-scratch-digits", "quadsnet-scratch-digits", BROKEN, UNFINISHED)))
    (folder / "catalog.json").write_text('{"models": []}')
    write_results_csv(folder / "results.csv", [
        _row("lenet5", "scratch", 32, 0, "/elsewhere/sweep/lenet5-scratch-digits"),
        _row("lenet5", "scratch", 32, 1, "/elsewhere/sweep/never-written", status="failed",
             error="RuntimeError: out of memory", balanced_accuracy=""),
        _row("quadsnet", "scratch", 16, 0, "quadsnet-scratch-digits"),
        _row("lenet5", "fine-tune", 32, 0, UNFINISHED),
        _row("lenet5", "feature-extraction", 32, 0, BROKEN)])
    cell = folder / "sweeps" / "a" / CELL
    shutil.copytree(weights / "lenet5-scratch-digits", cell)
    write_results_csv(folder / "sweeps" / "a" / "results.csv", [_row("lenet5", "scratch", 28, 0, f"out/{CELL}"),
                                                              _row("lenet5", "scratch", 28, 1, "out/deleted")])
    return folder


def test_picked_rows_become_the_models_the_app_offers_and_the_rest_say_why(swept):
    from ui.leaderboard_link import compare_selection
    from ui.leaderboard_tab import find_results
    from zoo.catalog import discover_models

    rows, entries = find_results(swept), discover_models(swept)
    chosen = compare_selection([QUADS, LENET, UNFINISHED_ROW, NESTED, "digits · gone · scratch · 32 px", LENET],
                               rows, entries, swept)
    assert chosen.ids == ["quadsnet-scratch-digits", "lenet5-scratch-digits"]  # in the order picked, once each
    notes = "\n".join(chosen.notes)
    assert f"{LENET}, seed 1: its run did not finish (status failed: RuntimeError: out of memory)" in notes
    assert f"{UNFINISHED_ROW}, seed 0: model {UNFINISHED} cannot be used: training has not finished" in notes
    assert (f"{NESTED}, seed 0: its run folder sweeps/a/{CELL} is not a model the Compare tab offers" in notes
            and f'"path": "sweeps/a/{CELL}"' in notes)
    assert "digits · gone · scratch · 32 px: not in the sweep results any more" in notes
    assert f"{NESTED}, seed 1: its run folder sweeps/a/deleted does not exist" in notes

    limited = compare_selection([QUADS, LENET], rows, entries, swept, limit=1)
    assert limited.ids == ["quadsnet-scratch-digits"]
    assert "at most 1 models; left out: lenet5-scratch-digits" in limited.notes[-1]

    # the fix the note gives works: listed in the catalog, the nested sweep's run is offered and picked
    (swept / "catalog.json").write_text(json.dumps(
        {"models": [{"id": CELL, "source": "local", "path": f"sweeps/a/{CELL}"}]}))
    assert compare_selection([NESTED], rows, discover_models(swept), swept).ids == [CELL]


def test_send_ticks_the_loadable_models_and_leaves_the_page_when_there_is_none(swept, tmp_path):
    import gradio as gr

    from ui.leaderboard_tab import LeaderboardLink
    from ui.settings import Settings
    from ui.state import ComparisonApp

    app = ComparisonApp(Settings(weights=swept, examples_dir=tmp_path / "examples"))
    request = None  # no browser session: the app's own models only
    picker, tabs, note = LeaderboardLink(app).send([LENET, BROKEN_ROW], request)
    assert picker.value == ["lenet5-scratch-digits"] and tabs.selected == "compare"
    assert f"model {BROKEN} cannot be loaded" in note and "Tick at least 1 more model" in note
    assert str(swept) not in note  # the server's paths stay private
    picker, tabs, note = LeaderboardLink(app).send([BROKEN_ROW, UNFINISHED_ROW], request)
    assert isinstance(picker, type(gr.skip())) and isinstance(tabs, type(gr.skip()))  # the page stays as it is
    assert note.startswith("**Nothing sent to the Compare tab.**")
    assert "Pick one or more rows first" in LeaderboardLink(app).send([], request)[2]


def test_published_rows_are_shown_for_their_data_set_and_bad_rows_say_why(tmp_path):
    from ui.reference_results import REFERENCE_NAME, reference_view

    weights = tmp_path / "weights"
    rows, note = reference_view(weights, "medmnist:pathmnist:64")
    assert rows == [] and f"put a `{REFERENCE_NAME}`" in note
    weights.mkdir()
    (weights / REFERENCE_NAME).write_text(
        "data,method,img_size,accuracy,roc_auc,source\n"
        "medmnist:pathmnist,Method A,28,0.5,0.75,https://example.org/table\n"
        "medmnist:pathmnist,Method B,224,90.7,0.9,https://example.org/table\n"
        "medmnist:dermamnist,Method A,28,0.7,0.9,https://example.org/table\n"
        "medmnist:pathmnist,Method C,28,0.6,0.8,\n")
    rows, note = reference_view(weights, "medmnist:pathmnist:64")  # any input size of the same data set
    assert rows == [["medmnist:pathmnist", "Method A", "28", "0.500", "0.750", "https://example.org/table"]]
    assert "line 3 left out: accuracy '90.7' is not a fraction between 0 and 1" in note
    assert "line 5 left out: source is empty" in note
    (weights / REFERENCE_NAME).write_text("data,method,acc\nx,y,0.5\n")
    rows, note = reference_view(weights, "medmnist:pathmnist")
    assert rows == [] and "lacks the columns ['img_size', 'accuracy', 'roc_auc', 'source']" in note


@pytest.mark.heavy
@needs_chromium
def test_a_person_sends_leaderboard_rows_to_the_compare_tab_in_chromium(swept, tmp_path):
    import app
    from playwright.sync_api import expect, sync_playwright

    settings = app.Settings(weights=swept, examples_dir=tmp_path / "examples")
    demo, url = serve(settings)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 900, "height": 1000})  # a narrow window
            page.set_default_timeout(60_000)
            requests = QueueRequests(page)
            page.goto(url)
            page.get_by_role("tab", name="Leaderboard").click()
            table = page.locator("#leaderboard-table")
            expect(table).to_contain_text("quadsnet")
            for name in ("quadsnet", "quadsnet", "feature-extraction"):  # quick clicks, one row twice
                table.locator("[role=gridcell]").get_by_text(name, exact=True).first.click()
            picks = page.locator("#leaderboard-picks")
            expect(picks).to_contain_text(QUADS)
            expect(picks).to_contain_text(BROKEN_ROW)
            page.locator("#leaderboard-send").click()
            models = page.locator("#models")
            expect(models).to_be_visible()  # the Compare tab is shown
            expect(models.get_by_label("quadsnet-scratch-digits", exact=True)).to_be_checked()
            expect(models.get_by_label("lenet5-scratch-digits", exact=True)).not_to_be_checked()
            requests.settle(page)  # the selection's follow-up events end: no listener loop
            page.get_by_role("tab", name="Leaderboard").click()
            expect(page.locator("#leaderboard-sent")).to_contain_text(f"model {BROKEN} cannot be loaded")
            browser.close()
    finally:
        demo.close()
