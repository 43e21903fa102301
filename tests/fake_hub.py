"""A stand-in Hugging Face Hub on 127.0.0.1 for the download tests.

It serves ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}`` the way ``hf_hub_download``
expects (``X-Repo-Commit``, ``ETag``/``X-Linked-Etag``, ``X-Linked-Size``, ``Content-Length``;
404s carry ``X-Error-Code`` RepoNotFound / RevisionNotFound / EntryNotFound) and counts the
requests it gets. ``head_delay``/``get_delay`` make it slow (timeouts) and ``head_barrier`` makes clients meet
(concurrency).
:class:`SilentServer` accepts connections and never answers (a Hub that hangs), and
:class:`HubCalls` records what perface hands to huggingface_hub's HTTP functions.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlparse


class FakeHub:
    """Repos: ``repo_id -> {commit: {filename: bytes}}``; ``refs``: ``(repo_id, branch) -> commit``."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}
        self.refs: dict[tuple[str, str], str] = {}
        self.requests: Counter = Counter()  # (method, path) -> count
        self.head_delay = 0.0
        self.get_delay = 0.0
        self.head_barrier = 0  # hold every HEAD until this many HEADs arrived (at most 20 s)
        self._lock = threading.Lock()
        self._heads = threading.Condition()
        self._server: Optional[ThreadingHTTPServer] = None

    # ---------------------------------------------------------------- content
    def add_commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Add a commit holding ``files`` (plus earlier files of the branch) and move ``branch`` to it."""
        previous = self.refs.get((repo_id, branch))
        tree = dict(self.repos.get(repo_id, {}).get(previous, {})) if previous else {}
        tree.update(files)
        commit = hashlib.sha1(repr((repo_id, len(self.repos.get(repo_id, {})), sorted(tree))).encode()).hexdigest()
        self.repos.setdefault(repo_id, {})[commit] = tree
        self.refs[(repo_id, branch)] = commit
        return commit

    def count(self, method: Optional[str] = None) -> int:
        """Number of file requests (``/resolve/``) received, of ``method`` or of any method."""
        with self._lock:
            return sum(n for (m, p), n in self.requests.items() if "/resolve/" in p and (method is None or m == method))

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()

    # ---------------------------------------------------------------- server
    @property
    def endpoint(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_HEAD(self) -> None:
                hub._serve(self, body=False)

            def do_GET(self) -> None:
                hub._serve(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _resolve(self, path: str):
        """``/{org}/{repo}/resolve/{revision}/{filename}`` -> (status, headers, data)."""
        parts = path.lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return 404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b""
        repo_id, revision, filename = "/".join(parts[:2]), unquote(parts[3]), unquote("/".join(parts[4:]))
        if repo_id not in self.repos:
            return 404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b""
        commit = revision if revision in self.repos[repo_id] else self.refs.get((repo_id, revision))
        if commit is None:
            return 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, b""
        data = self.repos[repo_id][commit].get(filename)
        if data is None:
            return (
                404,
                {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found", "X-Repo-Commit": commit},
                b"",
            )
        digest = hashlib.sha256(data).hexdigest()
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{digest}"',
            "X-Linked-Etag": f'"{digest}"',
            "X-Linked-Size": str(len(data)),
            "Content-Type": "application/octet-stream",
        }
        return 200, headers, data

    def _serve(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        method = "GET" if body else "HEAD"
        path = urlparse(handler.path).path
        with self._lock:
            self.requests[(method, path)] += 1
        if not body and self.head_barrier:
            with self._heads:
                self._heads.notify_all()
                self._heads.wait_for(lambda: self.count("HEAD") >= self.head_barrier, timeout=20)
        delay = self.get_delay if body else self.head_delay
        if delay:
            time.sleep(delay)
        status, headers, data = self._resolve(path)
        try:
            handler.send_response(status)
            for key, value in headers.items():
                handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            if body and data:
                handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte: a hung
    Hub. ``connections`` counts the connections made to it (one per attempt)."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._stopped = threading.Event()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:  # closed by stop()
                return
            with self._lock:
                self.connections += 1
                self._open.append(conn)  # held open, never answered

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            for conn in self._open:
                conn.close()
        self._sock.close()


class HubCalls:
    """Wraps huggingface_hub's ``get_hf_file_metadata`` (the HEAD request perface makes first)
    and ``hf_hub_download``, records each call's keyword arguments and calls through."""

    def __init__(self, monkeypatch) -> None:
        import huggingface_hub

        self.head: list[dict] = []
        self.download: list[dict] = []
        for name, calls in (("get_hf_file_metadata", self.head), ("hf_hub_download", self.download)):
            real = getattr(huggingface_hub, name)

            def spy(*args, _real=real, _calls=calls, **kwargs):
                _calls.append(kwargs)
                return _real(*args, **kwargs)

            monkeypatch.setattr(huggingface_hub, name, spy)


def point_hf_at(endpoint: str, home: Path, monkeypatch) -> Path:
    """Patch the already-imported ``huggingface_hub.constants`` (read from the environment at import
    time) as ``HF_ENDPOINT=endpoint HF_HOME=home`` would have set them; returns ``home``."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_PROGRESS_BARS", True)
    monkeypatch.delenv("PERFACE_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return home


def subprocess_env(endpoint: str, home: Path, **extra: str) -> dict[str, str]:
    """Environment for a fresh process that uses the stand-in Hub and cache through env vars."""
    env = dict(
        os.environ,
        HF_ENDPOINT=endpoint,
        HF_HOME=str(home),
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    for key in ("PERFACE_CACHE", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN"):
        env.pop(key, None)
    env.update(extra)
    return env
