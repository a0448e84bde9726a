"""A real HTTP server on 127.0.0.1 speaking enough of the Hugging Face Hub protocol for our tests.

Download side (what ``hf_hub_download`` / ``snapshot_download`` / timm use): ``HEAD|GET
/{repo}/resolve/{rev}/{file}`` with ``X-Repo-Commit`` and ``ETag`` (SHA-256 of the content, like LFS),
``/api/models/{repo}/revision/{rev}``, ``/api/models/{repo}/tree/{rev}``, and 404s with
``X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound``.

Upload side (what ``HfApi.create_repo`` / ``create_branch`` / ``upload_folder`` use): ``POST
/api/repos/create``, ``/api/models/{repo}/branch/{b}``, ``/api/validate-yaml``,
``/api/models/{repo}/preupload/{rev}`` (every file "regular", i.e. inline base64, no LFS) and
``/api/models/{repo}/commit/{rev}`` (NDJSON). Commits get a 40-hex id.

Faults, per ``(repo, file)``: ``"wrong_bytes"`` (same length, flipped bytes), ``"short"`` (body and
Content-Length cut in half, HEAD announces the full size), ``"die"`` (half the body, then the server
shuts down). Every request is logged as ``(method, path)`` in :attr:`FakeHub.requests`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, Any]] = {}  # repo -> {"commits": {sha: files}, "refs": {branch: sha}}
        self.faults: dict[tuple[str, str], str] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, "HEAD")

            def do_GET(self) -> None:
                hub._handle(self, "GET")

            def do_POST(self) -> None:
                hub._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    # ----- repository content ---------------------------------------------------------------
    def commit(self, repo: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Add a commit with ``files`` on top of ``branch``; return its 40-hex sha."""
        with self._lock:
            r = self.repos.setdefault(repo, {"commits": {}, "refs": {}})
            parent = r["refs"].get(branch) or r["refs"].get("main")
            content = dict(r["commits"][parent]) if parent else {}
            content.update(files)
            sha = hashlib.sha1(
                repr((repo, parent, sorted((k, hashlib.sha256(v).hexdigest()) for k, v in content.items()))).encode()
            ).hexdigest()
            r["commits"][sha] = content
            r["refs"][branch] = sha
            return sha

    def count(self, fragment: str = "", method: str | None = None) -> int:
        return sum(1 for m, p in self.requests if fragment in p and (method is None or m == method))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ----- protocol -------------------------------------------------------------------------
    def _resolve(self, repo: str, rev: str) -> tuple[str, dict[str, bytes]] | None:
        r = self.repos[repo]
        sha = r["refs"].get(rev, rev)
        return (sha, r["commits"][sha]) if sha in r["commits"] else None

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlsplit(h.path)
        path = urllib.parse.unquote(url.path)
        self.requests.append((method, path))
        body = b""
        if method == "POST":
            body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        parts = path.strip("/").split("/")
        try:
            if parts[:1] == ["api"]:
                return self._api(h, method, parts[1:], body)
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve_file(h, method, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            return self._send(h, 404, b"not found", {"X-Error-Code": "RepoNotFound"})
        except (BrokenPipeError, ConnectionResetError):
            return None

    def _send(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        *,
        head: bool = False,
        length: int | None = None,
    ) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body) if length is None else length))
        h.end_headers()
        if not head and h.command != "HEAD":
            h.wfile.write(body)
            h.wfile.flush()

    def _json(self, h: BaseHTTPRequestHandler, obj: Any, status: int = 200) -> None:
        self._send(h, status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _resolve_file(self, h: BaseHTTPRequestHandler, method: str, repo: str, rev: str, name: str) -> None:
        if repo not in self.repos:
            return self._send(h, 404, b"repo not found", {"X-Error-Code": "RepoNotFound"})
        found = self._resolve(repo, rev)
        if found is None:
            return self._send(h, 404, b"revision not found", {"X-Error-Code": "RevisionNotFound"})
        sha, files = found
        if name not in files:
            return self._send(h, 404, b"entry not found", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha})
        data = files[name]
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            "Content-Type": "application/octet-stream",
        }
        fault = self.faults.get((repo, name))
        if method == "HEAD":
            return self._send(h, 200, data, headers, head=True)
        if fault == "wrong_bytes":
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        elif fault == "short":
            data = data[: len(data) // 2]
        elif fault == "die":
            h.send_response(200)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            threading.Thread(target=self.close, daemon=True).start()
            return None
        return self._send(h, 200, data, headers)

    def _api(self, h: BaseHTTPRequestHandler, method: str, parts: list[str], body: bytes) -> None:
        if parts == ["validate-yaml"]:
            return self._json(h, {"errors": [], "warnings": []})
        if parts == ["repos", "create"]:
            payload = json.loads(body or b"{}")
            repo = f"{payload.get('organization') or 'user'}/{payload['name']}"
            if repo in self.repos:
                return self._json(h, {"error": "You already created this model repo", "url": f"{self.url}/{repo}"}, 409)
            self.repos[repo] = {"commits": {}, "refs": {}}
            return self._json(h, {"url": f"{self.url}/{repo}"})
        if len(parts) < 4 or parts[0] != "models":
            return self._send(h, 404, b"unknown api", {"X-Error-Code": "RepoNotFound"})
        repo, action, rest = f"{parts[1]}/{parts[2]}", parts[3], "/".join(parts[4:])
        if repo not in self.repos:
            return self._send(h, 404, b"repo not found", {"X-Error-Code": "RepoNotFound"})
        if method == "POST" and action == "branch":
            r = self.repos[repo]
            if rest not in r["refs"] and r["refs"].get("main"):
                r["refs"][rest] = r["refs"]["main"]
            return self._json(h, {})
        if method == "POST" and action == "preupload":
            files = json.loads(body)["files"]
            return self._json(
                h, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        if method == "POST" and action == "commit":
            files = {}
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            sha = self.commit(repo, files, branch=rest or "main")
            return self._json(h, {"commitUrl": f"{self.url}/{repo}/commit/{sha}", "commitOid": sha})
        found = self._resolve(repo, rest.split("/")[0] or "main")
        if found is None:
            return self._send(h, 404, b"revision not found", {"X-Error-Code": "RevisionNotFound"})
        sha, files = found
        if action == "revision":
            return self._json(h, {"id": repo, "sha": sha, "siblings": [{"rfilename": n} for n in sorted(files)]})
        if action == "tree":
            return self._json(
                h,
                [
                    {"type": "file", "path": n, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                    for n, d in sorted(files.items())
                ],
            )
        return self._send(h, 404, b"unknown api", {"X-Error-Code": "RepoNotFound"})
