"""perface._io: atomic writes under concurrency, interruption and umasks; atomic output folders; locks.

Concurrency and umask cases run in real subprocesses (umask is per process; two writers must be
two processes to race for real).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from perface._io import atomic_dir, atomic_write, atomic_write_bytes, atomic_write_text

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _python(code: str, *args: str, timeout: float = 120, prefix=()) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [*prefix, sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out


def _leftovers(folder: Path, name: str):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}."))


# --- two processes, one path -----------------------------------------------------------------

WRITER = """
import hashlib, sys, time
from pathlib import Path
from perface._io import atomic_write_bytes
path, tag, size, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ready = Path(path).parent / "ready"
ready.mkdir(exist_ok=True)
(ready / tag).touch()
while len(list(ready.iterdir())) < 2:  # start together
    time.sleep(0.01)
for i in range(count):
    body = (f"{tag}:{i}:".encode() * (size // 8 + 1))[:size]
    atomic_write_bytes(path, body + hashlib.sha256(body).hexdigest().encode())
"""


def _complete(data: bytes) -> bool:
    body, digest = data[:-64], data[-64:]
    return len(data) > 64 and hashlib.sha256(body).hexdigest().encode() == digest


@pytest.mark.slow
def test_two_writer_processes_never_expose_a_partial_file(tmp_path):
    target = tmp_path / "shared.bin"
    atomic_write_bytes(target, b"x" * 10 + hashlib.sha256(b"x" * 10).hexdigest().encode())
    # Different sizes per writer: a torn or mixed file would fail its checksum or its length.
    writers = [_python(WRITER, str(target), tag, str(size), "150") for tag, size in (("A", 300_000), ("B", 700_000))]
    reads, seen = 0, set()
    while any(w.poll() is None for w in writers):
        data = target.read_bytes()
        assert _complete(data), f"read {len(data)} bytes that are not one whole version"
        seen.add(data[:1])
        reads += 1
    for w in writers:
        _finish(w)
    assert _complete(target.read_bytes())
    assert reads > 20 and seen >= {b"A", b"B"}  # the reader really ran while both wrote
    assert _leftovers(tmp_path, target.name) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ready", "shared.bin"]


# --- interruption ----------------------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_an_error_inside_write_keeps_the_old_file_and_no_temporary(tmp_path, error):
    target = atomic_write_text(tmp_path / "report.md", "old\n")

    def write(tmp: Path) -> None:
        tmp.write_text("half of the new")
        raise error

    with pytest.raises(type(error)):
        atomic_write(target, write)
    assert target.read_text() == "old\n"
    assert _leftovers(tmp_path, "report.md") == []
    with pytest.raises(type(error)):
        atomic_write(tmp_path / "new.md", write)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_write_creates_missing_folders_and_returns_the_path(tmp_path):
    out = atomic_write_bytes(tmp_path / "a" / "b" / "c.bin", b"\x00\x01")
    assert out == tmp_path / "a" / "b" / "c.bin" and out.read_bytes() == b"\x00\x01"


# --- permissions -----------------------------------------------------------------------------

MODES = """
import os, sys
from pathlib import Path
os.umask(int(sys.argv[2], 8))
from perface._io import atomic_dir, atomic_write_text, file_lock, file_mode
root = Path(sys.argv[1])
f = atomic_write_text(root / "new.txt", "x")
with atomic_dir(root / "out") as tmp:
    (tmp / "inside.txt").write_text("y")
with file_lock(root / "data.json"):
    lock_mode = os.stat(str(root / "data.json") + ".lock").st_mode
print(oct(file_mode()), oct(os.stat(f).st_mode & 0o777), oct(os.stat(root / "out").st_mode & 0o777),
      oct(lock_mode & 0o777))
"""


@pytest.mark.parametrize("umask, file_mode, dir_mode", [("022", "0o644", "0o755"), ("002", "0o664", "0o775")])
def test_new_files_and_folders_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    out = _finish(_python(MODES, str(tmp_path), umask)).split()
    assert out == [file_mode, file_mode, dir_mode, file_mode]


def test_a_replaced_file_keeps_its_mode(tmp_path):
    target = atomic_write_text(tmp_path / "secret.json", "{}")
    os.chmod(target, 0o600)
    atomic_write_text(target, '{"token": 1}')
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_text() == '{"token": 1}'


READ_ONLY = """
import os, sys
os.umask(0o277)
from perface._io import atomic_write_text
p = atomic_write_text(sys.argv[1], "kept")
print(oct(os.stat(p).st_mode & 0o777), open(p).read())
"""


def test_a_umask_without_owner_write_still_writes_like_open_does(tmp_path):
    """``open(p, "w")`` writes through its descriptor even when the umask leaves the new file
    read-only (0o400); so must atomic_write. Root ignores permissions, so as root the writer
    runs without the capability to override them (util-linux ``setpriv``)."""
    prefix = ()
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without util-linux setpriv: cannot drop the permission override")
        prefix = (setpriv, "--bounding-set=-dac_override,-dac_read_search", "--")
    out = _finish(_python(READ_ONLY, str(tmp_path / "ro.txt"), prefix=prefix))
    assert out.split() == ["0o400", "kept"]


# --- atomic_dir ------------------------------------------------------------------------------


def test_atomic_dir_shows_nothing_until_complete_then_everything(tmp_path):
    out = tmp_path / "report"
    with atomic_dir(out) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "empty").mkdir()
        (tmp / "a.csv").write_text("a")
        (tmp / "sub" / "b.png").write_bytes(b"png")
        assert not out.exists()
    assert (out / "a.csv").read_text() == "a" and (out / "sub" / "b.png").read_bytes() == b"png"
    assert (out / "sub" / "empty").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


@pytest.mark.parametrize("error", [ValueError("bad input"), KeyboardInterrupt()])
def test_atomic_dir_interrupted_leaves_the_old_output_and_no_temporary(tmp_path, error):
    out = tmp_path / "report"
    with atomic_dir(out) as tmp:
        (tmp / "a.csv").write_text("old")
    with pytest.raises(type(error)), atomic_dir(out) as tmp:
        (tmp / "a.csv").write_text("new")
        (tmp / "b.csv").write_text("new")
        raise error
    assert sorted(p.name for p in out.iterdir()) == ["a.csv"] and (out / "a.csv").read_text() == "old"
    with pytest.raises(type(error)), atomic_dir(tmp_path / "fresh") as tmp:
        (tmp / "x").write_text("x")
        raise error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_atomic_dir_into_an_existing_folder_replaces_same_names_and_keeps_others(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "a.csv").write_text("old")
    with atomic_dir(out) as tmp:
        (tmp / "a.csv").write_text("new")
        (tmp / "deep" / "er").mkdir(parents=True)
        (tmp / "deep" / "er" / "c.json").write_text("{}")
    assert (out / "keep.txt").read_text() == "mine" and (out / "a.csv").read_text() == "new"
    assert (out / "deep" / "er" / "c.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


# --- file_lock -------------------------------------------------------------------------------

COUNTER = """
import sys, time
from perface._io import atomic_write_text, file_lock
from pathlib import Path
path = Path(sys.argv[1])
(path.parent / f"ready-{sys.argv[3]}").touch()
while len(list(path.parent.glob("ready-*"))) < 2:  # start together, or one may finish before the other starts
    time.sleep(0.01)
for _ in range(int(sys.argv[2])):
    with file_lock(path):
        atomic_write_text(path, str(int(path.read_text()) + 1), durable=False)
"""


@pytest.mark.slow
def test_file_lock_serializes_read_modify_write_between_processes(tmp_path):
    counter = atomic_write_text(tmp_path / "count.txt", "0")
    start = time.monotonic()
    procs = [_python(COUNTER, str(counter), "300", str(i)) for i in range(2)]
    for p in procs:
        _finish(p)
    assert counter.read_text() == "600", f"lost updates after {time.monotonic() - start:.1f}s"
