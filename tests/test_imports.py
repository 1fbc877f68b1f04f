import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_zoo_imports_neither_gradio_nor_train_nor_app():
    code = ("import sys, zoo, zoo.images; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('gradio', 'train', 'app', 'gradio_client')]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zoo_registers_native_models_with_timm():
    code = "import timm, zoo; m = timm.create_model('quadsnet', num_classes=2); print(type(m).__name__)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "QuadSNet" in result.stdout, result.stderr
