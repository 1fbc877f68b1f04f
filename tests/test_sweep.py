"""python -m train.sweep: a small digits grid on the local pool and on Ray's local mode gives the same table;
a re-run does only what is missing; a failing cell is recorded while the rest finish; a bad grid runs nothing."""
from __future__ import annotations

import importlib.util

import pytest

from train.sweep import SweepOptions, build_cells, read_results, run_sweep
from train.sweep.cli import main

# tiny cells: 1 epoch, no ONNX export; the figures compared are the test metrics, which depend only on the seed
SHARED = {"epochs": 1, "quiet": True, "onnx": False, "batch_size": 64, "pretrained": False}
FIGURES = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "ece_before", "ece_after", "coverage_90",
           "params_total", "params_trainable", "epochs", "status")


def _cells(out, mode=("scratch",), sizes=(32,), seeds=(0,)):
    axes = {"arch": ["lenet5"], "mode": list(mode), "data": ["digits"], "img_size": list(sizes), "seeds": list(seeds)}
    return build_cells(axes, SHARED, out)


def _figures(path):
    return {(r["arch"], r["mode"], r["seed"]): {k: r[k] for k in FIGURES} for r in read_results(path)}


def test_bad_grid_is_refused_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["--arch", "lenet5", "lenet6", "--mode", "scratch", "--data", "digits", "--out", str(out),
                 "--epochs", "1"])
    assert code == 2
    assert "cell digits__lenet6__scratch__imgdefault__seed0: Unknown architecture 'lenet6'" in capsys.readouterr().err
    assert not out.exists()  # not even the lenet5 cell started
    assert main(["--arch", "lenet5", "--data", "digits", "--seeds", *map(str, range(30)), "--out", str(out)]) == 2
    assert "pass --yes" in capsys.readouterr().err and not out.exists()


@pytest.mark.heavy
def test_failing_cell_is_recorded_and_a_rerun_does_only_what_is_missing(tmp_path):
    out = tmp_path / "sweep"
    # lenet5 refuses 16 px inputs (its minimum is 32) only once its model is built, inside the worker
    first = run_sweep(_cells(out, sizes=(32, 16)), out, SweepOptions(workers=2))
    assert [o.status for o in first.outcomes] == ["done", "failed"]
    assert "below this model's minimum input size" in first.outcomes[1].error
    rows = read_results(out / "results.csv")
    assert rows[0]["accuracy"] and not rows[1]["accuracy"] and "minimum input size" in rows[1]["error"]
    second = run_sweep(_cells(out, sizes=(32,), seeds=(0, 1)), out, SweepOptions(workers=2))
    assert [o.status for o in second.outcomes] == ["skipped", "done"]
    assert second.outcomes[0].seconds == 0.0
    rows = read_results(out / "results.csv")
    assert [r["seed"] for r in rows] == ["0", "1"] and all(r["accuracy"] for r in rows)
    board = read_results(out / "leaderboard.csv")
    assert len(board) == 1 and board[0]["seeds"] == "2" and board[0]["accuracy_ci95_low"]


@pytest.mark.heavy
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the [sweep] extra (ray) is not installed")
def test_local_and_ray_engines_give_the_same_results(tmp_path):
    local = run_sweep(_cells(tmp_path / "local", mode=("scratch", "fine-tune")), tmp_path / "local",
                      SweepOptions(workers=2))
    ray = run_sweep(_cells(tmp_path / "ray", mode=("scratch", "fine-tune")), tmp_path / "ray",
                    SweepOptions(engine="ray"))
    assert [o.status for o in local.outcomes] == [o.status for o in ray.outcomes] == ["done", "done"]
    assert _figures(tmp_path / "local" / "results.csv") == _figures(tmp_path / "ray" / "results.csv")
