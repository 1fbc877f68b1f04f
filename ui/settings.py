"""The app's settings, read from environment variables when the demo is built (never on import)."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from zoo import ZooError
from zoo import images as zoo_images
from zoo.backends import BACKENDS, check_backend
from zoo.upload_limits import MAX_UPLOAD_SIZE

__all__ = ["APP_ROOT", "ENVIRONMENT_HELP", "Settings", "SettingsError"]

APP_ROOT = Path(__file__).resolve().parents[1]  # the folder of app.py

ENVIRONMENT_HELP = f"""\
    ZOO_APP_WEIGHTS        run folders to offer (default: weights/ beside app.py)
    ZOO_APP_CATALOG        catalog file (default: <weights>/catalog.json; format in zoo/catalog.py)
    ZOO_APP_CACHE_MODELS   loaded models kept in memory, least recently used evicted (default 8)
    ZOO_APP_CACHE_MB       and at most this many megabytes of what they hold: ONNX Runtime's session, and the
                           PyTorch model once a Grad-CAM heatmap built it (default: no byte limit)
    ZOO_APP_BACKEND        what runs the models: onnx (default: ONNX Runtime where installed and the run has,
                           or gets once in the zoo's cache, a verified model.onnx; else PyTorch, saying why),
                           onnx-int8 (a run's model.int8.onnx where it has one), or torch (always PyTorch)
    ZOO_APP_MAX_FILE_SIZE  upload limit (default {MAX_UPLOAD_SIZE})
    ZOO_APP_MAX_PIXELS     largest image accepted, in pixels (default {zoo_images.MAX_IMAGE_PIXELS:,})
    ZOO_APP_QUEUE_SIZE     requests allowed to wait (default 20)
    ZOO_APP_CONCURRENCY    requests that read images (comparisons, previews) run at the same time (default 1:
                           a comparison already uses every core)
    ZOO_APP_UPLOAD_TTL_S   uploads and generated files are deleted once older than this many seconds (default
                           3600; checked every 5 minutes, or every TTL if shorter), and all of them at shutdown
    ZOO_APP_EXAMPLES       folder in which each app process makes its private examples folder (default: {tempfile.gettempdir()})
    ZOO_APP_OPEN_BROWSER   1: open the page in a browser on start (run.sh sets it when there is a display)
    ZOO_APP_TRAIN_MAX_S    the Train tab's time cap per job, in seconds (default 300): a job estimated above it is
                           refused before it starts, one that runs past it is stopped and keeps nothing
    ZOO_APP_SAVE_TRAINED   1: the Train tab offers to save trained models into the weights folder; 0: never
                           (default: 1 when the app listens only on this machine, GRADIO_SERVER_NAME unset or
                           127.0.0.1/localhost/::1; 0 when it listens beyond it)
"""


class SettingsError(ValueError):
    """An environment variable of the app holds a value it cannot use."""


@dataclass
class Settings:
    """What the app serves and its limits (ENVIRONMENT_HELP lists the environment variables)."""

    weights: Path
    catalog: Path | None = None
    cache_models: int = 8
    cache_mb: int | None = None
    max_file_size: str = MAX_UPLOAD_SIZE
    max_pixels: int = zoo_images.MAX_IMAGE_PIXELS
    queue_size: int = 20
    concurrency: int = 1
    examples_dir: Path | None = None      # parent of the private examples folder (None: the system's temp folder)
    open_browser: bool = False
    upload_ttl_s: int = 3600
    backend: str = "onnx"
    train_max_s: int = 300
    save_trained: bool = False            # the Train tab may copy trained models into `weights`

    @property
    def delete_cache(self) -> tuple[int, int]:
        """gr.Blocks(delete_cache=(every, age)): files older than upload_ttl_s go, checked every 5 min at most."""
        return min(self.upload_ttl_s, 300), self.upload_ttl_s

    @classmethod
    def from_env(cls) -> Settings:
        """The settings from ZOO_APP_* variables; a bad value raises SettingsError naming it."""
        env = os.environ.get
        catalog = env("ZOO_APP_CATALOG")
        return cls(weights=Path(env("ZOO_APP_WEIGHTS", APP_ROOT / "weights")),
                   catalog=Path(catalog) if catalog else None,
                   cache_models=_int_env("ZOO_APP_CACHE_MODELS", 8), cache_mb=_int_env("ZOO_APP_CACHE_MB", None),
                   max_file_size=env("ZOO_APP_MAX_FILE_SIZE", MAX_UPLOAD_SIZE),
                   max_pixels=_int_env("ZOO_APP_MAX_PIXELS", zoo_images.MAX_IMAGE_PIXELS),
                   queue_size=_int_env("ZOO_APP_QUEUE_SIZE", 20), concurrency=_int_env("ZOO_APP_CONCURRENCY", 1),
                   examples_dir=Path(env("ZOO_APP_EXAMPLES")) if env("ZOO_APP_EXAMPLES") else None,
                   open_browser=env("ZOO_APP_OPEN_BROWSER") == "1",
                   upload_ttl_s=_int_env("ZOO_APP_UPLOAD_TTL_S", 3600), backend=_backend_env(),
                   train_max_s=_int_env("ZOO_APP_TRAIN_MAX_S", 300), save_trained=_save_trained_env())


LOCAL_HOSTS = ("", "127.0.0.1", "localhost", "::1")


def _save_trained_env() -> bool:
    """ZOO_APP_SAVE_TRAINED, else on only while the server listens on this machine alone."""
    value = os.environ.get("ZOO_APP_SAVE_TRAINED", "")
    if value in ("0", "1"):
        return value == "1"
    if value:
        raise SettingsError(f"ZOO_APP_SAVE_TRAINED={value!r} must be 0 or 1; set it to one or unset it.")
    return os.environ.get("GRADIO_SERVER_NAME", "").strip().lower() in LOCAL_HOSTS


def _backend_env() -> str:
    value = os.environ.get("ZOO_APP_BACKEND") or "onnx"
    try:
        return check_backend(value)
    except ZooError:
        raise SettingsError(f"ZOO_APP_BACKEND={value!r} is not a backend; set it to one of {', '.join(BACKENDS)} "
                            "or unset it (default onnx).") from None


def _int_env(name: str, default: int | None) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r} must be a whole number (default {default}); "
                            f"set it to one or unset it.") from None
    if number < 1:
        raise SettingsError(f"{name}={value!r} must be at least 1 (default {default}); set it to one or unset it.")
    return number
