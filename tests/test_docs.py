"""Every ```python block in README.md and docs/*.md runs, in order, one namespace per file.

Blocks run in a temporary working directory holding a copy of the repo's ``examples/`` folder,
so docs refer to photos as ``examples/obama.jpg`` (as from the repo root); the environment
variable ``PERFACE_EXAMPLES`` points at the same folder. Blocks fenced ```python no-run are
shown to readers but not run (slow jobs, GPUs, network, placeholders).
"""

from __future__ import annotations

import os
import re
import shutil
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
FENCE = re.compile(r"^([ \t]*)```([^\n`]*)\n(.*?)^\1```[ \t]*$", re.S | re.M)  # also indented (in lists)


def python_blocks(text: str):
    """``(line number, code)`` of each runnable ```python block of a markdown text."""
    for m in FENCE.finditer(text):
        info = m.group(2).split()
        if info[:1] == ["python"] and "no-run" not in info[1:]:
            yield text.count("\n", 0, m.start()) + 1, textwrap.dedent(m.group(3))


def test_fence_parser_skips_no_run_and_other_languages():
    text = (
        "x\n```python\na = 1\n```\n```python no-run\nraise SystemExit\n```\n```bash\nls\n```\n"
        "```python\nb = 2\n```\n1. item\n\n   ```python\n   c = 3\n   ```\n"
    )
    assert list(python_blocks(text)) == [(2, "a = 1\n"), (11, "b = 2\n"), (16, "c = 3\n")]


def _runnable(doc: Path) -> bool:
    return doc.is_file() and any(python_blocks(doc.read_text(encoding="utf-8")))


def test_every_block_that_prints_also_asserts():
    """A doc example shows readers what it prints; the test must check what it shows. A block
    that prints without an ``assert`` is either given one or fenced ``python no-run`` (prose)."""
    silent = [
        f"{doc.relative_to(REPO)}:{line}"
        for doc in DOC_FILES
        if doc.is_file()
        for line, code in python_blocks(doc.read_text(encoding="utf-8"))
        if re.search(r"\bprint\(", code) and not re.search(r"^\s*assert\b", code, re.M)
    ]
    assert silent == [], f"doc blocks that print but assert nothing: {silent}"


# Pages without a runnable block (prose, shell commands, no-run blocks) are no test case at all,
# rather than a case that is always skipped.
@pytest.mark.slow  # photos through the whole pipeline, page after page
@pytest.mark.parametrize("doc", [p for p in DOC_FILES if _runnable(p)], ids=lambda p: p.name)
def test_doc_examples_run(doc, tmp_path, monkeypatch):
    blocks = list(python_blocks(doc.read_text(encoding="utf-8")))
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PERFACE_EXAMPLES", str(tmp_path / "examples"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": f"doc_{doc.stem}"}
    for line, code in blocks:
        try:
            exec(compile(code, f"{doc.name}:{line}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(
                f"{doc.relative_to(REPO)} block at line {line} failed: {type(exc).__name__}: {exc}"
            ) from exc
    assert os.getcwd() == str(tmp_path)
