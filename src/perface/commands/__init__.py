"""How every perface command behaves: one error style, one exit-code table, one help style.

Used by ``perface`` (:mod:`perface.cli`), ``python -m perface.eval``, ``python -m perface.train``
and ``python -m perface.train.synthetic``. A command module defines ``add_arguments(parser)`` and
``run(args) -> int`` and is imported only when it runs.

Exit codes (the same for every command):

====  =====================================================================
0     done
1     failed: some or all inputs failed, or an error stopped the command
2     usage: a bad option, an unknown model name, a malformed argument
130   interrupted (Ctrl-C)
====  =====================================================================

Errors print one line, ``PROG: error: <what> (<cause>); <fix>``, and no traceback; pass
``--debug`` (or set ``PERFACE_DEBUG=1``) for the traceback. Python warnings print one plain line
each, ``PROG: warning: <message>``, each distinct message once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import traceback
import warnings
from typing import Callable, Optional, TextIO, Union

__all__ = [
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "UsageError",
    "HelpFormatter",
    "add_quiet",
    "add_model",
    "add_device",
    "device_type",
    "model_type",
    "add_workers",
    "add_batch_size",
    "input_failures",
    "make_parser",
    "dispatch",
    "run_command",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

Table = dict[str, tuple[str, str]]


class UsageError(ValueError):
    """A command-line usage mistake found after parsing (exit code 2)."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help without markup: reST double backticks become plain quotes, each default is shown
    once (appended only when the help text does not already state it), descriptions keep their
    line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = _plain(action.help or "")
        default = action.default
        hidden = default is None or default is False or default is argparse.SUPPRESS or default == []
        if "default" not in text.lower() and not hidden and action.option_strings and action.nargs != 0:
            text += " (default: %(default)s)"
        return text

    def _format_text(self, text: str) -> str:
        return super()._format_text(_plain(text))


def _plain(text: str) -> str:
    text = re.sub(r":(?:py:)?[a-z]+:`~?([^`]+)`", r"'\1'", text)  # reST roles (:func:`x`, :mod:`~a.b`)
    return re.sub(r"``([^`]+)``", r"'\1'", text)


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with perface's help style and the ``--debug`` flag."""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (or set PERFACE_DEBUG=1)"
    )
    return parser


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet``: no progress bars (and no other chatter) — the same flag on every command."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def model_type(text: str) -> str:
    """argparse ``type=`` of a model option: ``text`` if it is a registered name, an existing path or
    a Hub repo id ``org/repo[@revision]``; else an argparse error suggesting close registered names
    (exit 2, before any work)."""
    from pathlib import Path

    from ..errors import UnknownModelError
    from ..pretrained import parse_hub_id
    from ..registry import MODELS, get_spec

    if text in MODELS or Path(text).expanduser().exists() or parse_hub_id(text) is not None:
        return text
    try:
        get_spec(text)
    except UnknownModelError as exc:
        raise argparse.ArgumentTypeError(_describe_error(exc)) from None
    return text


def add_model(parser: argparse.ArgumentParser, *, repeat: bool = False, what: str = "") -> None:
    """``--model NAME``: a registered checkpoint name, a local checkpoint folder or a Hub repo id;
    ``repeat=True`` collects several into ``args.models`` (default: none given)."""
    from ..registry import DEFAULT_MODEL

    text = (what + ": " if what else "") + "registered name (see 'perface models'), checkpoint folder or Hub repo id"
    if repeat:
        parser.add_argument(
            "--model",
            action="append",
            dest="models",
            type=model_type,
            metavar="NAME",
            help=f"{text}; repeat for several (default: {DEFAULT_MODEL})",
        )
    else:
        parser.add_argument("--model", default=DEFAULT_MODEL, type=model_type, metavar="NAME", help=text)


def device_type(text: str) -> str:
    """argparse ``type=`` of a device option: ``text`` if :func:`perface.devices.resolve_device`
    accepts it, else an argparse error naming the accepted forms (exit 2)."""
    from ..devices import resolve_device

    try:
        resolve_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_device(parser: argparse.ArgumentParser, what: str = "") -> None:
    """``--device``: where the network runs; checked while parsing (a bad device is exit 2)."""
    parser.add_argument(
        "--device",
        default="auto",
        type=device_type,
        metavar="DEVICE",
        help=(what + ": " if what else "")
        + "where the network runs: auto (cuda:$LOCAL_RANK if CUDA is available, else cpu), cpu, cuda, cuda:1 ...",
    )


def add_workers(parser: argparse.ArgumentParser) -> None:
    """``--workers N``: processes decoding (and detecting faces in) the images."""
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="worker processes decoding the images (and finding their faces); 0 = in this process",
    )


def add_batch_size(parser: argparse.ArgumentParser, default: int, unit: str = "images per forward pass") -> None:
    """``--batch-size N``: ``unit`` names what is counted (faces, triplets ...)."""
    parser.add_argument("--batch-size", type=int, default=default, metavar="N", help=unit)


