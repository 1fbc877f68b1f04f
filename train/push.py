"""Publish a finished run folder to the Hugging Face Hub.

    python -m train.push weights/RUN OWNER/NAME [--private] [--revision BRANCH] [--commit-message MSG] [--dry-run]

Exactly the publishable files go up, in one commit: the weights, config.json, the model card, metrics,
plots, split and resolved configuration, and model.onnx (with onnx.json) when the zoo finds it faithful to these
weights (its own record of a verification, or a verification now; never onnx.json's word); never checkpoints,
feature caches or anything in a subfolder.
The token comes from HF_TOKEN or the stored login (`hf auth login`), never from the command line, and
appears in no output, log, error or file. Nothing here writes to the run folder.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import socket
import struct
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Sequence

from zoo.run_layout import CONFIG_NAME, ONNX_INT8_NAME, ONNX_NAME, PUBLISHABLE, WEIGHTS_NAME
from zoo.zoo_config import ZooConfig

from ._errors import TrainError
from .logs import configure_logging

__all__ = ["push_run", "publishable_files", "check_push_target", "PushError", "PushFailedError", "main"]

_logger = logging.getLogger("train.push")

REQUIRED = (WEIGHTS_NAME, CONFIG_NAME)


class PushError(TrainError):
    """The run folder, repo id or token was refused before anything was sent."""


class PushFailedError(PushError):
    """The Hub or the network failed the push; the run folder is unchanged."""


def publishable_files(run_dir: str | Path) -> list[str]:
    """Names of the files in `run_dir` that a push uploads, sorted."""
    run_dir = Path(run_dir)
    return sorted(p.name for p in run_dir.iterdir()
                  if p.is_file() and any(fnmatch.fnmatchcase(p.name, pattern) for pattern in PUBLISHABLE))


def check_push_target(repo_id: str, *, revision: str | None = None, token: str | None = None,
                      dry_run: bool = False) -> str | None:
    """Validate the repo id and revision and find the token (None on a dry run); no network call.

    The training CLI calls this before training so a bad --push-to-hub fails in seconds, not after a run.
    """
    from huggingface_hub.errors import HFValidationError  # noqa: PLC0415
    from huggingface_hub.utils import get_token, validate_repo_id  # noqa: PLC0415

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise PushError(f"repo id {repo_id!r} is not of the form OWNER/NAME (your user or organisation name, "
                        "a slash, the model name)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise PushError(f"repo id {repo_id!r} is not valid on the Hub: {e}") from None
    if revision is not None and (not revision.strip() or revision.startswith("refs/")):
        raise PushError(f"--revision {revision!r} is not a branch name; give a branch such as 'main' or "
                        "'experiment-2' (it is created if missing)")
    if dry_run:
        return None
    token = token or get_token()
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN to a token with write access, or run "
                        "`hf auth login` once")
    return token


def _check_run_folder(run_dir: Path) -> list[str]:
    """The publishable files of a complete run folder whose weights load; PushError otherwise."""
    import zoo  # noqa: PLC0415

    if not run_dir.is_dir():
        raise PushError(f"run folder {run_dir} does not exist or is not a folder")
    missing = [name for name in REQUIRED if not (run_dir / name).is_file()]
    if missing:
        raise PushError(f"run folder {run_dir} has no {' or '.join(missing)}, so it is not a finished run; "
                        "finish it (python -m train --resume) or push another folder")
    try:
        zoo.load_pretrained(run_dir)  # what is published must load with the zoo
    except zoo.ZooError as e:
        raise PushError(f"run folder {run_dir} does not load, so it is not published: {e}") from None
    _check_onnx_files(run_dir)
    return publishable_files(run_dir)


def _check_onnx_files(run_dir: Path) -> None:
    """Refuse to publish an ONNX file the zoo does not itself find faithful to these weights: its own record of a
    verification, or a verification now (as on first use), through the same loader as the app. onnx.json is not
    asked: whoever can change model.onnx can rewrite it to match."""
    import zoo  # noqa: PLC0415

    for name, backend_name in ((ONNX_NAME, "onnx"), (ONNX_INT8_NAME, "onnx-int8")):
        if not (run_dir / name).is_file():
            continue
        try:
            backend = zoo.load_backend(run_dir, backend_name, export_missing=False)
        except zoo.ZooError as e:
            raise PushError(f"{run_dir / name} could not be checked ({e}); it is not published.") from None
        if backend.name != backend_name:  # it fell back to another file or to PyTorch: this one was refused
            raise PushError(f"{run_dir / name} is not published: {backend.fallback_reason}; then push again")


def _check_token_not_in(run_dir: Path, files: list[str], token: str) -> None:
    """Refuse to publish a file that holds the token (a config or card that captured it by mistake)."""
    needle = token.encode()
    for name in files:
        with open(run_dir / name, "rb") as f:
            if name == WEIGHTS_NAME:  # only the JSON header of a safetensors file holds free text
                (size,) = struct.unpack("<Q", f.read(8))
                data = f.read(min(size, 100_000_000))
            else:
                data = f.read()
        if needle in data:
            raise PushError(f"{run_dir / name} contains your Hugging Face token; remove it from the file "
                            "before publishing (and revoke the token if the file was shared)")


def _check_reachable(endpoint: str, run_dir: Path) -> None:
    """Fail in seconds when the Hub cannot be reached, instead of after the client's retries."""
    url = urllib.parse.urlsplit(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    if url.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host):
        return  # a proxy carries the traffic; a direct connection says nothing
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as e:
        raise PushFailedError(f"cannot reach the Hub at {endpoint} ({e.strerror or e}); check the network, "
                              f"HF_ENDPOINT or the proxy settings. Nothing was uploaded; {run_dir} is "
                              "unchanged") from None


