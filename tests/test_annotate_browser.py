"""The whole loop in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright):
two annotators answer at the same time, the server is killed with SIGKILL midway and
restarted, and the export holds every answer exactly once; catch trials are scored; the
exported CSV trains (``python -m perface.train``) and evaluates (``python -m perface.eval``).

Set ``PERFACE_SCREENSHOTS=DIR`` to save the page's screenshots (docs/images/ is made this way).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

from test_annotate_server import ENV, ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a real browser and server

CHROMIUM = Path(os.environ.get("PERFACE_CHROMIUM", "/usr/bin/chromium"))
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
N_TRIPLETS = 20
KILL_AFTER = 8  # answers each before the server is killed
SHOTS = os.environ.get("PERFACE_SCREENSHOTS")


def _require_browser() -> None:
    pytest.importorskip("playwright")
    if not CHROMIUM.is_file():
        message = f"{CHROMIUM} not found: apt-get install chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Annotator:
    """A scripted person: looks at the three images, answers by key or click.

    Catch trials are recognised by the candidate image being the reference's bytes. ``alice``
    answers them right; ``bob`` gets the second one wrong. On triplets both pick the candidate
    whose image hash is smaller, except that bob flips every fifth one (so D2 < all).
    """

    def __init__(self, name: str, page, base: str, use_keys: bool) -> None:
        self.name, self.page, self.base, self.use_keys = name, page, base, use_keys
        self.answers: dict[tuple[str, str, str], str] = {}
        self.catch_seen = 0
        self.real_seen = 0
        self.latencies: list[float] = []

    async def images(self) -> tuple[str, str, str]:
        hashes = []
        for slot in ("reference", "a", "b"):
            src = await self.page.get_attribute(f"#img-{slot}", "src")
            response = await self.page.request.get(self.base + src.lstrip("/"))
            assert response.ok, (src, response.status)
            hashes.append(_sha(await response.body()))
        return tuple(hashes)

    def choose(self, ref: str, a: str, b: str) -> str:
        if ref in (a, b):  # catch trial
            self.catch_seen += 1
            right = "a" if a == ref else "b"
            wrong = self.name == "bob" and self.catch_seen == 2
            return ("b" if right == "a" else "a") if wrong else right
        self.real_seen += 1
        pick = "a" if a < b else "b"
        if self.name == "bob" and self.real_seen % 5 == 0:
            pick = "b" if pick == "a" else "a"
        return pick

    async def state(self) -> str:
        await self.page.wait_for_selector("body[data-state=ready], body[data-state=done]", timeout=120_000)
        return await self.page.evaluate("document.body.dataset.state")

    async def look(self) -> Optional[str]:
        """Look at the question on screen and decide; None when the annotator is done."""
        if await self.state() == "done":
            return None
        key = await self.images()
        assert key not in self.answers, "the same question was shown twice"
        self.answers[key] = self.choose(*key)
        return self.answers[key]

    async def press(self, choice: str, wait: bool = True) -> None:
        """Answer by key (alice: A / right arrow) or click (bob); wait for the next question."""
        done = int(await self.page.evaluate("document.body.dataset.done"))
        started = time.perf_counter()
        if self.use_keys:
            await self.page.keyboard.press("A" if choice == "a" else "ArrowRight")
        else:
            await self.page.click(f"#choose-{choice}")
        if wait:  # (selectors, not wait_for_function: the page's CSP forbids eval, as it should)
            await self.page.wait_for_selector(
                f'body[data-done="{done + 1}"]:is([data-state=ready], [data-state=done])', timeout=120_000
            )
            self.latencies.append(time.perf_counter() - started)

    async def answer(self, count: int) -> None:
        for _ in range(count):
            choice = await self.look()
            if choice is None:
                return
            await self.press(choice)


async def _shot(page, name: str, whole: bool = True) -> None:
    """Save a screenshot to $PERFACE_SCREENSHOTS: the viewport, or (``whole=False``) the page's content."""
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        target = page if whole else page.locator("main")
        await target.screenshot(path=str(Path(SHOTS) / name))


