"""Private mode: the comparison computed in the browser, so that the image never leaves the user's machine.

The server's part is read-only: it serves the page (web/private.html, web/private.js, web/preprocess.js),
onnxruntime-web's files from web/node_modules (installed by `npm ci`, never a CDN), and, for each model on
offer, what the page needs to run it: the verified model.onnx, a small JSON bundle (its format version,
preprocessing, labels, temperature, conformal threshold, metadata default, Grad-CAM's closed form), the OOD bank and
the head's weights for Grad-CAM (ui.private_cam) as raw float32. A model is on offer
when it is a local run folder whose model.onnx ONNX Runtime accepted as verified for its weights
(zoo.load_backend), whose download (model.onnx plus the OOD bank) is no larger than MAX_ONNX_BYTES in all, with a
preprocessing the page implements, and whose trust values pass the server's own validation (zoo.trust.read_trust:
one function for both sides; the bundle's temperature, conformal threshold and OOD bank are what it returns).
Files are looked up by model id in the offer (a dict); no path ever comes from the client. No route accepts a body.

Files served are the files checked: model.onnx is opened without following a link (O_NOFOLLOW), at offer time
and again at each request, and its bytes are served only when their sha256 is the offer's (a file or link
swapped in later is refused). Messages to the browser name run folders, never a server path
(ui.public_errors.public_message). The offer is rebuilt in a worker thread, off the event loop.

Wiring (app.py): `launch_kwargs()` passes `private_routes(settings)` to demo.launch(app_kwargs={"routes":
...}) (FastAPI's own `routes` argument, documented for launch's app_kwargs), and the Private tab links to
PAGE_PATH.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

import zoo
from zoo import ZooError
from zoo.backends import Backend
from zoo.catalog import ModelEntry, discover_models
from zoo.eval_transform import RESIZE_KEY
from zoo.run_layout import CONFIG_NAME, ONNX_NAME, OOD_NAME, WEIGHTS_NAME
from zoo.prediction_sets import ThresholdSets
from zoo.trust import Trust, read_trust

from .private_cam import CAM_FILE, cam_bundle, page_heatmap_settings
from .public_errors import public_message
from .settings import APP_ROOT, Settings

__all__ = ["PAGE_PATH", "BUNDLE_VERSION", "MAX_ONNX_BYTES", "INTERPOLATIONS", "WEB_DIR", "ORT_DIST", "PrivateOffer", "OfferedModel",
           "private_routes", "web_files", "read_checked_file", "TAB_MARKDOWN"]

PAGE_PATH = "/private/"
# the format of a model's bundle.json; web/private.js declares the version it reads and refuses any other
# (a tab left open across an update of the app, or a stale cached page). Raise it when a key changes meaning.
# 2: "cam" and "cam_reason" (the page's Grad-CAM; a version-1 bundle cached by the page lacks them)
BUNDLE_VERSION = 2
MAX_ONNX_BYTES = 100 * 2**20  # a model's download (ONNX + OOD bank) over this is not offered: a tab would hold it
# PIL's resampling filters, all implemented in web/preprocess.js (the names timm's pretrained_cfg uses)
INTERPOLATIONS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")
WEB_DIR = APP_ROOT / "web"
ORT_DIST = WEB_DIR / "node_modules" / "onnxruntime-web" / "dist"
# what the page loads: onnxruntime-web's WebAssembly build (the UMD script, its ES-module loader and the binary)
_ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
_PAGE_FILES = ("private.js", "preprocess.js", "cam.js", "private.css")
_MEDIA_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
                ".css": "text/css", ".html": "text/html; charset=utf-8"}
# cross-origin isolation, so that the page may use SharedArrayBuffer and onnxruntime-web's threads
_ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
              "Cross-Origin-Resource-Policy": "same-origin", "X-Content-Type-Options": "nosniff"}

TAB_MARKDOWN = f"""\
### Private mode: the comparison runs in your browser

