"""The sweep's grid: its cells (data set × architecture × mode × input size × seed), each a TrainConfig with
its own run folder, validated as a whole before any cell starts."""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import zoo

from .._errors import ConfigError
from ..config import TrainConfig, load_yaml_config
from ..data import load_source

__all__ = ["GRID_KEYS", "CELL_OPTIONS", "MAX_CELLS", "Cell", "build_cells", "load_grid_file", "validate_cells"]

# the grid's axes (python -m train's option names); every other train option is shared by all cells
GRID_KEYS = ("arch", "mode", "data", "img_size", "seeds")
# options the sweep sets per cell (its folder, its seed); a grid may not set them for all cells
CELL_OPTIONS = ("seed", "out", "name", "overwrite", "push_to_hub", "private", "hub_revision", "commit_message")
MAX_CELLS = 24  # a bigger grid needs --yes: on this 2-core machine even 24 tiny cells take the better part of an hour


@dataclass(frozen=True)
class Cell:
    """One training run of the sweep."""

    data: str
    arch: str
    mode: str
    img_size: int | None
    seed: int
    folder: Path
    config: TrainConfig

    @property
    def name(self) -> str:
        return self.folder.name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-._") or "data"


def cell_folder_name(data: str, arch: str, mode: str, img_size: int | None, seed: int) -> str:
    """The run folder of a cell, named from its coordinates: digits__lenet5__scratch__img32__seed0."""
    size = f"img{img_size}" if img_size is not None else "imgdefault"
    return f"{_slug(data)}__{arch}__{mode}__{size}__seed{seed}"


def _as_list(key: str, value: Any) -> list[Any]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ConfigError(f"the grid's {key!r} is empty; give at least one value")
    return values


def load_grid_file(path: str | Path) -> dict[str, Any]:
    """A YAML grid: the axes (arch, mode, data, img_size, seeds; a value or a list) and shared train options."""
    return load_yaml_config(path, option="--grid", extra_keys=GRID_KEYS)


def build_cells(axes: dict[str, Any], shared: dict[str, Any], out: str | Path) -> list[Cell]:
    """Every cell of the grid `axes` with the `shared` train options, each in its own folder under `out`."""
    for key in ("arch", "data"):
        if not axes.get(key):
            raise ConfigError(f"the grid has no {key!r}: pass --{key} NAME ... or put '{key}:' in the --grid file")
    set_per_cell = sorted(set(shared) & set(CELL_OPTIONS))
    if set_per_cell:
        raise ConfigError(f"the sweep sets {set_per_cell} for each cell itself (seeds come from --seeds, folders "
                          "from --out); remove them from the shared options")
    base = TrainConfig.from_dict(shared)  # refuses unknown option names
    modes = _as_list("mode", axes.get("mode") or base.mode)
    sizes = _as_list("img_size", axes.get("img_size") or [base.img_size])
    seeds = _as_list("seeds", axes.get("seeds") if axes.get("seeds") is not None else [0])
    cells = []
    for data, arch, mode, size, seed in itertools.product(_as_list("data", axes["data"]), _as_list("arch", axes["arch"]),
                                                          modes, sizes, seeds):
        size = None if size is None else int(size)
        folder = Path(out) / cell_folder_name(str(data), str(arch), str(mode), size, int(seed))
        config = replace(base, data=str(data), arch=str(arch), mode=str(mode), img_size=size, seed=int(seed),
                         out=str(folder), name=None, overwrite=False)
        cells.append(Cell(str(data), str(arch), str(mode), size, int(seed), folder, config))
    return cells


def validate_cells(cells: Sequence[Cell], yes: bool = False) -> None:
    """Refuse the whole grid before anything runs: an unknown architecture, mode, option value or data set
    (train's and the zoo's own checks, naming the cell), two cells sharing a folder, or too many cells without --yes."""
    if len(cells) > MAX_CELLS and not yes:
        raise ConfigError(f"the grid has {len(cells)} cells, more than {MAX_CELLS}; pass --yes to run them all")
    folders: dict[Path, Cell] = {}
    for cell in cells:
        try:
            zoo.get_architecture(cell.arch)
            cell.config.validate()
        except (ConfigError, zoo.ZooError) as e:
            raise ConfigError(f"cell {cell.name}: {e}") from None
        other = folders.setdefault(cell.folder.resolve(), cell)
        if other is not cell:
            raise ConfigError(f"cells {other.name} and {cell.name} would write the same folder {cell.folder}; "
                              "remove the repeated value from the grid")
    first_of = {cell.data: cell for cell in reversed(cells)}
    for cell in first_of.values():  # read each data set once: a bad spec fails here, not in a worker
        cfg = cell.config
        try:
            load_source(cfg.data, image_dir=cfg.image_dir, image_col=cfg.image_col, label_col=cfg.label_col,
                        metadata_cols=cfg.metadata_cols)
        except (zoo.ZooError, ValueError) as e:
            raise ConfigError(f"cell {cell.name}: {e}") from None
