"""What a user installs: the extras named anywhere exist, data files ship, the README's CI blocks exist."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.9/3.10
    tomllib = pytest.importorskip("tomli")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _texts():
    files = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), *sorted((REPO / "src").rglob("*.py"))]
    return {f.relative_to(REPO).as_posix(): f.read_text(encoding="utf-8") for f in files}


def test_every_extra_named_in_docs_and_messages_is_declared():
    """``pip install "perface[plot]"`` in an error message or a page must name a real extra
    (pip only warns about an unknown extra and installs nothing)."""
    declared = set(_pyproject()["project"]["optional-dependencies"])
    named = {}
    for where, text in _texts().items():
        for match in re.finditer(r"""(?:perface|["']\.)\[([a-z0-9_,-]+)\]""", text):
            for extra in match.group(1).split(","):
                named.setdefault(extra, where)
    assert {"plot", "metrics", "test", "docs"} <= set(named), named  # the extras the README tells users about
    assert {e: w for e, w in named.items() if e not in declared} == {}


def test_plot_extra_holds_what_the_plot_helper_imports():
    plot = " ".join(_pyproject()["project"]["optional-dependencies"]["plot"])
    assert "matplotlib" in plot
    helper = (REPO / "src" / "perface" / "_plotting.py").read_text(encoding="utf-8")
    assert "import matplotlib" in helper and "perface[plot]" in helper


def test_package_data_covers_every_data_file_in_the_package():
    """Every non-Python file under src/perface matches a package-data pattern, so the wheel
    (built in CI and installed outside the repository) carries the weights and reference sets."""
    patterns = _pyproject()["tool"]["setuptools"]["package-data"]["perface"]
    root = REPO / "src" / "perface"
    data = [p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert data, "no data files found"
    missing = [str(p) for p in data if not any(p.match(pat) for pat in patterns)]
    assert missing == []


def test_readme_blocks_ci_runs_exist_and_demo_the_console_script():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = {tag: re.search(rf"<!-- {tag} -->\n```bash\n(.+?)\n```", readme, re.S) for tag in ("install", "test")}
    assert all(blocks.values()), "README.md lacks the <!-- install --> / <!-- test --> blocks .ci/run reads"
    assert "perface similarity examples/" in blocks["install"].group(1)
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "mkdocs build --strict" in ci and "twine check" in ci and "python -m build" in ci


def test_citation_bibtex_in_readme_matches_citation_cff():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    bib = re.search(r"```bibtex\n(.+?)```", readme, re.S)
    assert bib, "README.md has no BibTeX block"
    cff = (REPO / "CITATION.cff").read_text(encoding="utf-8")
    for needle in (
        "PerFace: Metric Learning in Perceptual Facial Similarity for Enhanced Face Anonymization",
        "2509.20281",
        "2025",
    ):
        assert needle in bib.group(1) and needle in cff
    for author in ("Kumagai", "Ikehata", "Aizawa"):
        assert author in bib.group(1)