async def _scenario(study: Path) -> dict:
    from playwright.async_api import async_playwright

    server = ServerProcess(study).start()
    restarted = ServerProcess(study, port=server.port)
    base = server.url
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)  # fresh profile each launch
            pages = []
            for _ in range(2):
                context = await browser.new_context(viewport={"width": 760, "height": 760})
                pages.append(await context.new_page())
            alice = Annotator("alice", pages[0], base, use_keys=True)
            bob = Annotator("bob", pages[1], base, use_keys=False)
            # alice follows a link with her id; bob types his into the form
            await alice.page.goto(base + "?annotator=alice")
            await bob.page.goto(base)
            await bob.page.wait_for_selector("body[data-state=login]")
            await _shot(bob.page, "annotate-login.png", whole=False)
            await bob.page.fill("#annotator", "bob")
            await bob.page.click("#start")
            await alice.state()
            await _shot(alice.page, "annotate-question.png")
            await asyncio.gather(alice.answer(KILL_AFTER), bob.answer(KILL_AFTER))  # at the same time
            choices = await asyncio.gather(alice.look(), bob.look())
            server.kill()  # SIGKILL: no shutdown code runs
            # each answers once more while the server is down: the pages keep the answer and retry
            await asyncio.gather(alice.press(choices[0], wait=False), bob.press(choices[1], wait=False))
            for person in (alice, bob):
                await person.page.wait_for_selector("body[data-state=offline]", timeout=60_000)
            await _shot(alice.page, "annotate-offline.png")
            await asyncio.to_thread(restarted.start)
            for person in (alice, bob):  # the retried answers go through, the next question shows
                await person.page.wait_for_selector(
                    f'body[data-done="{KILL_AFTER + 1}"][data-state=ready]', timeout=120_000
                )
            await alice.page.reload()  # a reloaded page resumes where alice left off
            await alice.state()
            resumed = await alice.page.evaluate("document.body.dataset.done")
            await asyncio.gather(alice.answer(100), bob.answer(100))
            await _shot(bob.page, "annotate-done.png", whole=False)
            done_text = await bob.page.inner_text("#done")
            await browser.close()
        restarted.stop()
    finally:
        server.kill()
        restarted.kill()
    return {"alice": alice, "bob": bob, "resumed": resumed, "done_text": done_text}


@pytest.fixture(scope="module")
def session(tmp_path_factory, faces_dir):
    """A study of 20 triplets + 2 catch trials over 7 distinct real photos, answered in the browser."""
    _require_browser()
    root = tmp_path_factory.mktemp("annotate-browser")
    photos = [p for p in sorted(faces_dir.iterdir()) if p.suffix in (".jpg", ".png") and p.name != "obama2_rgba.png"]
    listing = root / "faces.txt"  # obama2_rgba.png has obama2.jpg's pixels: leave it out
    listing.write_text("".join(f"{p}\n" for p in photos))
    study = root / "study"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "perface",
            "annotate",
            "make",
            str(listing),
            "--out",
            str(study),
            "--n",
            str(N_TRIPLETS),
            "--catch",
            "0.1",
            "-q",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert made.returncode == 0, made.stderr
    assert f"{N_TRIPLETS} random triplets + 2 catch trials" in made.stdout
    started = time.perf_counter()
    result = asyncio.run(_scenario(study))
    result["seconds"] = time.perf_counter() - started
    result["study"] = study
    result["root"] = root
    return result


def _key_of(study_dir: Path) -> dict[tuple[str, str, str], str]:
    """(sha of the shown reference, a, b) -> item id, read from the study folder itself."""
    from perface.annotate.study import load_study

    study = load_study(study_dir)
    return {
        tuple(_sha(study.shown(t, s).read_bytes()) for s in ("reference", "a", "b")): t.id for t in study.items.values()
    }


