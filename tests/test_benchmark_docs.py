"""docs/benchmarks.md: measured numbers are rendered from run_all's JSON (tools/render_benchmarks.py)."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "benchmarks.md"
DATA = REPO / "docs" / "benchmarks" / "results.json"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("render_benchmarks", REPO / "tools" / "render_benchmarks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outside_markers(text: str) -> str:
    text = re.sub(r"<!-- bench:([\w-]+) -->.*?<!-- /bench:\1 -->", "<block>", text, flags=re.S)
    return re.sub(r"(<!-- value [^>]+-->).*?<!-- /value -->", r"\1", text, flags=re.S)


def test_page_has_a_block_for_the_machine_and_every_benchmark_run(tool):
    page, data = PAGE.read_text(encoding="utf-8"), json.loads(DATA.read_text(encoding="utf-8"))
    blocks = tool.markers(page)
    assert blocks[0] == "machine" and sorted(blocks[1:]) == sorted(data["results"])
    assert all((REPO / "benchmarks" / f"bench_{b}.py").is_file() for b in blocks[1:])
    assert len(re.findall(r"<!-- value ", page)) >= 5  # the numbers quoted in the prose


def test_committed_page_is_what_its_json_renders(tool):
    """Nobody typed a number inside a marker: the page equals its rendering."""
    page = PAGE.read_text(encoding="utf-8")
    assert tool.render(page, json.loads(DATA.read_text(encoding="utf-8"))) == page
    assert tool.main(["--check"]) == 0


def test_rendering_is_deterministic_and_only_touches_the_markers(tool):
    page, data = PAGE.read_text(encoding="utf-8"), json.loads(DATA.read_text(encoding="utf-8"))
    changed = copy.deepcopy(data)
    changed["results"]["embed"]["rows"][0]["b32_faces_s"] = 987.6
    changed["results"]["train"]["rows"][0]["triplets_per_s"] = 12.25
    changed["run_at"] = "2030-01-02 03:04 UTC"
    once = tool.render(page, changed)
    assert once == tool.render(page, changed) == tool.render(once, changed)
    assert _outside_markers(once) == _outside_markers(page)
    assert "| sface | 987.6 |" in once  # the table
    assert "embeds at <!-- value embed rows.0.b32_faces_s .0f -->988<!-- /value --> faces/s" in once  # the prose
    assert "-->12.2<!-- /value --> triplets/s for SFace" in once
    assert "Mode: full; run 2030-01-02 03:04 UTC." in once


def test_missing_benchmark_or_path_is_an_error_naming_it(tool):
    page, data = PAGE.read_text(encoding="utf-8"), json.loads(DATA.read_text(encoding="utf-8"))
    del data["results"]["rank"]
    with pytest.raises(KeyError, match="benchmark 'rank' is not in the results"):
        tool.render(page, data)
    with pytest.raises(KeyError, match=r"rows\.9\.x: no '9' there"):
        tool.lookup({"rows": [{"x": 1}]}, "rows.9.x")
