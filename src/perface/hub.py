"""Turn a registry :class:`~perface.registry.WeightsSource` into a verified local file.

Knows nothing about layers. Embedded weights come from the installed package. Hub weights are
fetched once with ``huggingface_hub`` into the standard Hugging Face cache; ``HF_HOME`` /
``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_ETAG_TIMEOUT`` /
``HF_HUB_DOWNLOAD_TIMEOUT`` are honoured. Every file is checked against the registry's pinned
sha256 before use; a source without a pinned hash is trusted on first use and its hash recorded.

Legacy ``.pth`` files are read with ``torch.load(weights_only=True)`` (no code runs) and converted
once to safetensors in perface's own cache, ``$PERFACE_CACHE`` (default ``$HF_HOME/perface``),
with an atomic write under a file lock, so concurrent first use from several processes is safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ._io import atomic_write, atomic_write_text, file_lock
from ._version import __version__
from .errors import ChecksumMismatchError, WeightsNotCachedError, WeightsNotFoundError, WeightsUnavailableError
from .registry import WeightsSource

if TYPE_CHECKING:
    from filelock import BaseFileLock

__all__ = [
    "EMBEDDED_DIR",
    "WeightsNotCachedError",
    "WeightsNotFoundError",
    "FileCheck",
    "sha256_file",
    "perface_cache_dir",
    "hub_cache_dir",
    "fetch_hub_file",
    "resolve_weights",
    "import_weights",
    "weights_status",
    "snapshot_commit",
    "verify_source",
]

logger = logging.getLogger(__name__)

EMBEDDED_DIR = Path(__file__).resolve().parent / "weights"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


# --------------------------------------------------------------------------- cache locations


def perface_cache_dir() -> Path:
    """The one root of everything perface caches: converted/imported weights (``files/``),
    trust-on-first-use records (``trust/``) and pool embeddings (``pools/``, see
    :func:`perface.ranking.pool.default_cache_dir`).

    ``$PERFACE_CACHE`` when set, else ``$HF_HOME/perface`` (``HF_HOME`` defaults to
    ``~/.cache/huggingface``): beside the Hub downloads, so that one variable moves, and one
    folder copied to an offline machine carries, all the files perface needs.
    """
    from huggingface_hub import constants

    return Path(os.environ.get("PERFACE_CACHE") or Path(constants.HF_HOME) / "perface").expanduser()


def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache in use (``HF_HUB_CACHE``, default ``$HF_HOME/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def _key_dir(root: str, repo_id: str, revision: str) -> Path:
    return perface_cache_dir() / root / repo_id.replace("/", "--") / revision


def _store_path(source: WeightsSource) -> Path:
    """Where the safetensors form of a Hub ``.pth`` (converted or imported) lives."""
    assert source.repo_id is not None
    name = Path(source.filename).with_suffix(".safetensors").as_posix().replace("/", "--")
    return _key_dir("files", source.repo_id, source.revision or "main") / name


def _trust_path(repo_id: str, commit: str, filename: str) -> Path:
    return _key_dir("trust", repo_id, commit) / (filename.replace("/", "--") + ".json")


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True))


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _lock(path: Path) -> BaseFileLock:
    return file_lock(path)


# --------------------------------------------------------------------------- hashing


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _mismatch(what: str, path: Path, actual: str, expected: str, fix: str) -> ChecksumMismatchError:
    return ChecksumMismatchError(
        f"{what}: sha256 of {path} is {actual}, expected {expected}. The file is corrupt or was "
        f"tampered with, so it was not loaded. Fix: {fix}"
    )


def _hub_fix(name: str, paths: list[Path]) -> str:
    listed = " and ".join(str(p) for p in paths)
    return (
        f"run `perface download {name} --force` to fetch it again (or delete {listed}); if the Hub "
        "copy itself differs, the pin and the published file disagree: report it."
    )


def snapshot_commit(path: Path) -> Optional[str]:
    """Commit hash of a file inside the HF cache (``.../snapshots/<commit>/...``)."""
    parts = Path(path).parts
    if "snapshots" in parts:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
        if i + 1 < len(parts) and _COMMIT.match(parts[i + 1]):
            return parts[i + 1]
    return None


def _check_hub_file(path: Path, repo_id: str, revision: str, filename: str, pinned: str, name: str) -> str:
    """Check a downloaded Hub file against its pinned sha256, or trust it on first use.

    Without a pin the hash is recorded per (repo, commit, file) on first use with a warning, and
    every later use must match the record. Returns the file's sha256.
    """
    actual = sha256_file(path)
    blob = Path(os.path.realpath(path))
    fix = _hub_fix(name, [path, blob] if blob != Path(path) else [path])
    if pinned:
        if actual != pinned:
            raise _mismatch(f"model {name!r}", path, actual, pinned, fix)
        return actual
    commit = snapshot_commit(path) or revision
    trust = _trust_path(repo_id, commit, filename)
    seen = _read_json(trust)
    if seen is not None:
        if seen.get("sha256") != actual:
            raise _mismatch(
                f"model {name!r} (no pinned sha256; trusted on first use, record {trust})",
                path,
                actual,
                str(seen.get("sha256")),
                fix + f" If the change is expected, delete {trust}.",
            )
        return actual
    _write_json_atomic(
        trust,
        {"repo_id": repo_id, "commit": commit, "filename": filename, "sha256": actual, "size": path.stat().st_size},
    )
    logger.warning(
        "model %r: %s/%s@%s has no pinned sha256 in the registry; trusting it on first use and "
        "recording sha256 %s in %s (later loads must match it).",
        name,
        repo_id,
        filename,
        commit[:12],
        actual,
        trust,
    )
    return actual


# --------------------------------------------------------------------------- Hub access


def _network_error_types() -> tuple[type[BaseException], ...]:
    """Transport-level exception types of whichever HTTP client ``huggingface_hub`` uses."""
    import importlib

    from huggingface_hub.errors import OfflineModeIsEnabled

    types: list[type[BaseException]] = [ConnectionError, TimeoutError, OfflineModeIsEnabled]
    for module, attrs in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests", ("ConnectionError", "Timeout")),
    ):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        types += [getattr(mod, a) for a in attrs if hasattr(mod, a)]
    return tuple(types)


def _describe(repo_id: str, filename: str, revision: str) -> str:
    from huggingface_hub import constants

    return f"{filename} in Hub repo {repo_id} at revision {revision} (endpoint {constants.ENDPOINT})"


def _not_cached(name: str, where: str, reason: str, fix: str) -> WeightsNotCachedError:
    return WeightsNotCachedError(
        f"model {name!r}: {where} is not in the local cache (Hugging Face cache {hub_cache_dir()}, "
        f"perface cache {perface_cache_dir()}) and {reason}. Fix: {fix}"
    )


def _offline_fix(name: str) -> str:
    return (
        f"run `perface download {name}` once with network access (same HF_HOME), or copy a Hugging "
        f"Face cache that holds it and set HF_HOME to it; with a local copy of the file run "
        f"`perface download {name} --from-file PATH`; to use a Hub mirror set HF_ENDPOINT."
    )


def fetch_hub_file(
    repo_id: str,
    filename: str,
    revision: str,
    *,
    name: str,
    token: Optional[str] = None,
    timeout: Optional[float] = None,
    force: bool = False,
) -> Path:
    """Path of ``filename`` from the Hub repo at ``revision``, from the HF cache or downloaded.

    A file cached for a commit hash (or any cached file in offline mode) is returned without
    network access; a branch or tag is looked up online like ``hf_hub_download`` does, falling
    back to the cached copy with a warning if the Hub cannot be reached. A HEAD request with a
    ``timeout`` (default ``HF_HUB_ETAG_TIMEOUT``, 10 s) checks the Hub before ``hf_hub_download``
    fetches the file, so an unreachable Hub fails within that time instead of going through
    huggingface_hub's retries. Raises :class:`WeightsNotCachedError` (offline, unreachable) or
    :class:`WeightsNotFoundError` (no such repo, revision or file; no access).
    """
    from huggingface_hub import constants

    where = _describe(repo_id, filename, revision)
    cached = None if force else _cached_hub_file(repo_id, filename, revision)
    if cached is not None and (_COMMIT.match(revision) or constants.is_offline_mode()):
        return cached
    if constants.is_offline_mode():
        raise _not_cached(name, where, "offline mode is on (HF_HUB_OFFLINE=1)", _offline_fix(name))
    try:
        return _download(
            repo_id,
            filename,
            revision,
            name=name,
            where=where,
            token=token,
            timeout=float(timeout if timeout is not None else constants.HF_HUB_ETAG_TIMEOUT),
            force=force,
        )
    except WeightsNotCachedError as exc:
        if cached is None:
            raise
        logger.warning("model %r: %s; using the cached copy of %s, which may be outdated.", name, exc, where)
        return cached


def _download(
    repo_id: str,
    filename: str,
    revision: str,
    *,
    name: str,
    where: str,
    token: Optional[str],
    timeout: float,
    force: bool,
) -> Path:
    """HEAD with ``timeout``, then ``hf_hub_download``; Hub errors become perface errors."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub import errors as hf_errors

    network_errors = _network_error_types()
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision), token=token, timeout=timeout)
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                token=token,
                etag_timeout=timeout,
                force_download=force,
                library_name="perface",
                library_version=__version__,
            )
        )
    except hf_errors.RevisionNotFoundError as exc:
        raise WeightsNotFoundError(
            f"model {name!r}: revision {revision!r} does not exist in Hub repo {repo_id} "
            f"(endpoint {constants.ENDPOINT}). Fix: use a branch, tag or commit of that repo."
        ) from exc
    except hf_errors.LocalEntryNotFoundError as exc:
        raise _not_cached(name, where, f"the Hub could not be reached ({exc})", _offline_fix(name)) from exc
    except hf_errors.EntryNotFoundError as exc:
        raise WeightsNotFoundError(
            f"model {name!r}: {where} does not exist (HTTP 404). Fix: check the file name and revision; "
            "a perface checkpoint repo holds model.safetensors and config.json."
        ) from exc
    except hf_errors.RepositoryNotFoundError as exc:
        raise WeightsNotFoundError(
            f"model {name!r}: Hub repo {repo_id} was not found at {constants.ENDPOINT}, or it is private "
            "or gated. Fix: check the repo id; for a private or gated repo log in (`hf auth login`) or "
            "set HF_TOKEN."
        ) from exc
    except hf_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403, 404):
            raise WeightsNotFoundError(
                f"model {name!r}: the Hub answered HTTP {status} for {where}. Fix: check the repo id, "
                "file and revision; for a private or gated repo log in (`hf auth login`) or set HF_TOKEN."
            ) from exc
        raise _not_cached(
            name, where, f"the Hub answered HTTP {status} ({exc})", "try again later, or " + _offline_fix(name)
        ) from exc
    except network_errors as exc:
        timed_out = isinstance(exc, TimeoutError) or "timeout" in type(exc).__name__.lower()
        how = f"did not answer within {timeout:g} s" if timed_out else "could not be reached"
        raise _not_cached(
            name,
            where,
            f"the Hub at {constants.ENDPOINT} {how} ({type(exc).__name__}: {exc})",
            _offline_fix(name),
        ) from exc