def input_failures(prog: str, failed: int, total: Optional[int], what: str, where: str = "listed above") -> int:
    """The closing line of a command whose inputs partly failed: ``failed`` of ``total`` ``what``
    (e.g. "pool files"; ``total`` None: not counted) gave no result (reasons ``where``). Returns
    the exit status: 1 when any failed, else 0. The outputs hold every input that worked."""
    if not failed:
        return EXIT_OK
    count = f"{failed} of {total}" if total is not None else str(failed)
    print(
        f"{prog}: {count} {what} failed (reasons {where}); the outputs hold the rest; exit status 1",
        file=sys.stderr,
        flush=True,
    )
    return EXIT_FAILED


def _warning_printer(prog: str, stream: TextIO) -> Callable[..., None]:
    seen: set[str] = set()

    def show(
        message: Union[Warning, str],
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Optional[TextIO] = None,
        line: Optional[str] = None,
    ) -> None:
        text = " ".join(str(message).split())
        if text not in seen:
            seen.add(text)
            print(f"{prog}: warning: {text}", file=stream, flush=True)

    return show


def _describe_error(exc: BaseException) -> str:
    """One line for an exception: perface's own messages already name input, cause and fix."""
    from ..errors import PerFaceError

    if isinstance(exc, (PerFaceError, UsageError)):
        return " ".join(str(exc).split())
    if isinstance(exc, (ModuleNotFoundError, ImportError)):
        return " ".join(str(exc).split())
    if isinstance(exc, PermissionError):
        where = exc.filename or "a file"
        return f"{where}: permission denied; choose a folder you can write to, or fix its permissions"
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"{exc.filename}: no such file or folder; check the path"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


def _is_usage(exc: BaseException) -> bool:
    from ..errors import UnknownModelError

    return isinstance(exc, (UsageError, UnknownModelError))


def run_command(
    prog: str,
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], Optional[int]],
    argv: list[str],
    stream: Optional[TextIO] = None,
) -> int:
    """Parse ``argv`` with ``parser`` and call ``run``; map the outcome to perface's exit codes.

    Known failures (perface's errors, ``OSError``, ``ValueError``, missing optional extras) print
    one line to ``stream`` (default stderr) and return 1 (2 for usage errors such as an unknown
    model); ``KeyboardInterrupt`` prints one line and returns 130. Anything else is a bug: one
    line asking for a report, exit 1. ``--debug``/``PERFACE_DEBUG=1`` adds the traceback.
    """
    stream = sys.stderr if stream is None else stream
    if not any(a.dest == "debug" for a in parser._actions):
        parser.add_argument(
            "--debug", action="store_true", help="show the full traceback of an error (or set PERFACE_DEBUG=1)"
        )
    args = parser.parse_args(argv)  # argparse prints usage and exits 2 on bad options
    debug = bool(getattr(args, "debug", False)) or os.environ.get("PERFACE_DEBUG", "") not in ("", "0")
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _warning_printer(prog, stream)
        try:
            return int(run(args) or 0)
        except KeyboardInterrupt:
            if debug:
                traceback.print_exc(file=stream)
            print(f"{prog}: interrupted", file=stream, flush=True)
            return EXIT_INTERRUPTED
        except Exception as exc:
            from ..errors import PerFaceError

            if debug:
                traceback.print_exc(file=stream)
            known = isinstance(exc, (PerFaceError, OSError, ValueError, TypeError, ImportError, UsageError))
            if known:
                print(f"{prog}: error: {_describe_error(exc)}", file=stream, flush=True)
            else:
                print(
                    f"{prog}: internal error: {type(exc).__name__}: {_describe_error(exc)}; rerun with --debug "
                    "and report the traceback",
                    file=stream,
                    flush=True,
                )
            return EXIT_USAGE if _is_usage(exc) else EXIT_FAILED


def dispatch(prog: str, description: str, table: Table, argv: list[str], version: Optional[str] = None) -> int:
    """Run the subcommand named by ``argv[0]`` (a key of ``table``: name -> (module, one-line
    help)) with the rest of ``argv``; returns the exit status."""
    if not argv or argv[0] not in table:
        parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
        if version:
            parser.add_argument("--version", action="version", version=version)
        sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        for name, (_, help_text) in table.items():
            sub.add_parser(name, help=help_text.replace("%", "%%"))  # argparse %-formats help
        args = parser.parse_args(argv)  # exits on -h/--version/unknown commands
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
    module_name, help_text = table[argv[0]]
    try:
        module = importlib.import_module(module_name)
    except KeyboardInterrupt:  # Ctrl-C while the command's modules load
        print(f"{prog} {argv[0]}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    parser = make_parser(f"{prog} {argv[0]}", (module.__doc__ or help_text).strip())
    module.add_arguments(parser)
    return run_command(f"{prog} {argv[0]}", parser, module.run, argv[1:])
