"""MkDocs hooks of the documentation site (mkdocs.yml `hooks:`), run by `mkdocs build` and `mkdocs serve`.

- The notebooks at the repository root (`notebooks/*.ipynb`) join the site under `notebooks/`, where
  mkdocs-jupyter renders them (not executed: their own test runs them). They stay where they are, so no symbolic
  link is needed (one would not survive a checkout on Windows).
- One API reference page per public module of `zoo` and `train` is generated under `api/` and listed in the nav's
  "API reference" section: a module is public when no part of its dotted name starts with an underscore, so a new
  module gets its page without a list to edit (`public_modules`, which tests/test_docs.py shares).
"""
from __future__ import annotations

import logging
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.docs")
ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("zoo", "train")
API_SECTION = "API reference"


def public_modules(package: str, root: Path = ROOT) -> list[str]:
    """The dotted names of a package's public modules, the package first: no part starts with an underscore
    (`__init__` stands for its package), `__main__` excepted."""
    names = []
    for file in sorted((root / package).rglob("*.py")):
        parts = file.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(part.startswith("_") for part in parts):
            names.append(".".join(parts))
    return sorted(names, key=lambda name: (name != package, name))


def api_page(module: str) -> str:
    """The Markdown of one module's API page: its title and mkdocstrings' directive."""
    return f"# `{module}`\n\n::: {module}\n"


def _api_uri(module: str) -> str:
    return f"api/{module}.md"


def with_api_section(nav: list) -> list:
    """The nav with the API reference section's index page followed by one entry per public module."""
    section = [{package: [{module: _api_uri(module)} for module in public_modules(package)]}
               for package in PACKAGES]
    out = []
    for item in nav:
        if isinstance(item, dict) and API_SECTION in item:
            index = item[API_SECTION]
            written = [index] if isinstance(index, str) else [  # a rebuild (mkdocs serve) finds its own entries
                entry for entry in index if not (isinstance(entry, dict) and set(entry) <= set(PACKAGES))]
            out.append({API_SECTION: written + section})
        else:
            out.append(item)
    return out


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns the notebooks into pages
def on_files(files: Files, config) -> Files:
    """Add the notebooks and the generated API pages to the site's files, and the API pages to the nav."""
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        # a File read from the repository root (not File.generated: mkdocs-jupyter's wrapper finds the source
        # path of a file only through its src_dir)
        files.append(File(f"notebooks/{notebook.name}", src_dir=str(ROOT), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    for package in PACKAGES:
        for module in public_modules(package):
            files.append(File.generated(config, _api_uri(module), content=api_page(module)))
    if config.nav:
        config.nav = with_api_section(config.nav)
    return files
