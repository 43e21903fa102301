"""The hand-written parts of the API reference (docs/api/*.md) agree with the code."""

from __future__ import annotations

import builtins
import re
from pathlib import Path

import perface

REPO = Path(__file__).resolve().parents[1]
API = REPO / "docs" / "api"


def _objects(page: Path):
    return re.findall(r"^::: ([\w.]+)", page.read_text(encoding="utf-8"), re.M)


def test_errors_table_states_each_class_and_its_base():
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \|", (API / "errors.md").read_text(encoding="utf-8"), re.M)
    assert len(rows) == len(perface.errors.__all__) - 1  # every error but the PerFaceError base
    for name, base in rows:
        cls = getattr(perface, name)
        parent = getattr(perface, base, None) or getattr(builtins, base)
        assert issubclass(cls, perface.PerFaceError) and issubclass(cls, parent), (name, base)
    assert not issubclass(perface.UnknownModelError, perface.WeightsUnavailableError)


def test_every_public_name_has_a_reference_entry():
    """Each name of ``perface.__all__`` is rendered on some API page (mkdocs --strict in CI then
    checks that each entry resolves)."""
    documented = {o for page in API.glob("*.md") for o in _objects(page)}
    missing = [n for n in perface.__all__ if n != "__version__" and f"perface.{n}" not in documented]
    assert missing == []


def test_every_api_page_is_in_the_site_navigation():
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(p.name for p in API.glob("*.md"))
    assert [p for p in pages if f"api/{p}" not in nav] == []