def _explain(error: Exception, repo_id: str, branch: str, endpoint: str, run_dir: Path) -> PushFailedError:
    """A PushFailedError that says what went wrong and what to do, for a Hub or network error."""
    import httpx2  # noqa: PLC0415  (huggingface_hub's HTTP client)
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError  # noqa: PLC0415

    unchanged = f"{run_dir} is unchanged"
    if isinstance(error, RepositoryNotFoundError):
        return PushFailedError(f"the Hub has no repo {repo_id} that your token can write to (or the token was "
                               "refused); check the name and that HF_TOKEN / the stored login is a write token "
                               f"of its owner. {unchanged}")
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else None
        if status == 401:
            return PushFailedError("the Hub refused the token (HTTP 401 Unauthorized): it is invalid or expired. "
                                   "Set HF_TOKEN to a valid write token or run `hf auth login`. "
                                   f"Nothing was uploaded; {unchanged}")
        if status == 403:
            return PushFailedError(f"the token may not write to {repo_id} (HTTP 403 Forbidden): the repo or its "
                                   f"namespace {repo_id.split('/')[0]!r} belongs to someone else, or the token is "
                                   "read-only. Push to a repo under your own user or an organisation you can "
                                   f"write to. {unchanged}")
        return PushFailedError(f"the Hub answered HTTP {status} while pushing to {repo_id}@{branch}: "
                               f"{str(error).splitlines()[0]}. Try again later; {unchanged}")
    if isinstance(error, (httpx2.HTTPError, OSError)):
        return PushFailedError(f"the upload to {endpoint} was interrupted ({type(error).__name__}: {error}). "
                               "The Hub applies a commit whole or not at all, so running the same command again "
                               f"is safe. {unchanged}")
    return PushFailedError(f"the Hub refused the push to {repo_id}@{branch}: {error}. {unchanged}")


def _redacted(error: PushFailedError, token: str) -> PushFailedError:
    # defence in depth: no message built from a library error may carry the token
    return PushFailedError(str(error).replace(token, "<token>")) if token in str(error) else error


