"""Load and save checkpoints: a registry name, a Hub repo id or a local directory/file.

A saved checkpoint is a directory with ``model.safetensors``, ``config.json`` (the
:class:`~perface.registry.ModelSpec` fields) and a model card ``README.md``; the same three
files make a Hub repo that ``PerFace.from_pretrained("org/repo@revision")`` loads.
Loading is strict: a state dict whose names or shapes differ from the architecture's is an
error that lists them, never silently patched.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Union

import torch

from ._io import atomic_write, atomic_write_text
from .errors import IncompatibleCheckpointError, UnknownModelError, WeightsNotFoundError
from .hub import fetch_hub_file, resolve_weights, sha256_file, snapshot_commit
from .registry import MODELS, ModelSpec, WeightsSource, get_spec, list_models

if TYPE_CHECKING:
    from .model import PerFace

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CARD_NAME",
    "IncompatibleCheckpointError",
    "PublishedCheckpoint",
    "Checkpoint",
    "parse_hub_id",
    "load_pretrained",
    "check_compatible",
    "save_pretrained",
    "push_to_hub",
]

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"

_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[\w][\w./-]*))?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def parse_hub_id(text: str) -> Optional[tuple[str, str]]:
    """``"org/repo[@revision]"`` -> ``(repo_id, revision)`` (revision defaults to ``"main"``); else None."""
    match = _HUB_ID.match(text)
    if match is None:
        return None
    return match.group("repo"), match.group("rev") or "main"


# --------------------------------------------------------------------------- loading


class Checkpoint(NamedTuple):
    """A loaded checkpoint: its spec, its tensors, and the sha256 of the weights file they came
    from (the registry's pinned hash for registered models, else the hash of ``model.safetensors``)."""

    spec: ModelSpec
    state_dict: StateDict
    sha256: str


def load_pretrained(model: Union[str, Path], *, force: bool = False) -> Checkpoint:
    """Return a :class:`Checkpoint` for a registry name, a local checkpoint or a Hub repo id.

    Order: a registered name (``perface.list_models()``), then an existing local path (a
    directory from :func:`save_pretrained`, or its ``model.safetensors``), then a Hub repo id
    ``org/repo[@revision]`` holding the same files. Anything else raises
    :class:`~perface.UnknownModelError` suggesting close names. ``force`` downloads Hub files again.
    """
    if isinstance(model, Path):
        return _load_local(model)
    text = str(model)
    if text in MODELS:
        spec = get_spec(text)
        assert spec.weights is not None
        path = resolve_weights(spec.weights, spec.name, force=force)
        sha = spec.weights.sha256 or sha256_file(path)
        return Checkpoint(spec, _load_checked(spec, path, f"model {spec.name!r} ({path})"), sha)
    path = Path(text).expanduser()
    if path.exists():
        return _load_local(path)
    hub = parse_hub_id(text)
    if hub is None:
        get_spec(text)  # raises UnknownModelError with suggestions
        raise UnknownModelError(text)
    return _load_hub(text, *hub, force=force)


def _read_config(path: Path, origin: str) -> ModelSpec:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IncompatibleCheckpointError(f"{origin}: cannot read {path} as JSON ({exc}).") from exc
    if not isinstance(config, dict):
        raise IncompatibleCheckpointError(f"{origin}: {path} must hold a JSON object of ModelSpec fields.")
    try:
        return ModelSpec.from_config(config)
    except (ValueError, TypeError) as exc:
        raise IncompatibleCheckpointError(
            f"{origin}: {path} is not a config this perface version understands: {exc}. "
            "Upgrade perface, or re-save the checkpoint with PerFace.save_pretrained."
        ) from exc


def _load_local(path: Path) -> Checkpoint:
    path = path.expanduser()
    if path.is_dir():
        config_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
    elif path.suffix == ".safetensors":
        config_path, weights_path = path.with_name(CONFIG_NAME), path
    else:
        raise IncompatibleCheckpointError(
            f"{path}: perface loads checkpoint directories written by PerFace.save_pretrained "
            f"({WEIGHTS_NAME} + {CONFIG_NAME}). For a local copy of a registered model's weights file "
            "run `perface download NAME --from-file PATH`, then load it by NAME."
        )
    for p in (config_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"checkpoint {path}: {p.name} not found; a perface checkpoint directory holds "
                f"{WEIGHTS_NAME} and {CONFIG_NAME} (written by PerFace.save_pretrained)."
            )
    spec = _read_config(config_path, f"checkpoint {path}")
    return Checkpoint(spec, _load_checked(spec, weights_path, f"checkpoint {path}"), sha256_file(weights_path))


def _load_hub(text: str, repo_id: str, revision: str, force: bool) -> Checkpoint:
    try:
        config_path = fetch_hub_file(repo_id, CONFIG_NAME, revision, name=text, force=force)
    except WeightsNotFoundError as exc:
        raise WeightsNotFoundError(
            f"{exc} ({text!r} is no registered model either — known: {', '.join(list_models())} — "
            "and no local path of that name exists.)"
        ) from exc
    commit = snapshot_commit(config_path) or revision
    if not _COMMIT.match(revision):
        logger.info("%s resolved to commit %s; load %s@%s to pin it.", text, commit, repo_id, commit)
    spec = _read_config(config_path, f"Hub checkpoint {text}")
    source = WeightsSource(kind="hub", repo_id=repo_id, filename=WEIGHTS_NAME, revision=commit, sha256="", size=0)
    weights_path = resolve_weights(source, text, force=force)
    state_dict = _load_checked(spec, weights_path, f"Hub checkpoint {text} ({weights_path})")
    return Checkpoint(spec, state_dict, sha256_file(weights_path))


def _load_checked(spec: ModelSpec, path: Path, origin: str) -> StateDict:
    from safetensors.torch import load_file

    try:
        state_dict = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated/invalid files
        raise IncompatibleCheckpointError(f"{origin}: {path} is not a readable safetensors file ({exc}).") from exc
    check_compatible(spec, state_dict, origin)
    return state_dict


def check_compatible(spec: ModelSpec, state_dict: Mapping[str, torch.Tensor], origin: str) -> None:
    """Raise :class:`IncompatibleCheckpointError` naming every missing, unexpected or mis-shaped tensor.

    The architecture is built on the ``meta`` device (no memory, no compute) to get the names.
    """
    from .archs import build_backbone

    try:
        with torch.device("meta"):
            net = build_backbone(spec.arch, **spec.arch_kwargs)
    except (ValueError, TypeError) as exc:
        raise IncompatibleCheckpointError(
            f"{origin}: config asks for architecture {spec.arch!r} with {spec.arch_kwargs}, which this "
            f"perface cannot build ({exc})."
        ) from exc
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state_dict.items()}
    problems = []
    for label, keys in (
        ("missing", sorted(set(expected) - set(got))),
        ("unexpected", sorted(set(got) - set(expected))),
    ):
        if keys:
            shown = ", ".join(keys[:12]) + (f", ... ({len(keys)} in all)" if len(keys) > 12 else "")
            problems.append(f"{label} keys: {shown}")
    shapes = [f"{k} {got[k]} vs {expected[k]}" for k in sorted(set(got) & set(expected)) if got[k] != expected[k]]
    if shapes:
        problems.append("shape mismatches (checkpoint vs architecture): " + "; ".join(shapes[:12]))
    if problems:
        raise IncompatibleCheckpointError(
            f"{origin} does not fit architecture {spec.arch!r}: "
            + " | ".join(problems)
            + ". Nothing was loaded; check that config.json matches the weights."
        )


