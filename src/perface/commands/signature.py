"""``perface signature``: print the metric signature of an installed checkpoint, or check one.

The signature names everything that changes a number: perface version, checkpoint and weights
hash, face detector, alignment, template, input size, precision. Report it beside every number;
``--check`` tells whether this installation reproduces a signature copied from a paper (exit 0)
or not (exit 1, naming each differing field).

Examples:
  perface signature                       # the default checkpoint on aligned crops
  perface signature --align detect        # as used on photos (perface similarity, rank, ...)
  perface signature --check 'perface:0.2.0|model:sface@0f0fbaa2|det:none|align:none|tpl:arcface|size:112|prec:fp32'
"""

from __future__ import annotations

import argparse
from typing import Optional

from ..registry import DEFAULT_MODEL
from . import UsageError, model_type


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        type=model_type,
        metavar="NAME",
        help="registered name, local checkpoint folder or Hub repo id (default: the model named by "
        f"--check, else {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--align",
        default=None,
        metavar="MODE[,MODE]",
        help="alignment of the inputs: none (aligned crops, as PerFace()), detect (photos, as the "
        "perface commands), ffhq, arcface or simceleba; two modes x,y when the two inputs differ "
        "(default: the mode named by --check, else none)",
    )
    parser.add_argument(
        "--check",
        default=None,
        metavar="SIGNATURE",
        help="compare with this signature (e.g. from a paper): exit 1 naming each field that differs",
    )


def _align(text: str) -> tuple[str, ...]:
    from ..alignment import align_modes

    modes = tuple(m.strip() for m in text.split(","))
    bad = [m for m in modes if m not in align_modes()]
    if bad or not 1 <= len(modes) <= 2:
        raise UsageError(
            f"--align {text!r}: give one mode or two separated by a comma, each one of {', '.join(align_modes())}"
        )
    return modes


def run(args: argparse.Namespace) -> int:
    from ..model import PerFace
    from ..signature import Signature, check_signature, signature_of

    expected: Optional[Signature] = None
    if args.check is not None:
        try:
            expected = Signature.parse(args.check)
        except ValueError as exc:
            raise UsageError(f"--check: {exc}") from None
    model = args.model or (expected.model.split("@", 1)[0] if expected else DEFAULT_MODEL)
    align = _align(args.align or (expected.align if expected else "none"))
    metric = PerFace(model)
    print(signature_of(metric, align), flush=True)
    if expected is not None:
        check_signature(expected, metric, align=align)  # SignatureMismatchError -> one error line, exit 1
        print("matches: this installation reproduces numbers made with that signature")
    return 0
