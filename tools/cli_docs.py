"""Regenerate (or check) the command outputs and pictures shown in docs/cli.md.

Every block of docs/cli.md between ``<!-- cli: COMMAND -->`` and ``<!-- /cli -->`` shows what
COMMAND prints (stdout and stderr together, as a terminal shows them) and its exit status. This
script runs each command in a scratch folder holding ``examples/`` (the repo's three photos),
``faces/`` (the test photos of ../shared/data/faces), ``blank.png`` (a flat grey image: no face)
and ``anonymized/`` (blurred copies of ``faces/``), then writes the outputs into the page and
the PNGs the commands made into docs/images/cli-*.png.

    python tools/cli_docs.py            # rewrite docs/cli.md and docs/images/cli-*.png
    python tools/cli_docs.py --check    # exit 1 when the page differs from fresh runs

``--check`` compares numbers within 0.002 (float results differ in the last bits between CPUs)
and everything else exactly; tests/test_cli_docs.py runs it.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "cli.md"
IMAGES = REPO / "docs" / "images"
FACES = REPO.parent / "shared" / "data" / "faces"
BLOCK = re.compile(r"(<!-- cli: (?P<cmd>.+?) -->\n)(?P<body>.*?)(<!-- /cli -->)", re.S)
NUMBER = re.compile(r"-?\d+\.\d+")
TOLERANCE = 0.002
# PNGs a command writes -> where the page shows them
PICTURES = {
    "matrix.png": "cli-matrix.png",
    "ranked/contact_sheet.png": "cli-rank-contact-sheet.png",
    "ranked/histogram.png": "cli-rank-histogram.png",
    "anonymization_eval/similarity_hist.png": "cli-anonymization-histogram.png",
}


def scratch(root: Path) -> None:
    """The inputs the page's commands use."""
    from PIL import Image, ImageFilter

    shutil.copytree(REPO / "examples", root / "examples")
    (root / "faces").mkdir()
    (root / "anonymized").mkdir()
    for photo in sorted(FACES.iterdir()):
        if photo.suffix.lower() in (".jpg", ".png"):
            shutil.copy(photo, root / "faces" / photo.name)
            with Image.open(photo) as im:
                im.convert("RGB").filter(ImageFilter.GaussianBlur(radius=max(im.size) / 80)).save(
                    root / "anonymized" / photo.with_suffix(".png").name
                )
    Image.new("RGB", (200, 200), (128, 128, 128)).save(root / "blank.png")
    (root / "triplets.csv").write_text(
        "id,reference,a,b,answer\n"
        "t1,faces/obama.jpg,faces/obama2.jpg,faces/biden.jpg,a\n"
        "t2,faces/obama3.jpg,faces/grace_hopper.jpg,faces/obama_partial_face.jpg,b\n"
        "t3,faces/biden.jpg,faces/astronaut.png,blank.png,a\n"
    )


def run(command: str, root: Path) -> str:
    """What ``command`` prints in ``root``, followed by its exit status."""
    argv = shlex.split(command)
    if argv[0] == "perface":
        argv = [sys.executable, "-m", "perface", *argv[1:]]
    elif argv[:2] == ["python", "-m"]:
        argv = [sys.executable, *argv[1:]]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "PERFACE_CACHE": str(root / "cache"),
        "COLUMNS": "100",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
    env.pop("PERFACE_DEBUG", None)
    proc = subprocess.run(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    text = proc.stdout.replace(str(root) + os.sep, "").replace(str(root), ".")
    text = text.replace(str(REPO / "src") + os.sep, ".../site-packages/")  # where perface is installed
    return f"$ {command}\n{text.rstrip()}\n[exit status {proc.returncode}]\n"


def render(page: str, root: Path) -> str:
    def block(m: re.Match) -> str:
        return f"{m.group(1)}```console\n{run(m.group('cmd'), root)}```\n{m.group(4)}"

    return BLOCK.sub(block, page)


def same(a: str, b: str) -> bool:
    """``a`` and ``b`` equal but for numbers within :data:`TOLERANCE`."""
    if NUMBER.sub("#", a) != NUMBER.sub("#", b):
        return False
    return all(abs(float(x) - float(y)) <= TOLERANCE for x, y in zip(NUMBER.findall(a), NUMBER.findall(b)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with fresh runs instead of rewriting")
    args = parser.parse_args(argv)
    page = PAGE.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scratch(root)
        fresh = render(page, root)
        if args.check:
            old = [m.group("body") for m in BLOCK.finditer(page)]
            new = [m.group("body") for m in BLOCK.finditer(fresh)]
            bad = [b for a, b in zip(old, new) if not same(a, b)]
            for body in bad:
                print(f"docs/cli.md is out of date; a fresh run prints:\n{body}", file=sys.stderr)
            missing = [name for name in PICTURES.values() if not (IMAGES / name).is_file()]
            if missing:
                print(f"missing pictures: {', '.join(missing)}", file=sys.stderr)
            if bad or missing:
                print("regenerate with: python tools/cli_docs.py", file=sys.stderr)
                return 1
            return 0
        PAGE.write_text(fresh, encoding="utf-8")
        for made, shown in PICTURES.items():
            shutil.copy(root / made, IMAGES / shown)
    print(f"wrote {PAGE.relative_to(REPO)} and {len(PICTURES)} pictures in {IMAGES.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