# --------------------------------------------------------------------------- saving and publishing


def _spec_with(spec: ModelSpec, overrides: dict[str, Any]) -> ModelSpec:
    allowed = {f.name for f in dataclasses.fields(ModelSpec)} - {"weights"}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"unknown checkpoint fields {unknown}; allowed: {sorted(allowed)}")
    return dataclasses.replace(spec, weights=None, **overrides)


def save_pretrained(model: PerFace, directory: Union[str, Path], **overrides: Any) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``README.md`` (model card) to ``directory``.

    ``overrides`` replace fields of the model's :class:`~perface.registry.ModelSpec` in the saved
    config and card, e.g. ``name="perface-r50-simceleba", perceptual=True, trained_on=...,
    scores={...}, description=..., license=...``. Files are written atomically. Returns the directory.
    """
    from safetensors.torch import save_file

    from ._version import __version__
    from .model_card import render_model_card

    spec = _spec_with(model.spec, overrides)
    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.net.state_dict().items()}
    check_compatible(spec, state, f"model {spec.name!r}")
    weights = directory / WEIGHTS_NAME
    atomic_write(
        weights,
        lambda tmp: save_file(
            state,
            str(tmp),
            metadata={"format": "pt", "perface_version": __version__, "name": spec.name, "arch": spec.arch},
        ),
    )
    config = json.dumps(spec.to_config(), indent=2, sort_keys=True) + "\n"
    atomic_write_text(directory / CONFIG_NAME, config)
    card = render_model_card(spec, sha256=sha256_file(weights), size=weights.stat().st_size)
    atomic_write_text(directory / CARD_NAME, card)
    return directory


@dataclass(frozen=True)
class PublishedCheckpoint:
    """Where :func:`push_to_hub` put a checkpoint: pin ``revision`` and ``sha256`` in the registry."""

    repo_id: str
    revision: str
    sha256: str
    size: int
    url: str = ""

    def registry_source(self) -> str:
        """Python source of the ``WeightsSource`` to paste into ``perface/registry.py``."""
        return (
            f'WeightsSource(kind="hub", repo_id="{self.repo_id}", filename="{WEIGHTS_NAME}",\n'
            f'              revision="{self.revision}",\n'
            f'              sha256="{self.sha256}", size={self.size})'
        )


def push_to_hub(
    model: PerFace,
    repo_id: str,
    *,
    private: Optional[bool] = None,
    token: Optional[str] = None,
    commit_message: Optional[str] = None,
    **overrides: Any,
) -> PublishedCheckpoint:
    """Save ``model`` (see :func:`save_pretrained`) and upload it to the Hub repo ``repo_id``.

    Creates the repo if needed (``HfApi.create_repo(exist_ok=True)``) and uploads the three files
    in one commit (``HfApi.upload_folder``). Uses ``HF_TOKEN``/the saved login unless ``token``
    is given, and ``HF_ENDPOINT``. Returns the commit and hash to pin in a registry entry.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="perface-push-") as tmp:
        folder = save_pretrained(model, tmp, **overrides)
        weights = folder / WEIGHTS_NAME
        sha, size = sha256_file(weights), weights.stat().st_size
        name = json.loads((folder / CONFIG_NAME).read_text())["name"]
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=commit_message or f"Upload perface checkpoint {name}",
        )
    published = PublishedCheckpoint(
        repo_id=repo_id, revision=str(info.oid), sha256=sha, size=size, url=str(getattr(info, "commit_url", ""))
    )
    logger.info(
        "published %s at %s; registry entry weights:\n%s", name, published.revision, published.registry_source()
    )
    return published
