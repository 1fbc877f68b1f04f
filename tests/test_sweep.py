"""python -m train.sweep: a small digits grid on the local pool and on Ray's local mode gives the same table;
a re-run does only what is missing; a failing cell is recorded while the rest finish; a bad grid runs nothing."""
from __future__ import annotations

import importlib.util
import shutil

import pytest

from train.sweep import SweepOptions, build_cells, read_results, run_sweep
from train.sweep.cli import main

from _serve import CHROMIUM, CHROMIUM_ARGS, needs_chromium, serve
from _sweep_rows import write_results_csv

# tiny cells: 1 epoch, no ONNX export; the figures compared are the test metrics, which depend only on the seed
SHARED = {"epochs": 1, "quiet": True, "onnx": False, "batch_size": 64, "pretrained": False}
FIGURES = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "ece_before", "ece_after", "coverage_90",
           "params_total", "params_trainable", "epochs", "status")


def _cells(out, mode=("scratch",), sizes=(32,), seeds=(0,)):
    axes = {"arch": ["lenet5"], "mode": list(mode), "data": ["digits"], "img_size": list(sizes), "seeds": list(seeds)}
    return build_cells(axes, SHARED, out)


def _figures(path):
    """The figures of the cells that trained, by (arch, mode, img_size, seed)."""
    return {(r["arch"], r["mode"], r["img_size"], r["seed"]): {k: r[k] for k in FIGURES}
            for r in read_results(path) if r["status"] == "done"}


def test_bad_grid_is_refused_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["--arch", "lenet5", "lenet6", "--mode", "scratch", "--data", "digits", "--out", str(out),
                 "--epochs", "1"])
    assert code == 2
    assert "cell digits__lenet6__scratch__imgdefault__seed0: Unknown architecture 'lenet6'" in capsys.readouterr().err
    assert not out.exists()  # not even the lenet5 cell started
    assert main(["--arch", "lenet5", "--data", "digits", "--seeds", *map(str, range(30)), "--out", str(out)]) == 2
    assert "pass --yes" in capsys.readouterr().err and not out.exists()


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """One local-pool sweep the tests below share (each cell is a worker process that imports torch: the costly
    part): lenet5 x (scratch, fine-tune) at 32 px, which train, then scratch at 16 px, which fails in its worker
    (lenet5's minimum input is 32, checked only once its model is built)."""
    out = tmp_path_factory.mktemp("local") / "sweep"
    cells = _cells(out, mode=("scratch", "fine-tune")) + _cells(out, sizes=(16,))
    return out, run_sweep(cells, out, SweepOptions(workers=2))


@pytest.mark.heavy
def test_failing_cell_is_recorded_and_a_rerun_does_only_what_is_missing(local_sweep, tmp_path):
    first_out, first = local_sweep
    assert [o.status for o in first.outcomes] == ["done", "done", "failed"]
    assert "below this model's minimum input size" in first.outcomes[2].error
    rows = read_results(first_out / "results.csv")
    assert all(r["accuracy"] for r in rows[:2]) and not rows[2]["accuracy"]
    assert "minimum input size" in rows[2]["error"]
    out = tmp_path / "sweep"  # a copy: the other tests read the shared sweep as it was
    shutil.copytree(first_out, out)
    second = run_sweep(_cells(out, sizes=(32,), seeds=(0, 1)), out, SweepOptions(workers=2))
    assert [o.status for o in second.outcomes] == ["skipped", "done"]
    assert second.outcomes[0].seconds == 0.0
    rows = read_results(out / "results.csv")
    assert [r["seed"] for r in rows] == ["0", "1"] and all(r["accuracy"] for r in rows)
    board = read_results(out / "leaderboard.csv")
    assert len(board) == 1 and board[0]["seeds"] == "2" and board[0]["accuracy_ci95_low"]


@pytest.mark.heavy
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the [sweep] extra (ray) is not installed")
def test_local_and_ray_engines_give_the_same_results(local_sweep, tmp_path):
    local_out, _ = local_sweep
    ray = run_sweep(_cells(tmp_path / "ray", mode=("scratch", "fine-tune")), tmp_path / "ray",
                    SweepOptions(engine="ray"))
    assert [o.status for o in ray.outcomes] == ["done", "done"]
    local = _figures(local_out / "results.csv")
    assert len(local) == 2 and local == _figures(tmp_path / "ray" / "results.csv")


