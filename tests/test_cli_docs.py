"""docs/cli.md shows what the commands print today (tools/cli_docs.py --check reruns them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "data" / "faces"


def test_page_blocks_are_commands_with_their_exit_status():
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import cli_docs
    finally:
        sys.path.pop(0)
    page = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    blocks = list(cli_docs.BLOCK.finditer(page))
    assert len(blocks) >= 10
    for m in blocks:
        body = m.group("body")
        assert body.startswith(f"```console\n$ {m.group('cmd')}\n") and "[exit status " in body, body[:200]
    for name in cli_docs.PICTURES.values():
        assert f"images/{name}" in page and (REPO / "docs" / "images" / name).is_file()
    assert cli_docs.same("0.7547 x", "0.7551 x") and not cli_docs.same("0.7547 x", "0.7600 x")
    assert not cli_docs.same("0.7547 x", "0.7547 y")


@pytest.mark.slow
@pytest.mark.skipif(not FACES.is_dir(), reason=f"test photos not found at {FACES}")
def test_page_matches_fresh_runs():
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "cli_docs.py"), "--check"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
