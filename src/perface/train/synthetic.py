"""Generated triplets where "looks alike" and "same identity" disagree: a proof-of-learning set.

``python -m perface.train.synthetic --out DIR --faces PHOTOS [--train N --val N --test N]``
writes a set in SimCelebA's on-disk format (``t####_{a,b,c}.jpg`` 224x224 crops aligned to the
``simceleba`` template, ``triplet_answers.csv`` with three answers) plus ``split.json`` (split by
identity) and ``meta.csv`` (how each triplet was made), so ``python -m perface.train --data DIR
--split DIR/split.json`` trains on it unchanged.

How it is made (see docs/training.md):

- *People*: the faces in ``--faces`` (one person per file-name stem without trailing digits and
  ``_suffix``: ``obama.jpg``, ``obama2.jpg``, ``obama3.jpg`` are one person), detected and aligned.
  The people are split in two halves; the test identities come only from the held-out half.
- *Identities*: each half's people and their pairwise 30/70, 50/50 and 70/30 morphs (pixel
  blends of the aligned crops) are *bases*; every base gets several fixed smooth random warps of the face shape (eye
  spacing, jaw, nose length...), each warp one synthetic identity. Validation uses held-out
  warps of the training bases.
- *Renderings*: a rendering of an identity is one of its base's photos, its warp, a random small
  pose jitter (rotation, scale, shift), blur, and an *appearance*: exposure (skin tone), colour
  cast, lighting direction and strength, saturation; then JPEG compression.
- *Triplets*: the reference is identity I with a strong appearance A; the positive has nearly
  the same appearance, the negative a clearly different one. Three kinds:

  - ``conflict``: positive = another identity J, negative = I itself (an identity model picks
    the wrong face);
  - ``neutral``: positive = J, negative = a third identity K (identity is no help);
  - ``agree``: positive = I (another rendering), negative = K (identity and appearance agree).

  The label rule, "the face with the same appearance looks more alike", holds by construction;
  the mix (default 30% conflict, 50% neutral, 20% agree) puts an identity model near chance
  overall and near 0 on ``conflict``. A ``--dissent`` fraction gets one disagreeing answer
  (so D1 and D2 differ).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations, product
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .._io import atomic_write, atomic_write_text
from ..commands import add_quiet, make_parser, run_command

__all__ = ["Appearance", "generate", "main"]

SIZE = 224
TEMPLATE = "simceleba"
MORPH_WEIGHTS = (0.3, 0.5, 0.7)  # share of the first person in a morph


@dataclass(frozen=True)
class Appearance:
    """A global appearance change: exposure (log factor), colour cast (hue angle, strength),
    lighting (direction angle, strength), saturation (1 = unchanged)."""

    exposure: float = 0.0
    cast_angle: float = 0.0
    cast: float = 0.0
    light_angle: float = 0.0
    light: float = 0.0
    saturation: float = 1.0

    def vector(self) -> np.ndarray:
        """Components scaled to comparable units (for distances between appearances)."""
        return np.array(
            [
                self.exposure / 0.5,
                self.cast * math.cos(self.cast_angle) / 0.25,
                self.cast * math.sin(self.cast_angle) / 0.25,
                self.light * math.cos(self.light_angle) / 0.5,
                self.light * math.sin(self.light_angle) / 0.5,
                (self.saturation - 1) / 0.5,
            ]
        )

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to an image (3, H, W) in [0, 1]."""
        gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
        x = gray + self.saturation * (x - gray)
        phases = torch.tensor([0.0, -2 * math.pi / 3, 2 * math.pi / 3])
        x = x * (1 + self.cast * torch.cos(self.cast_angle + phases))[:, None, None]
        h, w = x.shape[-2:]
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        x = x * (1 + self.light * (math.cos(self.light_angle) * xx + math.sin(self.light_angle) * yy))
        return (x * math.exp(self.exposure)).clamp(0, 1)