def _cached_hub_file(repo_id: str, filename: str, revision: str) -> Optional[Path]:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return Path(found) if isinstance(found, str) and os.path.exists(found) else None


# --------------------------------------------------------------------------- .pth -> safetensors


def _pth_to_safetensors(src: Path, dst: Path, source_sha256: str, what: str) -> None:
    """Convert a legacy ``.pth`` state dict to safetensors at ``dst`` (atomic, caller holds the lock)."""
    import torch
    from safetensors.torch import save_file

    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler rejects anything but tensors and plain containers
        raise WeightsUnavailableError(
            f"{what}: {src} is not a plain PyTorch state dict readable with torch.load(weights_only=True) "
            f"({type(exc).__name__}: {exc}); perface never unpickles code."
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsUnavailableError(f"{what}: {src} does not hold a flat mapping of names to tensors.")
    tensors = {str(k): v.detach().contiguous().clone() for k, v in obj.items()}
    metadata = {"format": "pt", "source_sha256": source_sha256, "converted_by": f"perface {__version__}"}
    atomic_write(dst, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    digest = sha256_file(dst)
    _write_json_atomic(
        dst.with_suffix(".json"),
        {
            "sha256": digest,
            "size": dst.stat().st_size,
            "source_sha256": source_sha256,
            "source": src.name,
            "converted_by": f"perface {__version__}",
        },
    )
    logger.info("%s: converted %s to %s", what, src, dst)


def _stored_ok(dst: Path, source_sha256: Optional[str]) -> bool:
    """True if ``dst`` and its record exist and were made from ``source_sha256`` (any if None)."""
    meta = _read_json(dst.with_suffix(".json"))
    return (
        dst.is_file()
        and meta is not None
        and "sha256" in meta
        and (source_sha256 is None or meta.get("source_sha256") == source_sha256)
    )


def _check_stored(dst: Path, name: str) -> Path:
    meta = _read_json(dst.with_suffix(".json")) or {}
    actual = sha256_file(dst)
    if actual != meta.get("sha256"):
        raise _mismatch(
            f"model {name!r} (converted weights)",
            dst,
            actual,
            str(meta.get("sha256")),
            f"delete {dst} (it is rebuilt from the cached download on next use).",
        )
    return dst


def _expected_source_sha(source: WeightsSource) -> Optional[str]:
    """The pinned sha256, or the trust-on-first-use record for the pinned commit, or None."""
    if source.sha256:
        return source.sha256
    assert source.repo_id is not None
    seen = _read_json(_trust_path(source.repo_id, source.revision or "main", source.filename))
    return None if seen is None else seen.get("sha256")


# --------------------------------------------------------------------------- public entry points


def resolve_weights(
    source: WeightsSource,
    name: str,
    *,
    force: bool = False,
    token: Optional[str] = None,
    timeout: Optional[float] = None,
) -> Path:
    """Local path of verified safetensors weights for the registry entry ``name``.

    ``force`` re-downloads Hub files (e.g. after a checksum error). Raises
    :class:`~perface.ChecksumMismatchError`, :class:`WeightsNotCachedError` or
    :class:`WeightsNotFoundError`.
    """
    if source.kind == "embedded":
        path = EMBEDDED_DIR / source.filename
        if not path.is_file():
            raise WeightsUnavailableError(
                f"model {name!r}: embedded weights {path} are missing from the installed package; "
                "reinstall perface (pip install --force-reinstall perface)."
            )
        actual = sha256_file(path)
        if source.sha256 and actual != source.sha256:
            raise _mismatch(
                f"model {name!r}",
                path,
                actual,
                source.sha256,
                "reinstall perface (pip install --force-reinstall perface).",
            )
        return path
    if source.kind != "hub" or source.repo_id is None:
        raise WeightsUnavailableError(f"model {name!r}: weights source kind {source.kind!r} is not supported")
    revision = source.revision or "main"
    dst = _store_path(source)  # converted .pth, or a file imported with `perface download --from-file`
    if not force and _stored_ok(dst, _expected_source_sha(source)):
        return _check_stored(dst, name)
    raw = fetch_hub_file(
        source.repo_id, source.filename, revision, name=name, token=token, timeout=timeout, force=force
    )
    digest = _check_hub_file(raw, source.repo_id, revision, source.filename, source.sha256, name)
    if source.format != "pth":
        return raw
    with _lock(dst):
        if force or not _stored_ok(dst, digest):
            _pth_to_safetensors(raw, dst, digest, f"model {name!r}")
    return _check_stored(dst, name)


def import_weights(source: WeightsSource, name: str, path: Path) -> Path:
    """Put a local copy of a Hub source's file into the perface cache (for offline machines).

    The file must match the pinned sha256 (an unpinned source records it, trust on first use).
    Returns the path that :func:`resolve_weights` will use from now on.
    """
    path = Path(path).expanduser()
    if source.kind != "hub" or source.repo_id is None:
        raise ValueError(f"model {name!r} has {source.kind} weights; there is nothing to import")
    if not path.is_file():
        raise FileNotFoundError(f"model {name!r}: {path} does not exist")
    actual = sha256_file(path)
    if source.sha256 and actual != source.sha256:
        raise _mismatch(
            f"model {name!r}",
            path,
            actual,
            source.sha256,
            f"use an intact copy of {source.repo_id}/{source.filename} (revision {source.revision}).",
        )
    revision = source.revision or "main"
    if not source.sha256:
        _check_hub_file(path, source.repo_id, revision, source.filename, "", name)
    dst = _store_path(source)
    with _lock(dst):
        if source.format == "pth":
            _pth_to_safetensors(path, dst, actual, f"model {name!r}")
        else:
            import shutil

            atomic_write(dst, lambda tmp: shutil.copyfile(path, tmp))
            _write_json_atomic(
                dst.with_suffix(".json"),
                {"sha256": actual, "size": dst.stat().st_size, "source_sha256": actual, "source": path.name},
            )
    return _check_stored(dst, name)


def weights_status(source: WeightsSource) -> str:
    """``"embedded"``, ``"cached"`` (usable offline) or ``"downloadable"``; no network access."""
    if source.kind == "embedded":
        return "embedded"
    assert source.repo_id is not None
    revision = source.revision or "main"
    if _stored_ok(_store_path(source), None):
        return "cached"
    return "cached" if _cached_hub_file(source.repo_id, source.filename, revision) else "downloadable"


@dataclass(frozen=True)
class FileCheck:
    """Outcome of re-hashing one local weights file (see :func:`verify_source`)."""

    path: Path
    expected: str
    actual: str
    what: str

    @property
    def ok(self) -> bool:
        return bool(self.expected) and self.expected == self.actual


def verify_source(source: WeightsSource, name: str) -> list[FileCheck]:
    """Re-hash every local file of ``source`` (embedded, downloaded, converted); no network access.

    An empty list means nothing is on disk yet. ``expected`` is the pinned hash, the
    trust-on-first-use record, or the conversion record; ``""`` if there is nothing to compare to.
    """
    checks: list[FileCheck] = []
    if source.kind == "embedded":
        path = EMBEDDED_DIR / source.filename
        if path.is_file():
            checks.append(FileCheck(path, source.sha256, sha256_file(path), "embedded"))
        return checks
    assert source.repo_id is not None
    revision = source.revision or "main"
    raw = _cached_hub_file(source.repo_id, source.filename, revision)
    if raw is not None:
        expected = source.sha256
        what = "download (pinned sha256)"
        if not expected:
            seen = _read_json(_trust_path(source.repo_id, snapshot_commit(raw) or revision, source.filename))
            expected = "" if seen is None else str(seen.get("sha256", ""))
            what = "download (trust-on-first-use record)" if expected else "download (unpinned, no record)"
        checks.append(FileCheck(raw, expected, sha256_file(raw), what))
    dst = _store_path(source)
    if dst.is_file():
        meta = _read_json(dst.with_suffix(".json")) or {}
        checks.append(FileCheck(dst, str(meta.get("sha256", "")), sha256_file(dst), "converted safetensors"))
        pinned = _expected_source_sha(source)
        if pinned and meta.get("source_sha256") != pinned:
            checks.append(
                FileCheck(
                    dst.with_suffix(".json"),
                    pinned,
                    str(meta.get("source_sha256")),
                    "converted from a file with another sha256",
                )
            )
    return checks
