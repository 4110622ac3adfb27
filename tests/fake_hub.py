"""A fake Hugging Face Hub on 127.0.0.1 for upload tests: the routes the real `huggingface_hub` client uses to
create a repo, make a branch and commit small files (see stack-notes "Hugging Face Hub offline").

It records every request and keeps the committed bytes per repo, so a test can check what was uploaded and
rebuild an offline cache from it. It stops by itself after `lifetime` seconds (and when the context exits).
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ROUTE = re.compile(r"^/api/(models|spaces|datasets)/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)$")


@dataclass
class Commit:
    repo_type: str
    repo_id: str
    revision: str
    summary: str
    description: str
    oid: str
    files: dict[str, bytes]


@dataclass
class FakeHub:
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)   # method, path, auth, body (parsed)
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)  # "type/ORG/NAME" -> create payload
    branches: list[str] = field(default_factory=list)
    commits: list[Commit] = field(default_factory=list)

    def files(self, repo_id: str, repo_type: str = "models") -> dict[str, bytes]:
        """The repo's content after all commits (later commits overwrite)."""
        out: dict[str, bytes] = {}
        for c in self.commits:
            if c.repo_id == repo_id and c.repo_type == repo_type:
                out.update(c.files)
        return out

    def paths(self) -> list[str]:
        return [r["path"] for r in self.requests]


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _reply(self, status: int, payload: Any) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_GET(self) -> None:  # noqa: N802
            hub.requests.append({"method": "GET", "path": self.path, "auth": self.headers.get("authorization")})
            self._reply(404, {"error": "not implemented by the fake Hub"})

        def do_POST(self) -> None:  # noqa: N802
            raw = self._body()
            path = self.path.split("?")[0]
            record: dict[str, Any] = {"method": "POST", "path": path, "auth": self.headers.get("authorization")}
            hub.requests.append(record)
            if path == "/api/repos/create":
                data = json.loads(raw)
                record["body"] = data
                kind = data.get("type") or "model"
                repo_id = f"{data.get('organization')}/{data['name']}"
                hub.repos[f"{kind}s/{repo_id}"] = data
                prefix = "" if kind == "model" else f"/{kind}s"
                return self._reply(200, {"url": f"{hub.url}{prefix}/{repo_id}", "name": repo_id})
            if path == "/api/validate-yaml":
                record["body"] = json.loads(raw)
                return self._reply(200, {"warnings": [], "errors": []})
            match = ROUTE.match(path)
            if not match:
                return self._reply(404, {"error": f"fake Hub: no route {path}"})
            repo_type, repo_id, action, revision = match.groups()
            if action == "preupload":
                data = json.loads(raw)
                record["body"] = data
                return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                   for f in data["files"]]})
            if action == "branch":
                hub.branches.append(f"{repo_id}@{revision}")
                return self._reply(200, {})
            lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
            header = next(x["value"] for x in lines if x["key"] == "header")
            files = {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines if x["key"] == "file"}
            record["body"] = {"header": header, "files": sorted(files)}
            digest = hashlib.sha1(json.dumps(header).encode() + b"".join(
                k.encode() + v for k, v in sorted(files.items())) + str(len(hub.commits)).encode()).hexdigest()
            hub.commits.append(Commit(repo_type, repo_id, revision, header.get("summary", ""),
                                      header.get("description", ""), digest, files))
            prefix = "" if repo_type == "models" else f"/{repo_type}"
            return self._reply(200, {"commitUrl": f"{hub.url}{prefix}/{repo_id}/commit/{digest}", "commitOid": digest})

    return Handler


@contextlib.contextmanager
def fake_hub(lifetime: float = 120.0):
    """Yields a running FakeHub (its `url` is the endpoint); shut down on exit or after `lifetime` seconds."""
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    timer = threading.Timer(lifetime, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        yield hub
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