[Open the private comparison page]({PAGE_PATH.lstrip('/')}) (a page of this app). It downloads each chosen
model's ONNX file and settings from this server once, keeps them in the browser's cache, and then classifies
your image **inside the page** with ONNX Runtime Web (WebAssembly): **the image is never uploaded**, and no
request the page makes carries it. PNG and JPEG only (DICOM needs the server mode of the Compare tab); models
whose download (ONNX file and OOD feature bank) is larger than {MAX_ONNX_BYTES // 2**20} MB are not offered there.
Grad-CAM heatmaps are computed in the page too, for models whose head gives Grad-CAM's gradient in closed form
(a linear or MLP head on the pooled last feature map, checked when the ONNX file was exported); the others say
why they have none (the Compare tab makes theirs with PyTorch).
"""


def web_files() -> dict[str, Path]:
    """The page's static files by the only names a client may ask for."""
    files = {name: WEB_DIR / name for name in _PAGE_FILES}
    files.update({name: ORT_DIST / name for name in _ORT_FILES})
    return files


@dataclass
class OfferedModel:
    """One model the private page may run: its ONNX file and the bundle the page needs."""

    id: str
    onnx_path: Path
    bundle: dict[str, Any]
    ood_bank: bytes | None = field(default=None, repr=False)  # (N, D) float32, little-endian
    cam_weights: bytes | None = field(default=None, repr=False)  # the head's weights, float32 (ui.private_cam)

    @property
    def download_bytes(self) -> int:
        """What the browser downloads for it: the ONNX file, the OOD bank and the head's weights."""
        return self.bundle["onnx"]["bytes"] + len(self.ood_bank or b"") + len(self.cam_weights or b"")


def _preprocessing(config: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """config.json's pretrained_cfg resolved as timm resolves it, or the reason the page cannot do it."""
    from timm.data import resolve_data_config  # noqa: PLC0415

    resize = (config.get("zoo") or {}).get(RESIZE_KEY)
    if resize is not None:  # the page resizes as PIL/timm do (web/preprocess.js): another resize gives other inputs
        return None, (f"its resize {resize!r:.40} (TensorFlow's bilinear, without antialiasing) is not implemented "
                      "in the browser")
    data = resolve_data_config({}, pretrained_cfg=dict(config.get("pretrained_cfg") or {}))
    channels, height, width = (int(v) for v in data["input_size"])
    crop_mode = data.get("crop_mode") or "center"
    if data["interpolation"] not in INTERPOLATIONS:
        return None, f"its interpolation {data['interpolation']!r} is not implemented in the browser"
    if crop_mode not in ("center", "squash") or (crop_mode == "center" and height != width):
        return None, (f"its preprocessing (crop_mode {crop_mode!r}, input {height}x{width}) is not implemented "
                      "in the browser")
    if channels not in (1, 3):
        return None, f"it takes {channels} channels (the page gives 1 or 3)"
    return {"input_size": [channels, height, width], "interpolation": data["interpolation"],
            "crop_pct": float(data["crop_pct"]), "crop_mode": crop_mode,
            "mean": [float(v) for v in data["mean"]], "std": [float(v) for v in data["std"]]}, None


def _onnx_outputs(data: bytes) -> list[str]:
    import onnx  # noqa: PLC0415

    return [o.name for o in onnx.load_model_from_string(data).graph.output]


def read_checked_file(path: Path, max_bytes: int, sha256: str | None = None) -> bytes:
    """The bytes of `path`, opened without following a link, if it is a regular file of at most `max_bytes`
    (and, given `sha256`, exactly those bytes); a ZooError naming the file (not its folder) otherwise."""
    # O_NOFOLLOW: a link swapped in is refused, not followed; O_NONBLOCK: a FIFO swapped in cannot hang the open
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        why = "it is a link, which is never followed" if os.path.islink(path) else e.strerror
        raise ZooError(f"its {path.name} cannot be opened ({why})") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ZooError(f"its {path.name} is not a regular file")
        if info.st_size > max_bytes:
            raise ZooError(f"its {path.name} is {info.st_size / 2**20:.1f} MB, over private mode's limit of "
                           f"{max_bytes / 2**20:.0f} MB: use the Compare tab")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes or (sha256 is not None and hashlib.sha256(data).hexdigest() != sha256):
        raise ZooError(f"its {path.name} changed since it was offered; reload the page")
    return data


def _bundle(entry: ModelEntry, backend: Backend, trust: Trust, preprocessing: dict[str, Any], data: bytes
            ) -> tuple[dict[str, Any], bytes | None]:
    """What the page needs to run the model, from the values the server's validation returned; and the OOD bank
    as raw little-endian float32 (None without one)."""
    outputs = _onnx_outputs(data)
    bundle: dict[str, Any] = {
        "format_version": BUNDLE_VERSION,
        "id": entry.id, "label_names": backend.label_names, "preprocessing": preprocessing,
        "temperature": trust.temperature,
        # the page implements temperature scaling and threshold sets (web/private.js): other methods are not offered
        "conformal": ({"alpha": trust.prediction_sets.alpha, "threshold": trust.prediction_sets.threshold}
                      if isinstance(trust.prediction_sets, ThresholdSets) and trust.temperature is not None else None),
        "onnx": {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "outputs": outputs},
        "metadata_unknown": None, "ood": None, "ood_reason": None, "cam": None, "cam_reason": None,
    }
    if backend.metadata_schema is not None:  # the page has no metadata fields: every one unknown, as in /compare
        bundle["metadata_unknown"] = backend.metadata_schema.encode([{}])[0].tolist()
    if "features" not in outputs:
        bundle["ood_reason"] = "no OOD check in private mode for this model (its ONNX file has no features output)"
        return bundle, None
    if trust.ood is None:
        bundle["ood_reason"] = f"no OOD statistics ({OOD_NAME}) in its run folder"
        return bundle, None
    arrays = {name: np.ascontiguousarray(a, dtype="<f4") for name, a in trust.ood.browser_arrays().items()}
    ood_bank = b"".join(a.tobytes() for a in arrays.values())  # the method's arrays, one after the other
    offsets = np.cumsum([0, *(a.size for a in arrays.values())]).tolist()
    bundle["ood"] = {"method": trust.ood.name, "threshold": trust.ood.threshold, "dim": trust.ood.width,
                     "arrays": {name: {"shape": list(a.shape), "offset": offset}
                                for (name, a), offset in zip(arrays.items(), offsets)},
                     "sha256": hashlib.sha256(ood_bank).hexdigest(), "bytes": len(ood_bank)}
    return bundle, ood_bank


def _check_download_size(folder: Path, onnx_bytes: int, max_bytes: int) -> None:
    """Refuse a model whose browser download, model.onnx plus the OOD bank (ood.safetensors holds it as raw
    float32: the same size to within its header), is over `max_bytes` in all; sized with lstat, nothing read."""
    try:
        bank_bytes = (folder / OOD_NAME).lstat().st_size
    except FileNotFoundError:
        return
    if onnx_bytes + bank_bytes > max_bytes:
        raise ZooError(f"its download is {(onnx_bytes + bank_bytes) / 2**20:.1f} MB ({ONNX_NAME} "
                       f"{onnx_bytes / 2**20:.1f} MB + {OOD_NAME} {bank_bytes / 2**20:.1f} MB), over private mode's "
                       f"limit of {max_bytes / 2**20:.0f} MB: use the Compare tab")


def _offer(entry: ModelEntry, max_bytes: int) -> tuple[OfferedModel | None, str | None]:
    """The entry as an offered model, or (None, why it is not offered)."""
    if entry.source != "local" or entry.run_dir is None:
        return None, "private mode serves local run folders only"
    if not entry.available:
        return None, f"unavailable: {entry.reason}"
    folder = Path(entry.run_dir)
    onnx_path = folder / ONNX_NAME
    if not os.path.lexists(onnx_path):
        return None, f"no {ONNX_NAME} in its run folder (python -m zoo export {folder} makes one)"
    try:
        data = read_checked_file(onnx_path, max_bytes)
        _check_download_size(folder, len(data), max_bytes)  # before the bank is read (read_trust below)
    except ZooError as e:
        return None, str(e)
    config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    preprocessing, problem = _preprocessing(config)
    if problem:
        return None, problem
    backend = zoo.load_backend(folder, "onnx", export_missing=False)  # checks and verifies model.onnx
    if backend.name != "onnx":
        return None, f"its {ONNX_NAME} was not accepted: {backend.fallback_reason}"
    if backend.info.get("sha256") != hashlib.sha256(data).hexdigest():
        return None, f"its {ONNX_NAME} changed while it was being checked; reload the page"
    try:  # the server's own validation: the page gets exactly the values /compare uses
        trust = read_trust(folder, config, backend.feature_width)
    except ZooError as e:
        return None, f"its trust values were refused: {e}"
    bundle, ood_bank = _bundle(entry, backend, trust, preprocessing, data)
    spare = max_bytes - len(data) - len(ood_bank or b"")
    bundle["cam"], bundle["cam_reason"], cam_weights = cam_bundle(backend, spare)
    return OfferedModel(entry.id, onnx_path, bundle, ood_bank, cam_weights), None


class PrivateOffer:
    """The models private mode offers, rebuilt when the run folders change (checked on each list request)."""

    def __init__(self, weights: Path, catalog: Path | None = None, max_bytes: int = MAX_ONNX_BYTES):
        self.weights, self.catalog, self.max_bytes = Path(weights), catalog, max_bytes
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self.models: dict[str, OfferedModel] = {}
        self.refused: dict[str, str] = {}

    def _folder_stamp(self) -> tuple:
        stamp = []
        for folder in sorted(p for p in self.weights.iterdir() if p.is_dir()) if self.weights.is_dir() else []:
            for name in (WEIGHTS_NAME, CONFIG_NAME, ONNX_NAME, OOD_NAME):
                try:
                    info = (folder / name).lstat()  # a link swapped in changes the stamp, whatever it points to
                    stamp.append((folder.name, name, info.st_mode, info.st_mtime_ns, info.st_size))
                except OSError:
                    pass
        return tuple(stamp)

    def refresh(self) -> None:
        """Re-read the run folders if any of their files changed."""
        with self._lock:
            stamp = self._folder_stamp()
            if stamp == self._stamp:
                return
            models, refused = {}, {}
            for entry in discover_models(self.weights, self.catalog):
                try:
                    offered, reason = _offer(entry, self.max_bytes)
                except Exception as e:  # one damaged run folder must not hide the others
                    offered, reason = None, f"could not be prepared ({type(e).__name__}: {e})"
                if offered is not None:
                    models[entry.id] = offered
                else:  # what the browser reads: no server path
                    refused[entry.id] = public_message(reason or "not offered", self.weights)
            self.models, self.refused, self._stamp = models, refused, stamp

    def listing(self) -> dict[str, Any]:
        """What the page shows: the offered models (with their files' digests) and the others with the reason."""
        self.refresh()
        return {"max_onnx_bytes": self.max_bytes, "heatmap": page_heatmap_settings(),
                "models": [{"id": m.id, "onnx_sha256": m.bundle["onnx"]["sha256"],
                            "onnx_bytes": m.bundle["onnx"]["bytes"],
                            "ood_sha256": (m.bundle["ood"] or {}).get("sha256"),
                            "cam_sha256": (m.bundle["cam"] or {}).get("sha256"),
                            "download_bytes": m.download_bytes}
                           for m in self.models.values()],
                "not_offered": [{"id": i, "reason": r} for i, r in self.refused.items()]}

    def get(self, model_id: str) -> OfferedModel | None:
        """The offered model with exactly this id (no path is ever built from it)."""
        return self.models.get(model_id)


def _headers(cache: bool = False) -> dict[str, str]:
    return {**_ISOLATION, "Cache-Control": "public, max-age=31536000, immutable" if cache else "no-cache"}


def _not_found(what: str) -> JSONResponse:
    return JSONResponse({"error": what}, status_code=404, headers=_headers())


def private_routes(settings: Settings, max_bytes: int = MAX_ONNX_BYTES) -> list[Route]:
    """The read-only (GET) routes of private mode, for FastAPI's `routes` argument."""
    offer = PrivateOffer(settings.weights, settings.catalog, max_bytes)
    files = web_files()

    async def page(request: Request) -> Response:
        return FileResponse(WEB_DIR / "private.html", media_type=_MEDIA_TYPES[".html"], headers=_headers())

    async def static(request: Request) -> Response:
        path = files.get(request.path_params["name"])
        if path is None:
            return _not_found(f"no such file; the page's files are {sorted(files)}")
        if not path.is_file():
            return _not_found(f"{path.name} is missing on the server: run `npm ci --omit=dev` in web/ "
                              "(run.sh does it)")
        return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=_headers())

    async def listing(request: Request) -> Response:
        # a rebuild reads and verifies run folders (seconds): in a worker thread, never on the event loop
        return JSONResponse(await run_in_threadpool(offer.listing), headers=_headers())

    async def model_file(request: Request) -> Response:
        model = offer.get(request.path_params["model_id"])
        if model is None:
            return _not_found(f"no model {request.path_params['model_id']!r} on offer in private mode")
        kind = request.path_params["kind"]
        if kind == "bundle.json":
            return JSONResponse(model.bundle, headers=_headers())
        if kind == ONNX_NAME:  # the bytes read now, no link followed, and only if they are the offered ones
            try:
                data = await run_in_threadpool(read_checked_file, model.onnx_path, max_bytes,
                                               model.bundle["onnx"]["sha256"])
            except ZooError as e:
                return JSONResponse({"error": f"{model.id}: {e}"}, status_code=409, headers=_headers())
            return Response(data, media_type="application/octet-stream", headers=_headers(True))
        if kind == "ood.bin" and model.ood_bank is not None:
            return Response(model.ood_bank, media_type="application/octet-stream", headers=_headers(True))
        if kind == CAM_FILE and model.cam_weights is not None:
            return Response(model.cam_weights, media_type="application/octet-stream", headers=_headers(True))
        return _not_found(f"{model.id} has no file {kind!r} (bundle.json, {ONNX_NAME}, ood.bin, {CAM_FILE})")

    base = PAGE_PATH.rstrip("/")
    return [Route(PAGE_PATH, page, methods=["GET"]),
            Route(f"{base}/static/{{name}}", static, methods=["GET"]),
            Route(f"{base}/api/models", listing, methods=["GET"]),
            Route(f"{base}/api/models/{{model_id}}/{{kind}}", model_file, methods=["GET"])]
