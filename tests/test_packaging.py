"""The built wheel, installed into a clean virtual environment, serves stock timm users.

The wheel is built from this checkout and installed without its dependencies into a new venv whose
only view of the pinned heavy packages (torch, timm, ...) is a .pth line to the test interpreter's
site-packages, so nothing of the source tree is importable there: `zoo` must come from the wheel.
"""
import json
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(python: Path, code: str, cwd: Path) -> str:
    result = subprocess.run([str(python), "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(python of a fresh venv with the wheel installed, a working folder outside the source tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(ROOT)],
                   check=True, cwd=tmp, capture_output=True, timeout=300)
    wheels = list((tmp / "dist").glob("medtl_zoo-*.whl"))
    assert len(wheels) == 1, wheels
    env = tmp / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    site = Path(_run(python, "import sysconfig; print(sysconfig.get_paths()['purelib'])", tmp).strip())
    (site / "_pinned_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", str(wheels[0])], check=True,
                   capture_output=True, timeout=300)
    work = tmp / "work"
    work.mkdir()
    return python, work


def test_wheel_holds_the_packages_not_tests_or_weights(installed):
    python, work = installed
    out = _run(python, """
        import importlib.metadata as md
        files = [str(f) for f in md.files("medtl-zoo")]
        print(sorted({f.split("/")[0] for f in files}))
        print(md.requires("medtl-zoo"))
        print("zoo/data/keras_reference.json" in files)
    """, work)
    tops = eval(out.splitlines()[0])  # noqa: S307  (our own printed list)
    assert "zoo" in tops and "train" in tops
    assert not {"tests", "weights", "app.py", "benchmarks", "scripts"} & set(tops)
    assert "timm" in out.splitlines()[1]
    assert out.splitlines()[2] == "True"  # the Keras reference every `python -m zoo import` checks against


def test_dependencies_declared_by_the_wheel_are_satisfied(installed):
    python, work = installed
    result = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", str(python),
                             "check"], capture_output=True, text=True, timeout=120)
    # only the wheel's own requirements matter; other packages of the shared site-packages are not ours
    ours = [line for line in result.stdout.splitlines() if line.startswith("medtl-zoo")]
    assert not ours, result.stdout


def test_stock_timm_loads_run_folders_from_the_installed_zoo(installed):
    python, work = installed
    _run(python, """
        import json, torch, zoo
        assert zoo.__file__.startswith(%r), zoo.__file__          # the wheel, not the source tree
        torch.manual_seed(0)
        native = zoo.create_model("lenet5", num_classes=3)
        zoo.save_pretrained(native, "lenet5-run", label_names=["a", "b", "c"])
        plain = zoo.create_model("mobilenetv3_small_100", num_classes=2)
        zoo.save_pretrained(plain, "mobilenet-run")
        x1, x3 = torch.rand(2, 1, 32, 32), torch.rand(1, 3, 64, 64)
        with torch.inference_mode():
            torch.save({"x1": x1, "x3": x3, "y1": native.eval()(x1), "y3": plain.eval()(x3)}, "expected.pt")
    """ % str(python.parent.parent), work)
    # a native architecture: stock timm knows it once the installed zoo is imported
    _run(python, """
        import timm, torch, zoo
        model = timm.create_model("local-dir:lenet5-run", pretrained=True).eval()
        ref = torch.load("expected.pt")
        with torch.inference_mode():
            assert torch.equal(model(ref["x1"]), ref["y1"])
    """, work)
    # a timm-native architecture: timm alone, the zoo never imported
    _run(python, """
        import sys, timm, torch
        model = timm.create_model("local-dir:mobilenet-run", pretrained=True).eval()
        ref = torch.load("expected.pt")
        with torch.inference_mode():
            assert torch.allclose(model(ref["x3"]), ref["y3"], atol=1e-6)
        assert not any(m.split(".")[0] in ("zoo", "train") for m in sys.modules)
    """, work)
    assert json.loads((work / "lenet5-run" / "config.json").read_text())["architecture"] == "lenet5"


def test_console_scripts_run(installed):
    python, work = installed
    result = subprocess.run([str(python.parent / "medtl-zoo"), "info", "quadsnet"], cwd=work, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "quadsnet" in result.stdout, result.stderr
    result = subprocess.run([str(python.parent / "medtl-train"), "--help"], cwd=work, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "--arch" in result.stdout, result.stderr
