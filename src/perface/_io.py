"""The one way perface writes files: atomically, durably, with the user's umask, under a lock.

Every file perface writes (caches, checkpoints, reports, plots, logs that are rewritten) goes
through :func:`atomic_write`: the content is written to a uniquely named temporary file in the
same folder, flushed and fsync'ed, given the permissions a plain ``open(path, "w")`` would
give (those of the file it replaces, else ``0o666 & ~umask``), then renamed over the
destination (``os.replace``, atomic on POSIX and Windows) and the folder entry is fsync'ed.
A reader therefore sees the old file or the new one, never a partial one, and two writers
never share a temporary name.

:func:`file_lock` serializes read-modify-write sequences between processes and machines that
share a folder (``filelock``); :func:`atomic_dir` builds an output folder in a temporary
sibling and moves it into place only when complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Union

if TYPE_CHECKING:
    from filelock import BaseFileLock

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_bytes", "file_lock", "atomic_dir", "file_mode"]

PathLike = Union[str, "os.PathLike[str]"]

_umask_lock = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:  # portable fallback: set and restore
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """Permission bits of a new regular file: ``0o666 & ~umask`` (what ``open(path, "w")`` gives)."""
    return 0o666 & ~_umask()


def _fsync_file(path: Path) -> None:
    if os.name == "posix":  # fsync needs no write access there
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    else:
        with open(path, "rb+") as fh:
            os.fsync(fh.fileno())


def _mode_for(path: Path) -> int:
    """What ``open(path, "w")`` leaves: an existing file keeps its mode, a new one follows the umask."""
    try:
        st = os.stat(path)
    except OSError:
        return file_mode()
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else file_mode()


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[Path], Any], *, durable: bool = True) -> Path:
    """Create or replace ``path`` atomically: ``write(tmp)`` fills a temporary file, then it is
    renamed over ``path``.

    Args:
        path: destination file; its folder is created if missing.
        write: called with the temporary file's path (same folder, unique name, already
            created and empty); it writes the whole content there (by path, so libraries such as
            safetensors or ``torch.save`` can be used).
        durable: fsync the file and its folder (False for scratch files where speed matters more
            than surviving a power cut).

    The new file gets the mode of the file it replaces, or ``0o666 & ~umask`` when there is
    none (as ``open(path, "w")`` would). A symlink at ``path`` is replaced by the file, not
    followed. Returns the destination path. On any exception (including ``KeyboardInterrupt``) the
    temporary file is removed, ``path`` is left as it was, and the exception propagates.
    Raises ``OSError`` (e.g. ``PermissionError``) when the folder cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o600)  # a strict umask may have masked mkstemp's 0600, and write() reopens by path
        write(tmp)
        if durable:
            _fsync_file(tmp)
        os.chmod(tmp, _mode_for(path))  # what open() would give, set last: it may leave no write bit
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: PathLike, data: bytes, *, durable: bool = True) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), durable=durable)


def atomic_write_text(path: PathLike, text: str, *, encoding: str = "utf-8", durable: bool = True) -> Path:
    """:func:`atomic_write` of ``text`` (UTF-8 by default, ``\\n`` line ends kept as given)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding=encoding, newline="") as fh:
            fh.write(text)

    return atomic_write(path, write, durable=durable)


def file_lock(path: PathLike, timeout: float = -1) -> BaseFileLock:
    """An inter-process lock guarding ``path``: a ``filelock.FileLock`` on ``path + ".lock"``.

    Use as a context manager around read-modify-write of ``path``. ``timeout``: seconds to wait
    (-1: forever); ``filelock.Timeout`` is raised when it runs out. The lock file is created
    with the umask's permissions so that users sharing a folder can all take it.
    """
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock", timeout=timeout, mode=file_mode())


@contextlib.contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Build an output folder completely, then put it in place.

    Yields a fresh temporary folder next to ``path``; when the block ends without an exception,
    the folder is renamed to ``path`` if there is none (one atomic step), else each file in it
    is moved into ``path`` (files of the same name are replaced, others in ``path`` are kept;
    sub-folders, empty ones included, are created), each move atomic. On an exception,
    including ``KeyboardInterrupt``, the temporary folder is deleted and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if not path.exists():
            try:
                os.replace(tmp, path)
            except OSError:  # another process created path meanwhile: merge into it below
                pass
            else:
                _fsync_dir(path.parent)
                return
        for item in sorted(tmp.rglob("*")):
            dest = path / item.relative_to(tmp)
            if item.is_dir() and not item.is_symlink():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(item, dest)
        _fsync_dir(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