def test_leaderboard_tab_aggregates_seeds_filters_and_sorts(tmp_path):
    from ui.leaderboard_tab import LEADERBOARD_HEADERS, leaderboard_view
    common = {"img_size": "32", "status": "done", "onnx_latency_ms": "0.5"}
    write_results_csv(tmp_path / "sweeps" / "a" / "results.csv", [
        {**common, "data": "digits", "arch": "lenet5", "mode": "scratch", "seed": "0", "balanced_accuracy": "0.80",
         "accuracy": "0.8"},
        {**common, "data": "digits", "arch": "lenet5", "mode": "scratch", "seed": "1", "balanced_accuracy": "0.90",
         "accuracy": "0.9"},
        {**common, "data": "digits", "arch": "resnet18", "mode": "fine-tune", "seed": "0", "balanced_accuracy": "0.95",
         "accuracy": "0.95", "onnx_latency_ms": "3.0"},
        {**common, "data": "digits", "arch": "resnet18", "mode": "fine-tune", "seed": "1", "status": "failed"}])
    write_results_csv(tmp_path / "other" / "results.csv", [
        {**common, "data": "medmnist:pathmnist", "arch": "lenet5", "mode": "scratch", "seed": "0",
         "balanced_accuracy": "0.5", "accuracy": "0.5"}])
    rows, figure, data_sets, modes, data, note, labels = leaderboard_view(tmp_path, None, None)
    assert data_sets == ["digits", "medmnist:pathmnist"] and data == "digits" and modes == ["fine-tune", "scratch"]
    assert len(rows[0]) == len(LEADERBOARD_HEADERS)
    # best first; the failed seed does not count; two seeds give a std and a t-interval (t(0.975, 1) = 12.71)
    assert [(r[1], r[4], r[5]) for r in rows] == [("resnet18", "1", "0.950"), ("lenet5", "2", "0.850")]
    assert rows[1][6] == "0.071" and rows[1][7] == "0.215–1.485"
    assert figure.axes[0].get_xlabel().startswith("ONNX Runtime CPU latency")
    rows, *_ = leaderboard_view(tmp_path, "digits", ["scratch"])
    assert [r[1] for r in rows] == ["lenet5"] and "1 of 3 configurations" in leaderboard_view(tmp_path, "digits",
                                                                                              ["scratch"])[5]
    # every configuration can be picked by name, whatever the filter shows
    assert labels == ["digits · resnet18 · fine-tune · 32 px", "digits · lenet5 · scratch · 32 px",
                      "medmnist:pathmnist · lenet5 · scratch · 32 px"]


def test_catalog_option_lists_the_finished_cells_for_the_app(weights, tmp_path):
    import json

    from train._errors import ConfigError
    from train.sweep.catalog import add_to_catalog, check_catalog
    from zoo.catalog import discover_models

    app_weights = tmp_path / "weights"
    cells = _cells(app_weights / "sweeps" / "a", seeds=(0, 1))
    shutil.copytree(weights / "lenet5-scratch-digits", cells[0].folder)  # seed 0 finished, seed 1 never ran
    catalog = app_weights / "catalog.json"
    assert add_to_catalog(catalog, cells) == ([cells[0].name], [])
    assert json.loads(catalog.read_text())["models"][0]["path"] == f"sweeps/a/{cells[0].name}"
    offered = {e.id: e for e in discover_models(app_weights)}
    assert offered[cells[0].name].available and cells[1].name not in offered
    assert add_to_catalog(catalog, cells) == ([], [])  # a re-run adds nothing twice
    clash = json.loads(catalog.read_text())
    clash["models"][0]["path"] = "elsewhere"
    catalog.write_text(json.dumps(clash))
    assert "already has this id for 'elsewhere'" in add_to_catalog(catalog, cells)[1][0]
    outside = tmp_path / "other" / "catalog.json"
    outside.parent.mkdir()
    assert add_to_catalog(outside, cells) == ([], [f"{cells[0].name}: its folder is not below {outside.parent}; the "
                                                  "app reads a catalog's local models from the folder the catalog "
                                                  "is in"])
    assert not outside.exists()
    catalog.write_text("{not json")
    with pytest.raises(ConfigError, match="--catalog: .*is not valid JSON"):
        check_catalog(catalog)
    out = tmp_path / "sweep"  # python -m train.sweep refuses it before any cell runs
    assert main(["--arch", "lenet5", "--data", "digits", "--out", str(out), "--catalog", str(catalog)]) == 2
    assert not out.exists()


def test_pareto_plot_names_the_input_size_where_a_data_set_has_several():
    from train.sweep.plots import accuracy_vs_latency_figure
    entry = dict(data="digits", arch="lenet5", mode="scratch", img_size="32", onnx_latency_ms_mean=1.0,
                 accuracy_mean=0.5)
    two_sizes = [entry, {**entry, "img_size": "64", "onnx_latency_ms_mean": 2.0, "accuracy_mean": 0.6}]
    assert [t.get_text() for t in accuracy_vs_latency_figure(two_sizes).axes[0].texts] == [
        "lenet5 scratch 32 px", "lenet5 scratch 64 px"]
    assert [t.get_text() for t in accuracy_vs_latency_figure([entry]).axes[0].texts] == ["lenet5 scratch"]


@pytest.mark.heavy
@needs_chromium
def test_leaderboard_tab_shows_the_table_in_chromium(tmp_path):
    import app
    from playwright.sync_api import expect, sync_playwright
    weights = tmp_path / "weights"
    row = {"img_size": "32", "status": "done", "onnx_latency_ms": "0.5", "data": "digits", "mode": "scratch"}
    write_results_csv(weights / "sweeps" / "a" / "results.csv", [
        {**row, "arch": "lenet5", "seed": "0", "balanced_accuracy": "0.81", "accuracy": "0.8"},
        {**row, "arch": "quadsnet", "seed": "0", "balanced_accuracy": "0.93", "accuracy": "0.9"}])
    settings = app.Settings(weights=weights, catalog=tmp_path / "none.json", examples_dir=tmp_path / "examples")
    demo, url = serve(settings)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.get_by_role("tab", name="Leaderboard").click()
            table = page.locator("#leaderboard-table")
            expect(table).to_contain_text("quadsnet")
            expect(table).to_contain_text("0.930")
            text = table.inner_text()
            assert text.index("quadsnet") < text.index("lenet5")  # best balanced accuracy first
            browser.close()
    finally:
        demo.close()
