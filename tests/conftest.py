import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _zoo_cache(tmp_path_factory, monkeypatch):
    """One offline-weights cache for the session, never the user's ~/.cache."""
    import zoo._hub

    cache = tmp_path_factory.getbasetemp() / "zoo-cache"
    monkeypatch.setattr(zoo._hub, "CACHE_DIR", cache)
