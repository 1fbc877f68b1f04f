"""The documentation site and the README: `mkdocs build --strict` passes (no broken link, no warning) with the
notebooks rendered and an API page per public module, every public function and class of those modules has a
docstring, and the README's links into docs/ resolve."""
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _hooks():
    """scripts/docs_hooks.py, the site's hook module (its public_modules rule is shared here)."""
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "scripts" / "docs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built with --strict from a copy of the docs, mkdocs.yml and the hook, beside links to zoo/ and
    train/, and the repository's notebooks. (path of the built site, names of the notebooks it was given)."""
    tree = tmp_path_factory.mktemp("docs-tree")
    shutil.copy(ROOT / "mkdocs.yml", tree / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tree / "docs")
    shutil.copytree(ROOT / "overrides", tree / "overrides")
    (tree / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "docs_hooks.py", tree / "scripts" / "docs_hooks.py")
    for package in ("zoo", "train"):
        (tree / package).symlink_to(ROOT / package, target_is_directory=True)
    (tree / "notebooks").mkdir()
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    for notebook in notebooks:
        shutil.copy(notebook, tree / "notebooks" / notebook.name)
    assert notebooks, "no notebook in notebooks/: the site's nav lists three"
    out = tree / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=tree,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return out, sorted(p.name for p in (tree / "notebooks").glob("*.ipynb"))


@pytest.mark.heavy
def test_the_site_builds_strict_and_renders_its_pages(site):
    out, notebooks = site
    home = (out / "index.html").read_text()
    assert 'src="images/compare.png"' in home and (out / "images" / "compare.png").is_file()
    assert "Transfer-learning model zoo for medical images" in home
    assert "ZOO_APP_UPLOAD_TTL_S" in (out / "settings" / "index.html").read_text()
    trust = (out / "trust" / "index.html").read_text()
    assert "What each number means" in trust and "Brier score" in trust
    for name in notebooks:  # each notebook is a page of the site, with its code cell, and listed in the nav
        page = out / "notebooks" / Path(name).stem / "index.html"
        assert page.is_file(), f"notebooks/{name} was not rendered"
        assert re.search(rf'href="[^"]*{re.escape(name)}"[^>]*download', page.read_text())  # the download button
        assert (page.parent / name).is_file()
        assert f'href="notebooks/{Path(name).stem}/"' in home or f'href="./notebooks/{Path(name).stem}/"' in home
    search = json.loads((out / "search" / "search_index.json").read_text())
    assert any("wilson_interval" in doc["location"] for doc in search["docs"])


@pytest.mark.heavy
def test_every_public_module_has_an_api_page_with_its_docstrings(site):
    out, _ = site
    hooks = _hooks()
    for package in hooks.PACKAGES:
        for module in hooks.public_modules(package):
            assert (out / "api" / module / "index.html").is_file(), f"no API page for {module}"
    page = (out / "api" / "zoo" / "index.html").read_text()
    assert "create_model" in page and "load_pretrained" in page  # zoo.__all__, rendered from the docstrings
    assert "The 95% Wilson score interval" in (out / "api" / "zoo.intervals" / "index.html").read_text()


# methods of timm's model interface and torch's nn.Module: timm and torch document what they do
MODEL_INTERFACE = frozenset({"forward", "forward_features", "forward_head", "get_classifier", "reset_classifier",
                             "group_matcher", "set_grad_checkpointing", "extra_repr"})


def _documented_in_a_base(cls, name: str) -> bool:
    """A base class of the project (its own methods resolution order) documents a method of this name."""
    try:
        bases = cls.mro()
    except Exception:  # noqa: BLE001  (a base outside the project, e.g. nn.Module, ends griffe's resolution)
        return False
    return any(name in base.members and not base.members[name].is_alias and base.members[name].docstring
               for base in bases)


def _undocumented(member) -> list[str]:
    """The member itself, if it is a public function or class without a docstring, and its public methods
    without one (an override documented by the base class it overrides, and the model interface, excepted)."""
    where = lambda obj: f"{obj.path} ({obj.relative_filepath}:{obj.lineno})"  # noqa: E731
    found = [where(member)] if (member.is_function or member.is_class) and not member.docstring else []
    if member.is_class:
        found += [where(method) for name, method in member.members.items()
                  if not method.is_alias and method.is_function and not name.startswith("_") and not method.docstring
                  and name not in MODEL_INTERFACE and not _documented_in_a_base(member, name)]
    return found


def test_every_public_function_and_class_has_a_docstring():
    """Functions, classes and their public methods defined in each public module of zoo and train (re-exports are
    checked where they are defined). Read statically with griffe, as mkdocstrings reads them: nothing is imported."""
    import griffe

    hooks = _hooks()
    missing = []
    for package in hooks.PACKAGES:
        loaded = griffe.load(package, search_paths=[str(ROOT)], docstring_parser=None)
        for name in hooks.public_modules(package):
            module = loaded if name == package else loaded[name.split(".", 1)[1]]
            for member in module.members.values():
                if not member.is_alias and not member.name.startswith("_"):
                    missing += _undocumented(member)
    assert missing == [], "public functions, classes and methods without a docstring:\n" + "\n".join(missing)


def test_public_modules_follow_the_underscore_rule(tmp_path):
    for path in ("pkg/__init__.py", "pkg/a.py", "pkg/_b.py", "pkg/__main__.py", "pkg/sub/__init__.py",
                 "pkg/sub/c.py", "pkg/_private/d.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).touch()
    assert _hooks().public_modules("pkg", tmp_path) == ["pkg", "pkg.a", "pkg.sub", "pkg.sub.c"]


def test_the_readme_is_a_short_front_page_whose_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+://", t) and not t.startswith("#")]
    assert "docs/index.md" in local and "docs/images/compare.png" in local
    broken = [t for t in local if not (ROOT / t).exists()]
    assert broken == [], f"README links to missing files: {broken}"
    assert "mkdocs serve" in readme and "bash .ci/run" in readme


def test_the_api_section_lists_every_public_module_once_per_build():
    hooks = _hooks()
    nav = [{"Home": "index.md"}, {"Batch classification": "batch.md"}, {"API reference": "api/index.md"}]
    once = hooks.with_api_section(nav)
    assert [next(iter(item)) for item in once] == ["Home", "Batch classification", "API reference"]
    api = once[-1]["API reference"]
    assert api[0] == "api/index.md" and [next(iter(entry)) for entry in api[1:]] == list(hooks.PACKAGES)
    assert {"zoo.intervals": "api/zoo.intervals.md"} in api[1]["zoo"]
    assert hooks.with_api_section(once) == once  # mkdocs serve rebuilds the nav it was given
