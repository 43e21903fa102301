"""Train / validation / test splits of a triplet set.

- ``random``: a seeded random split of the triplets (default 80/10/10); a triplet's part depends
  only on its id and the seed.
- The paper's identity-disjoint protocols on SimCelebA's grid: the 6,400 triplet ids form an
  80 x 80 grid of (target, source group). A fraction of the targets and of the source groups is
  held out for test (and another for validation):

  - ``unseen`` [i]: test triplets have a held-out target AND a held-out source group; training
    uses neither held-out targets nor held-out source groups (other triplets are unused);
  - ``seen-source`` [ii]: test triplets have a held-out target; their source groups are seen in
    training;
  - ``seen-target`` [iii]: test triplets have a held-out source group; their targets are seen.

  Which half of the id is the target is not documented by the dataset. ``layout="target-major"``
  (default) reads ``id = target * 80 + source`` (so ``id % 80`` is the source group, which the
  released answers support: answers at ids ``n`` and ``n + 80`` correlate 0.49, neighbours
  ``n``, ``n + 1`` only 0.04); ``layout="source-major"`` reads ``id = source * 80 + target``.
- A split file: JSON ``{"train": [ids], "val": [ids], "test": [ids]}`` (e.g. written by the
  synthetic generator, which splits by identity).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import grid_ids

__all__ = ["Split", "PROTOCOLS", "random_split", "protocol_split", "load_split_file", "make_split", "top_up_validation"]

PROTOCOLS = ("unseen", "seen-source", "seen-target")
LAYOUTS = ("target-major", "source-major")


@dataclass(frozen=True)
class Split:
    """Triplet ids of each part, plus how they were chosen (for the model card)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    description: str

    def to_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}


def random_split(ids: Sequence[str], val: float = 0.1, test: float = 0.1, seed: int = 0) -> Split:
    """Seeded random split of ``ids`` into (1 - val - test, val, test) fractions."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"val and test fractions must be in [0, 1) with val + test < 1, got {val}, {test}")
    # order by a seeded hash of each id, so a triplet's part does not depend on which others exist
    # (e.g. whether an unreadable image was skipped)
    keys = [hashlib.sha256(f"{seed}:{tid}".encode()).hexdigest() for tid in ids]
    order = np.argsort(keys, kind="stable")
    n_test, n_val = round(test * len(ids)), round(val * len(ids))
    pick = lambda idx: tuple(ids[i] for i in sorted(idx))
    return Split(
        train=pick(order[n_test + n_val :]),
        val=pick(order[n_test : n_test + n_val]),
        test=pick(order[:n_test]),
        description=f"random triplet split {1 - val - test:.0%}/{val:.0%}/{test:.0%} (seed {seed})",
    )


def _cells(ids: Sequence[str], layout: str, grid: int) -> tuple[np.ndarray, np.ndarray]:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    numbers = np.asarray(grid_ids(ids))
    if numbers.size and numbers.max() >= grid * grid:
        raise ValueError(f"triplet id t{numbers.max()} lies outside a {grid} x {grid} grid")
    major, minor = numbers // grid, numbers % grid
    return (major, minor) if layout == "target-major" else (minor, major)  # (target, source)


def protocol_split(
    ids: Sequence[str],
    protocol: str,
    holdout: float = 0.2,
    val_holdout: float = 0.1,
    seed: int = 0,
    layout: str = "target-major",
    grid: int = 80,
) -> Split:
    """Identity-disjoint split of SimCelebA-style ids (see the module docstring).

    ``holdout`` / ``val_holdout``: fractions of the targets and of the source groups held out
    for test / validation (validation follows the same rule as test).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    target, source = _cells(ids, layout, grid)
    rng = np.random.default_rng(seed)
    n_test, n_val = round(holdout * grid), round(val_holdout * grid)
    if n_test < 1 or n_test + n_val >= grid:
        raise ValueError(f"holdout {holdout} and val_holdout {val_holdout} leave no test or no training units")
    t_order, s_order = rng.permutation(grid), rng.permutation(grid)
    t_test, t_val = np.isin(target, t_order[:n_test]), np.isin(target, t_order[n_test : n_test + n_val])
    s_test, s_val = np.isin(source, s_order[:n_test]), np.isin(source, s_order[n_test : n_test + n_val])
    if protocol == "unseen":
        test, val = t_test & s_test, t_val & s_val
        train = ~(t_test | t_val) & ~(s_test | s_val)
    elif protocol == "seen-source":
        test, val, train = t_test, t_val, ~(t_test | t_val)
    else:
        test, val, train = s_test, s_val, ~(s_test | s_val)
    pick = lambda mask: tuple(tid for tid, m in zip(ids, mask) if m)
    names = {
        "unseen": "[i] unseen target & source",
        "seen-source": "[ii] seen source, unseen target",
        "seen-target": "[iii] seen target, unseen source",
    }
    return Split(
        train=pick(train),
        val=pick(val),
        test=pick(test),
        description=(
            f"protocol {names[protocol]}: {holdout:.0%} of targets/source groups held out for test, "
            f"{val_holdout:.0%} for validation, {grid}x{grid} grid, layout {layout} (seed {seed})"
        ),
    )


