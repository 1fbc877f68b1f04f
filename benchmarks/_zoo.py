"""The models a benchmark times: the demo zoo's run folders, or, on a machine without one, the test zoo's small
models (tests/_app_zoo.py) standing in, said in the note every benchmark prints with its figures."""
from __future__ import annotations

import sys
from pathlib import Path

from zoo.catalog import ModelEntry, discover_models

ROOT = Path(__file__).resolve().parents[1]


def demo_or_test_zoo(weights: Path, folder: Path, digits_only: bool = False) -> tuple[list[ModelEntry], str]:
    """(the available run folders in `weights`, what they are in words); without any, the test zoo's models
    (only its digit classifiers when `digits_only`) built under `folder`."""
    demo = [e for e in discover_models(weights) if e.available]
    if demo:
        return demo, f"the demo zoo in {weights}"
    sys.path.insert(0, str(ROOT / "tests"))
    from _app_zoo import DIGITS, TINY_MODELS, build_tiny_zoo

    build_tiny_zoo(folder / "tiny")
    found = {e.id: e for e in discover_models(folder / "tiny")}
    names = [name for name, spec in TINY_MODELS.items() if spec[4] == DIGITS or not digits_only]
    return [found[name] for name in names], (f"no demo zoo in {weights} (python scripts/build_demo_zoo.py builds "
                                             f"it): the test zoo's {'digit' if digits_only else 'small'} models")
