"""The metric signature: one line that says exactly which metric made a number.

Like sacreBLEU's signature for BLEU, it is printed beside every score perface reports, so that two
papers can tell whether they used the same metric. It has seven ``key:value`` fields joined by
``|``, always in this order::

    perface:0.2.0|model:sface@0f0fbaa2|det:retinaface-mnet025@6797d194|align:detect|tpl:arcface|size:112|prec:fp32

- ``perface``: the package version (code changes that move numbers change it).
- ``model``: checkpoint name ``@`` the first 8 hex digits of the sha256 of its weights file (the
  registry's pinned hash, or the hash of a local / Hub ``model.safetensors``). A trailing ``*``
  means the weights were changed in memory after loading (e.g. by training): save the checkpoint
  and reload it to get a pinnable signature.
- ``det``: the face detector and its weights hash when faces are detected (photos, or
  ``align="detect"``), else ``none``.
- ``align``: how inputs reach the template: ``none``, ``detect`` or a crop format (``ffhq``,
  ``arcface``, ``simceleba``); two values ``x,y`` when the two inputs of ``PerFace(x, y)`` are
  aligned differently.
- ``tpl`` / ``size``: the landmark template and side in pixels of the crop the network sees.
- ``prec``: the network's parameter dtype (``fp32``, ``fp16``, ``bf16``, ``fp64``).

:func:`check_signature` compares a signature (e.g. from a paper) with the installed metric and
names every field that differs.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Optional, Union

import torch

from .errors import SignatureMismatchError

if TYPE_CHECKING:
    from .model import PerFace
    from .registry import ModelSpec

__all__ = ["Signature", "signature_of", "checkpoint_signature", "check_signature"]

HASH_DIGITS = 8
_KEYS = ("perface", "model", "det", "align", "tpl", "size", "prec")
_FORBIDDEN = re.compile(r"[|\s]")
_PRECISION = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}


@dataclass(frozen=True)
class Signature:
    """The parsed fields of a signature string (see the module docstring for their meaning).

    ``str(sig)`` gives the canonical string; :meth:`parse` reads one back.
    """

    perface: str
    model: str
    det: str
    align: str
    tpl: str
    size: str
    prec: str

    def __post_init__(self) -> None:
        for key in _KEYS:
            value = getattr(self, key)
            if not isinstance(value, str) or not value or _FORBIDDEN.search(value):
                raise ValueError(
                    f"signature field {key}={value!r}: a value is a non-empty string without '|' or whitespace"
                )

    def __str__(self) -> str:
        return "|".join(f"{key}:{getattr(self, key)}" for key in _KEYS)

    @classmethod
    def parse(cls, text: str) -> Signature:
        """Read a signature string (whitespace around ``|`` is ignored, so a copy that wrapped
        lines still parses). Raises ``ValueError`` naming what is malformed: a field without
        ``:`` or value, an unknown, missing or repeated key, keys out of order, or whitespace
        inside a value."""
        text = text.strip()
        parts = [part.strip() for part in text.split("|")]  # a copy may wrap lines or pad around '|'
        values = {}
        for part in parts:
            key, sep, value = part.partition(":")
            if not sep or not key or not value:
                raise ValueError(
                    f"signature {text!r}: field {part!r} is not key:value; expected "
                    f"{'|'.join(k + ':...' for k in _KEYS)}"
                )
            if key not in _KEYS:
                raise ValueError(f"signature {text!r}: unknown field {key!r}; known fields: {', '.join(_KEYS)}")
            if key in values:
                raise ValueError(f"signature {text!r}: field {key!r} appears twice")
            values[key] = value
        missing = [k for k in _KEYS if k not in values]
        if missing:
            raise ValueError(f"signature {text!r}: missing field(s) {', '.join(missing)}")
        if list(values) != list(_KEYS):
            raise ValueError(f"signature {text!r}: fields must come in the order {', '.join(_KEYS)}")
        return cls(**values)

    def differences(self, other: Signature) -> list[tuple[str, str, str]]:
        """``(field, self's value, other's value)`` for every field that differs."""
        return [
            (f.name, getattr(self, f.name), getattr(other, f.name))
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]


def _short(sha256: str) -> str:
    return sha256[:HASH_DIGITS] if sha256 else "unknown"


def _detector_field() -> str:
    from .registry import DETECTOR

    assert DETECTOR.weights is not None
    return f"{DETECTOR.name}@{_short(DETECTOR.weights.sha256)}"


def _clean(value: str) -> str:
    """A name as a signature value: '|' and whitespace (which would break parsing) become '_'."""
    return _FORBIDDEN.sub("_", value.strip()) or "unknown"


def _modes(align: Union[str, Sequence[str]]) -> tuple[str, ...]:
    modes = (align,) if isinstance(align, str) else tuple(align)
    if not modes:
        raise ValueError("align: give one alignment mode or two (x, y), not an empty sequence")
    return modes[:1] if len(set(modes)) == 1 else modes


def _precision(dtype: torch.dtype) -> str:
    name = str(dtype).replace("torch.", "")
    return _PRECISION.get(name, name)


def checkpoint_signature(
    spec: ModelSpec,
    sha256: str,
    align: Union[str, Sequence[str]] = "none",
    *,
    modified: bool = False,
    dtype: Optional[torch.dtype] = None,
) -> Signature:
    """The signature of a checkpoint described by ``spec`` whose weights file has hash ``sha256``,
    used with ``align`` (one mode, or ``(mode_x, mode_y)``).

    ``dtype``: the network's parameter dtype (default: torch's default dtype, which is what
    ``PerFace(checkpoint)`` loads into); ``modified``: weights changed since loading (adds ``*``).
    This is what a model card prints: the signature ``PerFace(checkpoint)`` reports.
    """
    from ._version import __version__

    modes = _modes(align)
    model = f"{_clean(spec.name)}@{_short(sha256)}" + ("*" if modified else "")
    det = _detector_field() if "detect" in modes else "none"
    return Signature(
        perface=__version__,
        model=model,
        det=det,
        align=",".join(modes),
        tpl=_clean(spec.template),
        size=str(spec.input_size),
        prec=_precision(dtype or torch.get_default_dtype()),
    )


def signature_of(metric: PerFace, align: Union[str, Sequence[str], None] = None) -> Signature:
    """The signature of ``metric`` as used with ``align``.

    ``align``: ``None`` (the metric's own ``align`` setting, i.e. what ``metric(x, y)`` does),
    one mode for both inputs, or ``(mode_x, mode_y)``. The photo functions
    (:func:`perface.similarity`, :func:`perface.embed_images`, ranking) pass ``"detect"``.
    """
    return checkpoint_signature(
        metric.spec,
        metric.weights_sha256,
        metric.align_modes if align is None else align,
        modified=metric.weights_modified,
        dtype=next(metric.net.parameters()).dtype,
    )


# How to reproduce each field of a signature, for the mismatch message.
_FIXES = {
    "perface": "pip install perface=={perface}",
    "model": "load the checkpoint the model field names (name@first 8 hex digits of its weights file's sha256; "
    "a trailing * means weights changed after loading: save and reload them)",
    "det": "the face detector comes with the perface version and is used when align is detect",
    "align": "align inputs as {align} (PerFace(align=...); photos use detect)",
    "tpl": "use the checkpoint the model field names (it sets the template)",
    "size": "use the checkpoint the model field names (it sets the input size)",
    "prec": "cast the metric to {prec} (fp32: .float(), fp16: .half(), bf16: .to(torch.bfloat16))",
}


def check_signature(
    expected: Union[str, Signature],
    metric: Optional[PerFace] = None,
    *,
    align: Union[str, Sequence[str], None] = None,
    strict: bool = True,
) -> Signature:
    """Compare ``expected`` (e.g. copied from a paper) with the installed metric.

    Args:
        expected: a signature string or :class:`Signature`.
        metric: the metric to compare with; default ``PerFace(model)`` for the model named in
            ``expected`` (only the name, so an unknown or missing checkpoint raises as
            :class:`~perface.PerFace` does).
        align: as in :func:`signature_of`; default: the ``align`` field of ``expected``.
        strict: raise :class:`~perface.SignatureMismatchError` on a difference (default);
            ``False`` warns instead (``UserWarning``).

    Returns the installed metric's :class:`Signature`. Raises ``ValueError`` for a malformed
    signature.
    """
    want = expected if isinstance(expected, Signature) else Signature.parse(expected)
    if metric is None:
        from .model import PerFace

        metric = PerFace(want.model.split("@", 1)[0])
    have = signature_of(metric, align=align if align is not None else want.align.split(","))
    diffs = want.differences(have)
    if diffs:
        listed = "; ".join(f"{key}: expected {a!r}, installed {b!r}" for key, a, b in diffs)
        fixes = "; ".join(dict.fromkeys(_FIXES[key].format(**vars(want)) for key, _, _ in diffs))
        message = f"signature mismatch ({listed}); numbers are not comparable. To reproduce them: {fixes}."
        if strict:
            raise SignatureMismatchError(message)
        warnings.warn(message, stacklevel=2)
    return have