def push_run(run_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
             commit_message: str | None = None, token: str | None = None, dry_run: bool = False,
             allow_unlicensed: bool = False) -> list[str]:
    """Upload the publishable files of `run_dir` to the Hub model repo `repo_id` in one commit.

    Creates the repo (private if asked) and the branch `revision` if missing. Returns the names of the
    files pushed (with dry_run: that would be pushed; nothing is sent). The token is `token`, else
    HF_TOKEN, else the stored login. Raises PushError before any network call for a bad folder, repo
    id or missing token, and PushFailedError when the Hub or the network fails; the folder is never changed.
    """
    import httpx2  # noqa: PLC0415  (huggingface_hub's HTTP client: an interrupted connection raises its errors)
    from huggingface_hub import CommitOperationAdd, HfApi, constants  # noqa: PLC0415
    from huggingface_hub.errors import HfHubHTTPError  # noqa: PLC0415

    run_dir = Path(run_dir)
    files = _check_run_folder(run_dir)
    zoo_block = json.loads((run_dir / CONFIG_NAME).read_text(encoding="utf-8")).get("zoo") or {}
    if "license" in zoo_block and not zoo_block["license"] and not allow_unlicensed:  # e.g. an imported model
        raise PushError(f"{run_dir}'s weights have no licence ({zoo_block.get('license_note') or 'none stated'}), so "
                        "they are not published; pass --allow-unlicensed once their author has allowed it")
    token = check_push_target(repo_id, revision=revision, token=token, dry_run=dry_run)
    branch = revision or "main"
    if dry_run:
        return files
    _check_token_not_in(run_dir, files, token)
    endpoint = constants.ENDPOINT
    _check_reachable(endpoint, run_dir)

    config = json.loads((run_dir / CONFIG_NAME).read_text(encoding="utf-8"))
    zoo_config = ZooConfig.from_dict(config.get("zoo"), source=str(run_dir / CONFIG_NAME))
    message = commit_message or (f"Upload {run_dir.name}: {zoo_config.architecture or config['architecture']} "
                                 f"({zoo_config.mode or 'unknown mode'})")
    api = HfApi(endpoint=endpoint, token=token)
    _logger.info("pushing %d files from %s to %s@%s", len(files), run_dir, repo_id, branch)
    try:
        api.create_repo(repo_id, repo_type="model", private=True if private else None, exist_ok=True)
        if private and api.model_info(repo_id).private is False:
            raise PushError(f"{repo_id} already exists and is public; --private does not change an existing "
                            "repo. Make it private on the Hub first, or push to another repo")
        if branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(run_dir / name)) for name in files]
        info = api.create_commit(repo_id, operations, commit_message=message, revision=branch)
    except PushError:
        raise
    except (HfHubHTTPError, httpx2.HTTPError, OSError, ValueError) as e:
        raise _redacted(_explain(e, repo_id, branch, endpoint, run_dir), token) from None
    _logger.info("pushed %s@%s: commit %s (%s)", repo_id, branch, info.oid, info.commit_url)
    return files


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m train.push` (RUN OWNER/NAME, --private, --revision, ...)."""
    parser = argparse.ArgumentParser(
        prog="python -m train.push",
        description="Publish a finished run folder to the Hugging Face Hub: its weights, config.json, model\n"
                    "card, metrics, plots, split and run_config.yaml, never checkpoints or caches. The token\n"
                    "comes from HF_TOKEN or `hf auth login` (never from the command line).",
        epilog="Example:\n  HF_TOKEN=hf_... python -m train.push weights/lenet5-digits alice/lenet5-digits",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN", help="the run folder, e.g. weights/lenet5-scratch-digits")
    parser.add_argument("repo_id", metavar="OWNER/NAME", help="the Hub model repo (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", metavar="BRANCH", default=None,
                        help="push to this branch (created from main if missing) instead of main")
    parser.add_argument("--commit-message", metavar="MSG", default=None,
                        help="the commit summary (default: 'Upload RUN: ARCH (MODE)')")
    parser.add_argument("--dry-run", action="store_true", help="list what would be pushed; send nothing")
    parser.add_argument("--allow-unlicensed", action="store_true",
                        help="publish weights whose config.json states no licence (\"license\": null)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m train.push`; returns the exit status (0 pushed, 1 the push failed, 2 refused input)."""
    from zoo import ZooError  # noqa: PLC0415

    args = build_parser().parse_args(argv)
    configure_logging(False)
    run_dir = Path(args.run_dir)
    try:
        files = push_run(run_dir, args.repo_id, private=args.private, revision=args.revision,
                         commit_message=args.commit_message, dry_run=args.dry_run,
                         allow_unlicensed=args.allow_unlicensed)
    except PushFailedError as e:
        print(f"error: push failed: {e}", file=sys.stderr)
        return 1
    except (TrainError, ZooError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"dry run: would push {len(files)} files from {run_dir} to {args.repo_id}@{args.revision or 'main'}:")
        for name in files:
            print(f"  {name:<24} {(run_dir / name).stat().st_size:>12,} bytes")
        left_out = sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir() if p.name not in files)
        if left_out:
            print(f"left out (not publishable): {', '.join(left_out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