def _strong_appearance(rng: np.random.Generator) -> Appearance:
    sign = rng.choice([-1.0, 1.0])
    return Appearance(
        exposure=float(sign * rng.uniform(0.25, 0.7) if sign < 0 else rng.uniform(0.15, 0.4)),
        cast_angle=float(rng.uniform(0, 2 * math.pi)),
        cast=float(rng.uniform(0.12, 0.3)),
        light_angle=float(rng.uniform(0, 2 * math.pi)),
        light=float(rng.uniform(0.25, 0.6)),
        saturation=float(rng.choice([rng.uniform(0.1, 0.5), rng.uniform(1.35, 1.7)])),
    )


def _jittered(a: Appearance, rng: np.random.Generator) -> Appearance:
    """Nearly the same appearance (the positive's)."""
    return Appearance(
        a.exposure + rng.normal(0, 0.04),
        a.cast_angle + rng.normal(0, 0.15),
        a.cast * rng.uniform(0.85, 1.15),
        a.light_angle + rng.normal(0, 0.15),
        a.light * rng.uniform(0.85, 1.15),
        max(0.0, a.saturation + rng.normal(0, 0.05)),
    )


def _different(a: Appearance, rng: np.random.Generator) -> Appearance:
    """A clearly different appearance (the negative's): neutral half of the time."""
    while True:
        b = Appearance() if rng.random() < 0.5 else _strong_appearance(rng)
        if np.abs(b.vector() - a.vector()).sum() > 3.0:
            return b


def _person(stem: str) -> str:
    return re.sub(r"\d+$", "", stem.split("_")[0]).lower()