def test_two_annotators_through_a_kill_9_every_answer_once(session):
    alice, bob = session["alice"], session["bob"]
    total = N_TRIPLETS + 2
    assert len(alice.answers) == len(bob.answers) == total
    assert int(session["resumed"]) > KILL_AFTER  # the reloaded page continued, not restarted
    assert f"{total} answers" in session["done_text"]
    assert alice.catch_seen == bob.catch_seen == 2
    keys = _key_of(session["study"])
    expected = {(who.name, keys[k]): v for who in (alice, bob) for k, v in who.answers.items()}

    import sqlite3

    with sqlite3.connect(session["study"] / "answers.sqlite") as db:
        rows = db.execute("SELECT annotator, item, answer FROM answers").fetchall()
    assert len(rows) == 2 * total  # nothing lost, nothing twice
    assert {(a, i): v for a, i, v in rows} == expected
    print(
        f"browser session: {session['seconds']:.1f} s; answer -> next question on screen, median "
        f"{1000 * statistics.median(alice.latencies + bob.latencies):.0f} ms over "
        f"{len(alice.latencies + bob.latencies)} answers (2 annotators at once, shared 2-core machine)"
    )


def test_export_scores_catch_trials_and_holds_every_answer(session, tmp_path):
    import krippendorff
    import numpy as np

    alice, bob = session["alice"], session["bob"]
    out = tmp_path / "judgments.csv"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "perface",
            "annotate",
            "export",
            str(session["study"]),
            "--out",
            str(out),
            "--report",
            str(tmp_path / "report.json"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    by = {a["annotator"]: a for a in report["annotators"]}
    assert (by["alice"]["catch_correct"], by["alice"]["catch_answered"]) == (2, 2)
    assert (by["bob"]["catch_correct"], by["bob"]["catch_answered"]) == (1, 2)
    keys = _key_of(session["study"])
    real = {who.name: {keys[k]: v for k, v in who.answers.items() if k[0] not in (k[1], k[2])} for who in (alice, bob)}
    rows = {r["id"]: r for r in csv.DictReader(open(out))}
    assert len(rows) == N_TRIPLETS
    assert {i: r["ans_alice"] for i, r in rows.items()} == real["alice"]
    assert {i: r["ans_bob"] for i, r in rows.items()} == real["bob"]
    agree = sum(real["alice"][i] == real["bob"][i] for i in rows)
    assert report["d2"] == agree == N_TRIPLETS - 4  # bob flipped every fifth triplet
    ids = sorted(rows)
    data = np.array([[0 if real[w][i] == "a" else 1 for i in ids] for w in ("alice", "bob")], dtype=float)
    assert report["alpha"] == pytest.approx(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))
    assert "Krippendorff's alpha" in result.stdout

    kept = subprocess.run(
        [
            sys.executable,
            "-m",
            "perface",
            "annotate",
            "export",
            str(session["study"]),
            "--out",
            str(tmp_path / "kept.csv"),
            "--min-catch-accuracy",
            "0.75",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert kept.returncode == 0, kept.stderr
    header = next(csv.reader(open(tmp_path / "kept.csv")))
    assert "ans_alice" in header and "ans_bob" not in header
    assert "no (catch accuracy 0.50 < 0.75)" in kept.stdout


@pytest.mark.slow
def test_exported_csv_trains_and_evaluates(session, tmp_path):
    out = tmp_path / "judgments.csv"
    subprocess.run(
        [sys.executable, "-m", "perface", "annotate", "export", str(session["study"]), "--out", str(out)],
        check=True,
        capture_output=True,
        env=ENV,
        timeout=300,
    )
    run = tmp_path / "run"
    train = subprocess.run(
        [
            sys.executable,
            "-m",
            "perface.train",
            "--data",
            str(out),
            "--out",
            str(run),
            "--init",
            "sface",
            "--epochs",
            "1",
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--workers",
            "0",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=900,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    assert (run / "model.safetensors").is_file() and (run / "README.md").is_file()
    evaluated = subprocess.run(
        [
            sys.executable,
            "-m",
            "perface.eval",
            "triplets",
            "--data",
            str(out),
            "--model",
            "sface",
            "--model",
            str(run),
            "--format",
            "json",
            "--quiet",
            "--bootstrap",
            "200",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=900,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    rows = json.loads(evaluated.stdout)
    assert [r["model"] for r in rows] == ["sface", str(run)]
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["n"] > 0 for r in rows), rows