def load_split_file(path: Path, ids: Sequence[str]) -> Split:
    """A JSON split file ``{"train": [...], "val": [...], "test": [...]}`` restricted to ``ids``."""
    spec = json.loads(Path(path).read_text())
    missing = [k for k in ("train", "val", "test") if k not in spec]
    if missing:
        raise ValueError(f"split file {path}: missing keys {missing}")
    known = set(ids)
    parts = {k: tuple(t for t in spec[k] if t in known) for k in ("train", "val", "test")}
    overlap = (set(parts["train"]) & (set(parts["val"]) | set(parts["test"]))) | (
        set(parts["val"]) & set(parts["test"])
    )
    if overlap:
        raise ValueError(f"split file {path}: {len(overlap)} ids are in more than one part, e.g. {sorted(overlap)[:3]}")
    return Split(parts["train"], parts["val"], parts["test"], spec.get("description", f"split file {Path(path).name}"))


def make_split(
    ids: Sequence[str],
    split: str,
    seed: int = 0,
    val: float = 0.1,
    test: float = 0.1,
    holdout: float = 0.2,
    val_holdout: float = 0.1,
    layout: str = "target-major",
    grid: int = 80,
) -> Split:
    """``split``: ``"random"``, a protocol name (``PROTOCOLS``) or the path of a JSON split file."""
    if split == "random":
        return random_split(ids, val=val, test=test, seed=seed)
    if split in PROTOCOLS:
        return protocol_split(ids, split, holdout=holdout, val_holdout=val_holdout, seed=seed, layout=layout, grid=grid)
    if split.endswith(".json"):
        return load_split_file(Path(split), ids)
    raise ValueError(f"--split must be 'random', one of {PROTOCOLS} or a .json split file, got {split!r}")


def top_up_validation(
    split: Split, scored: Sequence[str], min_val: int, seed: int = 0, max_share: float = 0.2
) -> Split:
    """Move training triplets to validation until it holds ``min_val`` scored triplets.

    ``scored``: the ids validation scores (the unanimous ones). The protocols can leave only a
    handful of validation triplets (e.g. 16 unanimous ones for ``unseen`` on SimCelebA), too few
    to choose an epoch; the ones moved are drawn (seeded, by id hash as in :func:`random_split`)
    from the scored training triplets, at most ``max_share`` of them, and the description says
    how many. Returns ``split`` unchanged when its validation part is large enough.
    """
    keep = set(scored)
    have = sum(t in keep for t in split.val)
    candidates = [t for t in split.train if t in keep]
    take = min(max(0, min_val - have), int(max_share * len(candidates)))
    if take <= 0:
        return split
    order = sorted(candidates, key=lambda t: hashlib.sha256(f"val:{seed}:{t}".encode()).hexdigest())
    moved = set(order[:take]) | set(split.val)
    return Split(
        train=tuple(t for t in split.train if t not in moved),
        val=tuple(t for t in split.train + split.val if t in moved),
        test=split.test,
        description=(
            f"{split.description}; validation: {have} triplets of the split's own plus {take} drawn "
            f"from its training part (seed {seed})"
        ),
    )