def load_people(faces: Path, progress: bool = True) -> dict[str, list[torch.Tensor]]:
    """Aligned 224 ``simceleba`` crops (3, 224, 224) per person from the photos in ``faces``.

    Byte-identical photos (e.g. a PNG copy of a JPEG) and photos without a face are skipped.
    """
    from ..alignment import align_faces
    from ..errors import ImageReadError, NoFaceError

    people: dict[str, list[torch.Tensor]] = {}
    seen: list[torch.Tensor] = []  # crops kept so far
    for path in sorted(p for p in Path(faces).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        try:
            crop = align_faces(path, template=TEMPLATE, size=SIZE)[0]
        except (NoFaceError, ImageReadError) as exc:
            warnings.warn(f"skipping {path}: {exc}", stacklevel=2)
            continue
        if any(float((crop - s).abs().mean()) < 0.02 for s in seen):
            continue  # the same photo in another file format
        seen.append(crop)
        if progress:
            print(f"face: {path.name} -> person {_person(path.stem)!r}", file=sys.stderr)
        people.setdefault(_person(path.stem), []).append(crop)
    return people


@dataclass(frozen=True)
class _Identity:
    name: str
    photos: tuple[torch.Tensor, ...]
    people: frozenset
    flow: torch.Tensor  # (H, W, 2) displacement in grid units


def _flow(rng: np.random.Generator, amplitude: float = 0.06) -> torch.Tensor:
    coarse = torch.from_numpy(rng.normal(0, amplitude, size=(1, 2, 4, 4))).float()
    return F.interpolate(coarse, size=(SIZE, SIZE), mode="bicubic", align_corners=True)[0].permute(1, 2, 0)


def _identities(
    people: dict[str, list[torch.Tensor]], names: Sequence[str], warps: range, seed: int
) -> list[_Identity]:
    bases = [(n, tuple(people[n]), frozenset([n])) for n in names]
    for (p, q), w in product(combinations(names, 2), MORPH_WEIGHTS):
        blends = tuple(w * a + (1 - w) * b for a in people[p] for b in people[q])
        bases.append((f"{p}+{q}@{w:g}", blends, frozenset([p, q])))
    out = []
    for name, photos, members in bases:
        for w in warps:
            rng = np.random.default_rng([seed, w, sum(map(ord, name))])
            out.append(_Identity(f"{name}#{w}", photos, members, _flow(rng)))
    return out


def _render(identity: _Identity, appearance: Appearance, rng: np.random.Generator) -> torch.Tensor:
    photo = identity.photos[rng.integers(len(identity.photos))]
    angle, scale = math.radians(rng.normal(0, 3)), 1 + rng.normal(0, 0.03)
    shift = rng.normal(0, 0.02, size=2)
    theta = torch.tensor(
        [
            [scale * math.cos(angle), -scale * math.sin(angle), shift[0]],
            [scale * math.sin(angle), scale * math.cos(angle), shift[1]],
        ],
        dtype=torch.float32,
    )
    grid = F.affine_grid(theta[None], [1, 3, SIZE, SIZE], align_corners=False) + identity.flow[None]
    x = F.grid_sample(photo[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    sigma = rng.uniform(0, 1.2)
    if sigma > 0.3:
        k = torch.exp(-0.5 * (torch.arange(-3, 4, dtype=torch.float32) / sigma) ** 2)
        k = k / k.sum()
        x = F.conv2d(F.pad(x[:, None], (3, 3, 3, 3), mode="replicate"), k.view(1, 1, 1, 7))
        x = F.conv2d(x, k.view(1, 1, 7, 1))[:, 0]
    return appearance.apply(x)


def _save(x: torch.Tensor, path: Path, quality: int) -> None:
    from PIL import Image

    image = Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    atomic_write(path, lambda tmp: image.save(tmp, format="JPEG", quality=quality), durable=False)


def generate(
    out: Path,
    faces: Path,
    n_train: int = 1200,
    n_val: int = 150,
    n_test: int = 300,
    warps: int = 4,
    conflict: float = 0.3,
    agree: float = 0.2,
    dissent: float = 0.25,
    seed: int = 0,
    test_people: Optional[Sequence[str]] = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the set to ``out``; returns its description (also in ``out/split.json``).

    ``test_people``: the people whose identities make up the test set (default: the second half
    of the people in sorted order). ``conflict`` / ``agree``: fractions of those kinds (the rest
    are neutral). ``dissent``: fraction of triplets with one disagreeing answer.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    people = load_people(faces, progress)
    names = sorted(people)
    if len(names) < 4:
        raise ValueError(f"{faces}: need photos of at least 4 people (found {names}) to split identities")
    held = sorted(test_people) if test_people else names[len(names) // 2 :]
    unknown = set(held) - set(names)
    if unknown:
        raise ValueError(f"test_people {sorted(unknown)} not among the people found: {names}")
    train_names = [n for n in names if n not in held]
    parts = {
        "train": (_identities(people, train_names, range(warps), seed), n_train),
        "val": (_identities(people, train_names, range(warps, warps + 2), seed), n_val),
        "test": (_identities(people, held, range(warps), seed), n_test),
    }
    rng = np.random.default_rng(seed)
    rows, meta = [], []
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    tid = 0
    total = n_train + n_val + n_test
    bar = tqdm(total=total, desc="generating triplets", unit="triplet", disable=not progress)
    for part, (idents, count) in parts.items():
        for _ in range(count):
            ref_id = idents[rng.integers(len(idents))]
            others = [i for i in idents if not (i.people & ref_id.people)] or [
                i for i in idents if i.people != ref_id.people
            ]
            pos_id = others[rng.integers(len(others))]
            draw = rng.random()
            kind = "conflict" if draw < conflict else "agree" if draw < conflict + agree else "neutral"
            rest = [i for i in others if i is not pos_id]
            neg_id = ref_id if kind == "conflict" else rest[rng.integers(len(rest))]
            if kind == "agree":
                pos_id = ref_id
            appearance = _strong_appearance(rng)
            images = {
                "c": _render(ref_id, appearance, rng),
                "pos": _render(pos_id, _jittered(appearance, rng), rng),
                "neg": _render(neg_id, _different(appearance, rng), rng),
            }
            pos_slot = "a" if rng.random() < 0.5 else "b"
            neg_slot = "b" if pos_slot == "a" else "a"
            name = f"t{tid:04d}"
            for slot, key in (("c", "c"), (pos_slot, "pos"), (neg_slot, "neg")):
                _save(images[key], out / f"{name}_{slot}.jpg", quality=int(rng.integers(85, 96)))
            answers = [pos_slot] * 3
            if rng.random() < dissent:
                answers[rng.integers(3)] = neg_slot
            rows.append([name, *answers])
            meta.append(
                {
                    "tripletId": name,
                    "split": part,
                    "kind": kind,
                    "positive": pos_slot,
                    "reference_identity": ref_id.name,
                    "positive_identity": pos_id.name,
                    "negative_identity": neg_id.name,
                }
            )
            split[part].append(name)
            tid += 1
            bar.update()
    bar.close()
    answers_csv = io.StringIO()
    writer = csv.writer(answers_csv, lineterminator="\r\n")  # CRLF, like the released SimCelebA file
    writer.writerow(["tripletId", "ans1", "ans2", "ans3"])
    writer.writerows(rows)
    atomic_write_text(out / "triplet_answers.csv", answers_csv.getvalue())
    table = io.StringIO()
    dict_writer = csv.DictWriter(table, fieldnames=list(meta[0]), lineterminator="\n")
    dict_writer.writeheader()
    dict_writer.writerows(meta)
    atomic_write_text(out / "meta.csv", table.getvalue())
    description = (
        f"synthetic appearance triplets split by identity: train/val from people {train_names} "
        f"(val: held-out warps), test from held-out people {held}; seed {seed}"
    )
    info = {
        **split,
        "description": description,
        "people": names,
        "test_people": held,
        "identities": {k: len(v[0]) for k, v in parts.items()},
    }
    atomic_write_text(out / "split.json", json.dumps(info, indent=1) + "\n")
    return info


PROG = "python -m perface.train.synthetic"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``python -m perface.train.synthetic`` (see :func:`generate`)."""
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (SimCelebA format)")
    parser.add_argument(
        "--faces",
        required=True,
        metavar="DIR",
        help="folder of photos of at least 4 people (e.g. ../shared/data/faces)",
    )
    parser.add_argument("--train", type=int, default=1200, metavar="N", help="training triplets")
    parser.add_argument("--val", type=int, default=150, metavar="N", help="validation triplets")
    parser.add_argument("--test", type=int, default=300, metavar="N", help="test triplets (held-out people)")
    parser.add_argument(
        "--warps", type=int, default=4, metavar="N", help="synthetic identities (face-shape warps) per base"
    )
    parser.add_argument(
        "--conflict", type=float, default=0.3, metavar="P", help="fraction of identity-conflict triplets"
    )
    parser.add_argument("--agree", type=float, default=0.2, metavar="P", help="fraction of identity-agree triplets")
    parser.add_argument("--dissent", type=float, default=0.25, metavar="P", help="fraction with one disagreeing answer")
    parser.add_argument(
        "--test-people",
        nargs="+",
        default=None,
        metavar="NAME",
        help="people held out for test (default: the second half of the people in name order)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of identities, renderings and answers")
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    """Generate the set the parsed flags describe; returns the exit status."""
    torch.set_num_threads(1)  # many tiny ops: threads only contend
    info = generate(
        Path(args.out),
        Path(args.faces),
        args.train,
        args.val,
        args.test,
        args.warps,
        args.conflict,
        args.agree,
        args.dissent,
        args.seed,
        args.test_people,
        progress=not args.quiet,
    )
    print(f"wrote {sum(len(info[k]) for k in ('train', 'val', 'test'))} triplets to {args.out}: {info['description']}")
    print(
        f"train: python -m perface.train --data {args.out} --split {Path(args.out) / 'split.json'} "
        "--init sface --out OUT"
    )
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``python -m perface.train.synthetic``; returns the exit status."""
    parser = make_parser(PROG, (__doc__ or "").split("\n\n")[0])
    add_arguments(parser)
    return run_command(PROG, parser, run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
