"""Collect people's "which face looks more alike?" judgments in a browser, then train on them.

  perface annotate make FACES... --out STUDY --n 200 [--mode random|uncertain|design]
  perface annotate serve STUDY                  (open the printed address; Ctrl-C stops)
  perface annotate export STUDY --out judgments.csv [--min-catch-accuracy 0.8]

The exported CSV trains with 'python -m perface.train --data judgments.csv' and evaluates with
'python -m perface.eval triplets --data judgments.csv'. See docs/annotate.md.
"""

from __future__ import annotations

import argparse
import sys

from . import HelpFormatter, UsageError, add_batch_size, add_device, add_model, add_quiet


def _sub(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback of an error (or set PERFACE_DEBUG=1)",
    )
    add_quiet(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..annotate.make import DISPLAYS, MODES

    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    make = _sub(sub, "make", "choose triplets (and catch trials) and write a study folder")
    make.add_argument(
        "faces",
        nargs="*",
        metavar="FACES",
        help="folders of face images, image files, or .txt lists of images (random/uncertain modes)",
    )
    make.add_argument("--out", required=True, help="new study folder")
    make.add_argument(
        "--mode",
        choices=MODES,
        default="random",
        help="random; uncertain: where --model is least sure (candidates' similarities closest); "
        "design: SimCelebA's design over --groups (default: random)",
    )
    make.add_argument("--n", type=int, help="number of triplets (default: all in design mode, else required)")
    make.add_argument(
        "--groups",
        help="design mode: folder of group subfolders (one target each, its face swaps "
        "inside) or CSV with columns group,image[,source]",
    )
    make.add_argument(
        "--catch", type=float, default=0.1, help="catch trials as a fraction of the triplets; 0 for none (default: 0.1)"
    )
    make.add_argument(
        "--display",
        choices=DISPLAYS,
        default="crops",
        help="what annotators see: each photo's face aligned in SimCelebA's framing (photos without "
        "a usable face are left out), or the image files as they are (default: crops)",
    )
    make.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    add_model(make, what="uncertain mode")
    add_batch_size(make, 32, "uncertain mode: faces per forward pass")
    add_device(make, "uncertain mode")

    serve = _sub(sub, "serve", "serve the annotation page of a study and store the answers")
    serve.add_argument("study", help="study folder made by 'perface annotate make'")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; anything but loopback needs --allow-remote (default: 127.0.0.1)",
    )
    serve.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one (default: 8765)")
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host; every request then needs the access token",
    )
    serve.add_argument(
        "--token",
        help="access token (default: $PERFACE_ANNOTATE_TOKEN, else a random one with --allow-remote, else none)",
    )
    serve.add_argument(
        "--answers-per-triplet",
        type=int,
        default=0,
        metavar="K",
        help="give each triplet to at most K annotators; 0: every annotator answers every triplet",
    )

    export = _sub(sub, "export", "write the answers as a triplet CSV with a quality report")
    export.add_argument("study", help="study folder")
    export.add_argument("--out", required=True, help="triplet CSV to write (for perface.train / perface.eval)")
    export.add_argument(
        "--min-catch-accuracy",
        type=float,
        metavar="ACC",
        help="leave out annotators whose catch-trial accuracy is below ACC (0-1)",
    )
    export.add_argument(
        "--exclude", action="append", default=[], metavar="ID", help="leave out an annotator; repeatable"
    )
    export.add_argument(
        "--columns",
        choices=("annotator", "slot"),
        default="annotator",
        help="one answer column per annotator (ans_ID) or per slot (ans1, ans2, ...)",
    )
    export.add_argument(
        "--report",
        action="append",
        default=[],
        metavar="FILE",
        help="also write the quality report: .json, else markdown; repeatable",
    )


def _make(args: argparse.Namespace) -> int:
    from ..annotate.make import make_study

    if args.mode == "design" and args.faces:
        raise UsageError("design mode takes its images from --groups, not from FACES")
    study = make_study(
        args.out,
        args.faces,
        mode=args.mode,
        n=args.n,
        groups=args.groups,
        catch=args.catch,
        seed=args.seed,
        model=args.model if args.mode == "uncertain" else None,
        display=args.display,
        batch_size=args.batch_size,
        progress=not args.quiet,
        device=args.device,
    )
    print(f"{study.root}: {len(study.triplets)} {args.mode} triplets + {len(study.catch)} catch trials")
    if study.signature:
        print(f"signature: {study.signature}")
    print(f"next: perface annotate serve {args.out}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from ..annotate.server import access_token, serve

    try:
        access_token(args.host, args.allow_remote, args.token)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: expected 0-65535")
    if args.answers_per_triplet < 0:
        raise UsageError("--answers-per-triplet must be 0 (everyone answers everything) or more")
    stored = serve(
        args.study,
        host=args.host,
        port=args.port,
        token=args.token,
        allow_remote=args.allow_remote,
        answers_per_triplet=args.answers_per_triplet,
        quiet=args.quiet,
    )
    print(f"stopped; {stored} answers stored in {args.study}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from ..annotate.export import export, write_report

    report = export(
        args.study, args.out, min_catch_accuracy=args.min_catch_accuracy, exclude=args.exclude, columns=args.columns
    )
    write_report(report, args.report)
    sys.stdout.write(report.to_markdown())
    for path in args.report:
        print(f"report: {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    return {"make": _make, "serve": _serve, "export": _export}[args.action](args)
