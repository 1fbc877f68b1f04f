"""The teaching notebooks (notebooks/*.ipynb) run top to bottom, write nothing into the repository, and are
committed without outputs (so their diffs stay readable and no stale figure ships).

Each notebook runs in a fresh kernel of this interpreter (a kernelspec written to a temporary JUPYTER_PATH, so a
system-wide "python3" kernel of another Python can never be picked up), from the notebooks folder as a reader would
open it. A cell that raises fails the test with that cell's number, source and traceback.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
# the docs site links these by name
EXPECTED = ("01_transfer_modes.ipynb", "02_trust.ipynb", "03_deployment.ipynb")
CELL_TIMEOUT_S = 300  # one cell on a busy 2-core CI machine; a notebook takes well under a minute on an idle one


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def _repository_changes() -> str:
    """Untracked and modified files as git sees them (ignored build outputs such as __pycache__ excepted); outside a
    git checkout (an unpacked source archive), every file path with its size and modification time."""
    try:
        return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        listing = []
        for folder, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in (".git", ".venv", "node_modules", "__pycache__")]
            for name in files:
                stat = (Path(folder) / name).stat()
                listing.append(f"{Path(folder, name).relative_to(ROOT)} {stat.st_size} {stat.st_mtime_ns}")
        return "\n".join(sorted(listing))


def test_the_linked_notebooks_exist():
    assert sorted(p.name for p in _notebooks()) == sorted(EXPECTED)


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["cells"], f"{path.name} has no cells"
    dirty = [i for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: code cells {dirty} carry outputs or execution counts; strip them (Jupyter: "
                       "Edit > Clear All Outputs, then save) before committing")


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory):
    """A JUPYTER_PATH whose only "python3" kernel is this interpreter (the project's venv)."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (this venv)", "language": "python"}))
    return root


@pytest.mark.heavy
@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, kernel_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    monkeypatch.setenv("JUPYTER_PATH", str(kernel_path))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    before = _repository_changes()
    nb = nbformat.read(path, as_version=4)
    failed: list[int] = []
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S, allow_errors=False,
                            resources={"metadata": {"path": str(NOTEBOOKS)}},
                            on_cell_error=lambda cell, cell_index, execute_reply: failed.append(cell_index))
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as e:
        index = failed[0] if failed else next((i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
                                               and cell.get("execution_count") is None), "?")
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # the kernel's traceback without its terminal colours
        pytest.fail(f"{path.name} stopped at cell {index}:\n{plain}", pytrace=False)
    assert _repository_changes() == before, f"{path.name} wrote into the repository; write into a tempfile folder"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), f"{path.name}: not every code cell ran"
    images = sum("image/png" in out.get("data", {}) for cell in code for out in cell.outputs)
    assert images, f"{path.name} drew no figure inline"
