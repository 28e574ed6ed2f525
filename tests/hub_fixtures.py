"""Loopback stand-ins for the Hugging Face Hub and for a plain file server, and a Hub cache laid out
on disk - so Hub ids and remote GGUF files are tested without the network, counting every byte.

:class:`FileServer` serves bytes at paths, honours ``Range`` (or ignores it when told to), and
counts what it sent per path. In hub mode it answers ``/{repo}/resolve/{revision}/{file}`` the way
huggingface_hub expects: ``X-Repo-Commit``, ``ETag`` and ``Content-Length`` on HEAD, and
``X-Error-Code: EntryNotFound`` for files the repository lacks.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FileServer:
    def __init__(self, files: dict[str, bytes] | None = None, *, commit: str = "c" * 40, honour_range: bool = True):
        self.files = dict(files or {})
        self.commit = commit
        self.honour_range = honour_range
        self.sent: Counter = Counter()  # bytes of body sent per path
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, range)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _resolve(self) -> str:
                path = self.path.split("?", 1)[0]
                m = re.match(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", path)
                return f"{m['repo']}/{m['file']}" if m else path.lstrip("/")

            def _answer(self, head: bool) -> None:
                key = self._resolve()
                rng = self.headers.get("Range")
                outer.requests.append((self.command, key, rng))
                data = outer.files.get(key)
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start, end, status = 0, len(data) - 1, 200
                if rng and outer.honour_range and not head:
                    m = re.match(r"bytes=(\d+)-(\d*)", rng)
                    start = int(m[1])
                    end = min(int(m[2]) if m[2] else len(data) - 1, len(data) - 1)
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                body = data[start:end + 1]
                self.send_response(status)
                self.send_header("X-Repo-Commit", outer.commit)
                self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.send_header("Content-Length", str(len(data) if head else len(body)))
                self.end_headers()
                if head:
                    return
                try:
                    for i in range(0, len(body), 65536):
                        chunk = body[i:i + 65536]
                        outer.sent[key] += len(chunk)  # counted before the client can see it (no race)
                        self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading

            def do_HEAD(self):
                self._answer(head=True)

            def do_GET(self):
                self._answer(head=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def lay_out_hub_cache(root: Path, repo: str, files: dict[str, bytes | str | dict], *, commit: str = "b" * 40,
                      ref: str = "main") -> Path:
    """Write a Hugging Face Hub cache as huggingface_hub lays it out: blobs, a snapshot per commit
    whose entries link to the blobs, and refs/<ref> naming the commit. Returns the snapshot folder."""
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / ref).write_text(commit)
    for name, content in files.items():
        data = json.dumps(content).encode() if isinstance(content, dict) else (
            content.encode() if isinstance(content, str) else content)
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(blob)
    return snapshot
