"""A stand-in for the Hugging Face Hub's HTTP API, for tests only (these machines cannot reach the Hub).

It answers what huggingface_hub 2.4's own client sends for `create_repo`, `create_branch`, `create_tag`,
`model_info`, `whoami`, `create_commit` and `hf_hub_download`, with the Hub's status codes and error
headers (X-Error-Code: RepoNotFound / RevisionNotFound / EntryNotFound, X-Error-Message), so the code under
test is the code that talks to the real Hub; only the endpoint differs. Repos live in memory.

What it leaves out: LFS and Xet (preupload answers uploadMode "regular", so file contents come base64 inline
in the NDJSON commit; no X-Xet-* headers, so downloads are plain HTTP), pull requests, organisations (a user
writes only under their own name), deletions of repos. Three faults can be switched on: `cut_downloads` (a GET
of that file sends half its bytes, a resumed GET none, then hangs up), `drop_commits` (a commit request is
read and the connection closed without an answer) and `forged_etags` (file name -> the ETag its answers carry
instead of its hash, e.g. a path-like "../../x", as a hostile HF_ENDPOINT could send).

    with HubServer(tokens={"hf_alice": "alice"}) as hub:
        ...  # point huggingface_hub at hub.endpoint (HF_ENDPOINT, or constants.ENDPOINT in-process)
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml

__all__ = ["HubServer", "Repo", "Commit"]

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_SEGMENT = r"[^/]+"  # a revision arrives URL-quoted with safe="", so a branch "a/b" is one segment
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


@dataclass
class Commit:
    oid: str
    files: dict[str, bytes]
    message: str
    parent: str | None


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return self.repo_id.split("/")[0]

    def resolve(self, revision: str) -> Commit | None:
        """The commit a branch, tag or full commit hash names; None if it names nothing."""
        oid = self.branches.get(revision) or self.tags.get(revision) or revision
        return self.commits.get(oid)


class HubServer:
    """The stand-in Hub on 127.0.0.1 (a free port), served from a thread."""

    def __init__(self, tokens: dict[str, str] | None = None):
        self.tokens = dict(tokens or {})       # token -> user name
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, for assertions
        self.cut_downloads: str | None = None  # a file name whose downloads are cut short
        self.drop_commits = False
        self.forged_etags: dict[str, str] = {}  # file name -> the ETag sent for it instead of its sha256
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self._httpd: ThreadingHTTPServer | None = None

    # --- life cycle -------------------------------------------------------------------------------

    def start(self) -> "HubServer":
        handler = type("Handler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # --- state --------------------------------------------------------------------------------------

    def create_repo(self, repo_id: str, private: bool = False) -> Repo:
        """A repo whose main branch holds one commit with .gitattributes, as the Hub creates it."""
        repo = Repo(repo_id, private)
        self.repos[repo_id] = repo
        self.commit(repo, "main", {".gitattributes": GITATTRIBUTES}, "initial commit")
        return repo

    def add_repo(self, repo_id: str, files: dict[str, bytes], private: bool = False) -> str:
        """Seed a repo directly (one someone else published); returns the commit hash of its files."""
        with self._lock:
            return self.commit(self.create_repo(repo_id, private), "main", files, "add files").oid

    def commit(self, repo: Repo, branch: str, files: dict[str, bytes], message: str,
               deleted: tuple[str, ...] = ()) -> Commit:
        parent = repo.branches.get(branch)
        tree = dict(repo.commits[parent].files) if parent else {}
        tree.update(files)
        for path in deleted:
            tree.pop(path, None)
        digest = hashlib.sha1(f"{parent}\n{message}\n{next(self._counter)}".encode())
        for path in sorted(tree):
            digest.update(path.encode() + hashlib.sha256(tree[path]).digest())
        commit = Commit(digest.hexdigest(), tree, message, parent)
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit


class _Error(Exception):
    """An HTTP error answer: status, the Hub's X-Error-Code (or None) and message."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.headers, self.extra = status, code, headers or {}, extra or {}


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.0"  # one request per connection: a cut-short body ends with the connection

    def log_message(self, format, *args) -> None:  # noqa: A002  (silence the default stderr log)
        pass

    # --- dispatch -------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        self.hub.requests.append((method, unquote(path)))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        routes = [
            ("GET", r"/api/whoami-v2", self._whoami),
            ("POST", r"/api/repos/create", self._create_repo),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("GET", rf"/api/models/{_REPO}(?:/revision/(?P<revision>{_SEGMENT}))?", self._model_info),
            ("POST", rf"/api/models/{_REPO}/preupload/(?P<revision>{_SEGMENT})", self._preupload),
            ("POST", rf"/api/models/{_REPO}/commit/(?P<revision>{_SEGMENT})", self._commit),
            ("POST", rf"/api/models/{_REPO}/branch/(?P<branch>{_SEGMENT})", self._create_branch),
            ("POST", rf"/api/models/{_REPO}/tag/(?P<revision>{_SEGMENT})", self._create_tag),
            ("HEAD", rf"/{_REPO}/resolve/(?P<revision>{_SEGMENT})/(?P<file>.+)", self._resolve),
            ("GET", rf"/{_REPO}/resolve/(?P<revision>{_SEGMENT})/(?P<file>.+)", self._resolve),
        ]
        try:
            user = self._user()
            for verb, pattern, handle in routes:
                match = re.fullmatch(pattern, path)
                if verb == method and match:
                    args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    with self.hub._lock:
                        handle(user, body, **args)
                    return
            raise _Error(404, f"no route for {method} {path} in the stand-in Hub")
        except _Error as e:
            headers = {"X-Error-Message": str(e), **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._send(e.status, {"error": str(e), **e.extra}, headers)

    # --- helpers --------------------------------------------------------------------------------------

    def _send(self, status: int, payload: dict | bytes, headers: dict | None = None, length: int | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if isinstance(payload, bytes)
                         else "application/json")
        self.send_header("Content-Length", str(len(data) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _user(self) -> str | None:
        """The token's user; a token the Hub does not know is a 401 on any request, as on the Hub."""
        auth = self.headers.get("Authorization")
        if auth is None:
            return None
        user = self.hub.tokens.get(auth.removeprefix("Bearer ").strip())
        if user is None:
            raise _Error(401, "Invalid credentials in Authorization header")
        return user

    def _readable(self, user: str | None, repo_id: str) -> Repo:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and user != repo.owner):
            raise _Error(404, "Repository not found", "RepoNotFound")
        return repo

    def _writable(self, user: str | None, repo_id: str) -> Repo:
        if user is None:
            raise _Error(401, "You must be authenticated to write to a repo")
        repo = self._readable(user, repo_id)
        if user != repo.owner:
            raise _Error(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise _Error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # --- routes ---------------------------------------------------------------------------------------

    def _whoami(self, user, body) -> None:
        if user is None:
            raise _Error(401, "Invalid credentials in Authorization header")
        self._send(200, {"type": "user", "name": user, "auth": {"type": "access_token",
                                                                 "accessToken": {"role": "write"}}})

    def _create_repo(self, user, body) -> None:
        request = json.loads(body)
        if user is None:
            raise _Error(401, "You must be authenticated to create a repo")
        if request.get("type", "model") != "model":
            raise _Error(400, "the stand-in Hub holds model repos only")
        repo_id = f"{request.get('organization') or user}/{request['name']}"
        if repo_id.split("/")[0] != user:
            raise _Error(403, f"You don't have the rights to create a model under the namespace "
                              f"{repo_id.split('/')[0]}")
        url = f"{self.hub.endpoint}/{repo_id}"
        if repo_id in self.hub.repos:
            raise _Error(409, "You already created this model repo", extra={"url": url})
        self.hub.create_repo(repo_id, private=request.get("visibility") == "private")
        self._send(200, {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    def _validate_yaml(self, user, body) -> None:
        content = json.loads(body)["content"]
        parts = content.split("---", 2)
        if content.startswith("---") and len(parts) == 3:
            try:
                yaml.safe_load(parts[1])
            except yaml.YAMLError as e:
                self._send(400, {"errors": [{"message": str(e)}], "warnings": []})
                return
        self._send(200, {"errors": [], "warnings": []})

    def _model_info(self, user, body, repo, revision="main") -> None:
        found = self._readable(user, repo)
        commit = self._commit_at(found, revision)
        self._send(200, {"id": repo, "modelId": repo, "author": found.owner, "sha": commit.oid,
                         "private": found.private, "tags": [],
                         "siblings": [{"rfilename": name} for name in sorted(commit.files)]})

    def _preupload(self, user, body, repo, revision) -> None:
        found = self._writable(user, repo)
        if revision not in found.branches:
            raise _Error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        files = json.loads(body)["files"]
        self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                   for f in files]})

    def _commit(self, user, body, repo, revision) -> None:
        if self.hub.drop_commits:
            self.close_connection = True
            return  # hang up without an answer: an upload interrupted before the Hub confirmed it
        found = self._writable(user, repo)
        if revision not in found.branches:
            raise _Error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        files, deleted = {}, []
        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "deletedFile":
                deleted.append(value["path"])
            elif line["key"] != "header":
                raise _Error(400, f"the stand-in Hub does not take {line['key']!r} commit entries")
        commit = self.hub.commit(found, revision, files, header["summary"], tuple(deleted))
        self._send(200, {"success": True, "commitOid": commit.oid, "pullRequestUrl": None,
                         "commitUrl": f"{self.hub.endpoint}/{repo}/commit/{commit.oid}"})

    def _create_branch(self, user, body, repo, branch) -> None:
        found = self._writable(user, repo)
        start = (json.loads(body) if body else {}).get("startingPoint") or "main"
        if branch in found.branches:
            raise _Error(409, f"Branch {branch} already exists")
        found.branches[branch] = self._commit_at(found, start).oid
        self._send(200, {})

    def _create_tag(self, user, body, repo, revision) -> None:
        found = self._writable(user, repo)
        tag = json.loads(body)["tag"]
        if tag in found.tags:
            raise _Error(409, f"Tag {tag} already exists")
        found.tags[tag] = self._commit_at(found, revision).oid
        self._send(200, {})

    def _resolve(self, user, body, repo, revision, file) -> None:
        commit = self._commit_at(self._readable(user, repo), revision)
        if file not in commit.files:
            raise _Error(404, f"{file} does not exist at {revision}", "EntryNotFound",
                         headers={"X-Repo-Commit": commit.oid})
        data = commit.files[file]
        etag = self.hub.forged_etags.get(file, hashlib.sha256(data).hexdigest())
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{etag}"',
                   "Accept-Ranges": "bytes"}
        status, size = 200, len(data)
        start = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if self.command == "GET" and start:
            offset = int(start.group(1))
            status, data = 206, data[offset:]
            headers["Content-Range"] = f"bytes {offset}-{size - 1}/{size}"
        if self.command == "GET" and file == self.hub.cut_downloads:
            # announce the whole length, send half (a resumed request: nothing), then hang up
            self._send(status, b"", headers, length=len(data))
            self.wfile.write(data[:len(data) // 2] if status == 200 else b"")
            self.close_connection = True
            return
        self._send(status, data, headers)


def point_client_at(monkeypatch, endpoint: str, home) -> None:
    """What HF_ENDPOINT/HF_HOME would do at import: constants read at call time by huggingface_hub and timm."""
    from pathlib import Path

    from huggingface_hub import constants

    home = Path(home)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / "agent_harnesses.json"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
