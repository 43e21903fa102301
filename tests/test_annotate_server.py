"""The annotation server as a real process on 127.0.0.1: the safety list of issue 15 (path
traversal, the access token, malformed and repeated answers, the Host check) and that bad
requests never reach the answers file."""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

import pytest

from perface.annotate.server import access_token
from perface.annotate.study import write_study
from perface.annotate.triplets import catch_trials, collect_images, random_triplets

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


class ServerProcess:
    """``perface annotate serve STUDY`` in a subprocess; ``url`` once it listens."""

    def __init__(self, study: Path, *args: str, port: int = 0) -> None:
        self.study, self.args, self.port = study, args, port
        self.proc: Optional[subprocess.Popen] = None
        self.url = ""

    def start(self, timeout: float = 120) -> ServerProcess:
        cmd = [
            sys.executable,
            "-m",
            "perface",
            "annotate",
            "serve",
            str(self.study),
            "--port",
            str(self.port),
            "-q",
            *self.args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(ln) for ln in self.proc.stdout], daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                self.kill()
                raise AssertionError(f"server did not start in {timeout} s: {self.proc.stderr.read()}") from None
            match = re.search(r"open (http://127\.0\.0\.1:(\d+)/\S*)", line)
            if match:
                self.url, self.port = match.group(1), int(match.group(2))
                return self

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash or a power cut, as far as the process goes)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> str:
        """Ctrl-C; returns what it printed to stdout after it started."""
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=60)
        return out

    def request(
        self, method: str, path: str, body: Optional[bytes] = None, headers: Optional[dict[str, str]] = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One raw HTTP request (the path is sent exactly as given)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def post_answer(self, payload, **headers) -> tuple[int, dict]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        status, _, data = self.request("POST", "/api/answer", body, {"Content-Type": "application/json", **headers})
        return status, json.loads(data or b"{}")

    def next(self, annotator: str, **headers) -> dict:
        status, _, data = self.request("GET", f"/api/next?annotator={annotator}", headers=headers)
        assert status == 200, data
        return json.loads(data)


def make_photo_study(tmp_path: Path, faces: Path, n: int = 6, roots=None) -> Path:
    """A study over the real photos, shown as they are (no face detection: quick to make)."""
    images, found_roots = collect_images([faces])
    out = tmp_path / "study"
    write_study(out, random_triplets(images, n, 0), catch_trials(images, 2, 0), roots or found_roots, "random", 0)
    return out


def stored(study: Path) -> list:
    """The rows of the answers file, read beside the running server (SQLite WAL allows it)."""
    with sqlite3.connect(study / "answers.sqlite") as db:
        return db.execute("SELECT annotator, item, answer FROM answers ORDER BY seq").fetchall()


@pytest.fixture(scope="module")
def server(tmp_path_factory, faces_dir):
    study = make_photo_study(tmp_path_factory.mktemp("served"), faces_dir)
    proc = ServerProcess(study).start()
    yield proc
    proc.stop()


def test_page_and_first_question(server):
    status, headers, body = server.request("GET", "/")
    assert status == 200 and b"Which face looks more like the reference?" in body
    assert "script-src 'self'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"
    reply = server.next("rater01")
    assert reply["done"] is False and reply["progress"] == {"done": 0, "total": 8}
    assert re.fullmatch(r"[0-9a-f]{16}", reply["item"])  # an opaque token, not the item id
    status, headers, body = server.request("GET", f"/api/image/{reply['item']}/reference")
    assert status == 200 and headers["content-type"] in ("image/jpeg", "image/png") and len(body) > 1000


@pytest.mark.parametrize(
    "path",
    [
        "/api/image/../../../../etc/passwd",
        "/api/image/..%2F..%2F..%2F..%2Fetc%2Fpasswd/reference",
        "/api/image/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2Fserver.py",
        "/static/../../annotate/server.py",
        "/api/image/0000000000000000/reference",
        "//etc/passwd",
    ],
)
def test_path_traversal_finds_nothing(server, path):
    status, _, body = server.request("GET", path)
    assert status == 404, (path, status, body[:200])
    assert b"root:" not in body and b"import" not in body


def test_bad_slot_of_a_real_item(server):
    token = server.next("rater01")["item"]
    for slot in ("..%2F..%2F..%2Fetc%2Fpasswd", "c", "reference.jpg"):
        status, _, body = server.request("GET", f"/api/image/{token}/{slot}")
        assert status == 404 and b"root:" not in body


@pytest.mark.slow
def test_image_swapped_for_a_link_outside_is_refused(tmp_path, faces_dir):
    """Photos inside the declared folder replaced by symlinks to a file outside it after the
    server started: 403, the outside file is never sent; a restart refuses to serve them."""
    folder = tmp_path / "faces"
    folder.mkdir()
    for p in sorted(faces_dir.glob("*.jpg"))[:4]:
        (folder / p.name).write_bytes(p.read_bytes())
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8 not for annotators")
    study = make_photo_study(tmp_path, folder, n=3)
    server = ServerProcess(study).start()
    try:
        token = server.next("rater01")["item"]
        assert server.request("GET", f"/api/image/{token}/reference")[0] == 200
        for photo in folder.iterdir():
            photo.unlink()
            photo.symlink_to(secret)
        for slot in ("reference", "a", "b"):
            status, _, body = server.request("GET", f"/api/image/{token}/{slot}")
            assert status == 403 and b"not for annotators" not in body
    finally:
        server.stop()
    result = subprocess.run(
        [sys.executable, "-m", "perface", "annotate", "serve", str(study), "--port", "0"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert result.returncode == 1 and "outside the declared folders" in result.stderr
    assert result.stderr.count("\n") == 1  # one line, no traceback


def test_study_pointing_outside_its_folders_does_not_start(tmp_path, faces_dir):
    study = make_photo_study(tmp_path, faces_dir, roots=[tmp_path])  # declared: a folder without the photos
    result = subprocess.run(
        [sys.executable, "-m", "perface", "annotate", "serve", str(study), "--port", "0"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("perface annotate: error:") and "outside the declared folders" in result.stderr


def test_token_required(tmp_path, faces_dir):
    study = make_photo_study(tmp_path, faces_dir)
    server = ServerProcess(study, "--token", "s3cret-token").start()
    try:
        assert server.url.endswith("/?token=s3cret-token")
        assert server.request("GET", "/")[0] == 401
        assert server.request("GET", "/?token=wrong")[0] == 401
        assert server.request("GET", "/api/next?annotator=rater01")[0] == 401
        assert server.request("GET", "/api/next?annotator=rater01", headers={"Authorization": "Bearer nope"})[0] == 401
        status, body = server.post_answer({"annotator": "rater01", "item": "x", "answer": "a"})
        assert status == 401 and "token" in body["error"]
        status, headers, _ = server.request("GET", "/?token=s3cret-token&annotator=rater01")
        assert status == 303 and headers["location"] == "/?annotator=rater01"
        cookie = headers["set-cookie"].split(";")[0]
        assert "httponly" in headers["set-cookie"].lower()
        assert server.request("GET", "/", headers={"Cookie": cookie})[0] == 200
        token = server.next("rater01", Authorization="Bearer s3cret-token")["item"]
        assert server.request("GET", f"/api/image/{token}/a", headers={"Cookie": cookie})[0] == 200
        status, body = server.post_answer({"annotator": "rater01", "item": token, "answer": "b"}, Cookie=cookie)
        assert status == 200 and body["recorded"] is True
        assert stored(study) == [("rater01", stored(study)[0][1], "b")]
    finally:
        server.stop()


def test_remote_serving_needs_the_flag_and_a_token(tmp_path, faces_dir, monkeypatch):
    monkeypatch.delenv("PERFACE_ANNOTATE_TOKEN", raising=False)
    assert access_token("127.0.0.1") is None and access_token("localhost", token="t") == "t"
    with pytest.raises(ValueError, match="--allow-remote"):
        access_token("0.0.0.0")
    generated = access_token("0.0.0.0", allow_remote=True)
    assert generated and len(generated) >= 32 and generated != access_token("0.0.0.0", allow_remote=True)
    assert access_token("192.0.2.7", allow_remote=True, token="given") == "given"
    study = make_photo_study(tmp_path, faces_dir)
    result = subprocess.run(
        [sys.executable, "-m", "perface", "annotate", "serve", str(study), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert result.returncode == 2 and "--allow-remote" in result.stderr and result.stderr.count("\n") == 1


def test_foreign_host_header_is_refused(server):
    status, _, _ = server.request("GET", "/api/next?annotator=rater01", headers={"Host": "attacker.example"})
    assert status == 400  # a page on another site reaching 127.0.0.1 through DNS rebinding


def test_malformed_answers_get_4xx_and_never_reach_the_file(server):
    token = server.next("rater02")["item"]
    good = {"annotator": "rater02", "item": token, "answer": "a", "ms": 1200}
    cases = [
        (b"{not json", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        ({**good, "answer": "c"}, 400, 'must be "a" or "b"'),
        ({**good, "answer": None}, 400, 'must be "a" or "b"'),
        ({**good, "answer": ["a"]}, 400, 'must be "a" or "b"'),
        ({**good, "annotator": "Jane Doe <jane@example.org>"}, 400, "pseudonym"),
        ({**good, "annotator": ""}, 400, "not valid"),
        ({**good, "annotator": 7}, 400, "not valid"),
        ({**good, "ms": -5}, 400, "ms must be"),
        ({**good, "ms": "fast"}, 400, "ms must be"),
        ({**good, "ms": True}, 400, "ms must be"),
        ({**good, "email": "x@example.org"}, 400, "unknown field"),
        ({**good, "item": "q00001"}, 404, "unknown item"),  # a real item id, but not a token
        ({**good, "item": 3}, 404, "unknown item"),
        ({k: v for k, v in good.items() if k != "answer"}, 400, 'must be "a" or "b"'),
        (json.dumps({**good, "pad": "x" * 5000}).encode(), 413, "over 4096 bytes"),
    ]
    for payload, status, message in cases:
        got, body = server.post_answer(payload)
        assert (got, message in body.get("error", "")) == (status, True), (payload, got, body)
    status, _, _data = server.request("POST", "/api/answer", json.dumps(good).encode(), {"Content-Type": "text/plain"})
    assert status == 415
    assert server.request("GET", "/api/answer")[0] == 405
    assert server.request("GET", "/api/next?annotator=../../etc")[0] == 400
    assert not [row for row in stored(server.study) if row[0] == "rater02"]
    status, body = server.post_answer(good)  # the server still works
    assert status == 200 and body["recorded"] is True
    assert [row[0] for row in stored(server.study)].count("rater02") == 1


def test_two_answers_for_the_same_item(server):
    token = server.next("rater03")["item"]
    first = server.post_answer({"annotator": "rater03", "item": token, "answer": "a", "ms": 900})
    again = server.post_answer({"annotator": "rater03", "item": token, "answer": "a", "ms": 950})
    other = server.post_answer({"annotator": "rater03", "item": token, "answer": "b"})
    assert first[0] == 200 and first[1]["recorded"] is True
    assert again[0] == 200 and again[1]["recorded"] is False  # a retry: stored once
    assert again[1]["next"] == first[1]["next"] and first[1]["next"]["progress"]["done"] == 1
    assert other[0] == 409 and "cannot be changed" in other[1]["error"]
    rows = [row for row in stored(server.study) if row[0] == "rater03"]
    assert len(rows) == 1 and rows[0][2] == "a"


def test_one_server_per_study(server):
    result = subprocess.run(
        [sys.executable, "-m", "perface", "annotate", "serve", str(server.study), "--port", "0"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert result.returncode == 1 and "another 'perface annotate serve'" in result.stderr
