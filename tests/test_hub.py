"""The real download path (huggingface_hub's hf_hub_download) against a stand-in Hub on 127.0.0.1.

Covers first download (.pth -> safetensors conversion), cached reuse without requests,
HF_HUB_OFFLINE, pinned revisions, checksum mismatch, 404s, bounded timeouts, trust on first use,
importing a local copy, `perface verify`, and concurrent first use from two processes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save

from fake_hub import FakeHub, HubCalls, point_hf_at, subprocess_env
from perface import ChecksumMismatchError, WeightsNotCachedError, WeightsNotFoundError, registry
from perface.hub import (
    hub_cache_dir,
    import_weights,
    perface_cache_dir,
    resolve_weights,
    verify_source,
    weights_status,
)
from perface.registry import WeightsSource

REPO = "acme/tiny"
PTH = "models/tiny.pth"


def tiny_state(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=g),
        "bn.running_mean": torch.randn(4, generator=g),
        "bn.num_batches_tracked": torch.tensor(seed),
    }


def pth_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    torch.save(tiny_state(seed), buf)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_hub():
    hub = FakeHub().start()
    yield hub
    hub.stop()


@pytest.fixture
def hf_env(fake_hub, tmp_path, monkeypatch):
    """Point the already-imported huggingface_hub at the stand-in Hub and an empty HF_HOME."""
    return point_hf_at(fake_hub.endpoint, tmp_path / "hf_home", monkeypatch)


@pytest.fixture
def tiny(fake_hub):
    """A pinned .pth source on the stand-in Hub: (source, file bytes)."""
    data = pth_bytes(1)
    commit = fake_hub.add_commit(REPO, {PTH: data})
    source = WeightsSource(
        kind="hub", repo_id=REPO, filename=PTH, revision=commit, sha256=sha(data), size=len(data), format="pth"
    )
    return source, data


def safetensors_source(hub: FakeHub, seed: int = 2, pin: bool = True) -> WeightsSource:
    data = save(tiny_state(seed))
    commit = hub.add_commit(REPO, {"model.safetensors": data})
    return WeightsSource(
        kind="hub",
        repo_id=REPO,
        filename="model.safetensors",
        revision=commit,
        sha256=sha(data) if pin else "",
        size=len(data),
    )


def test_first_download_converts_pth_once(hf_env, fake_hub, tiny):
    source, data = tiny
    assert weights_status(source) == "downloadable"
    path = resolve_weights(source, "tiny")
    assert path.suffix == ".safetensors" and perface_cache_dir() in path.parents
    loaded = load_file(str(path))
    for key, value in tiny_state(1).items():
        assert torch.equal(loaded[key], value.reshape(loaded[key].shape)), key
    blobs = list((hub_cache_dir() / "models--acme--tiny" / "blobs").iterdir())
    assert [b.name for b in blobs] == [sha(data)]  # hf cache layout: the blob is named by its sha256
    assert fake_hub.count("GET") == 1
    assert weights_status(source) == "cached"


def test_cached_reuse_makes_no_requests(hf_env, fake_hub, tiny):
    pth_source, _ = tiny
    st_source = safetensors_source(fake_hub)
    first = [resolve_weights(pth_source, "tiny"), resolve_weights(st_source, "tiny-st")]
    fake_hub.reset_counts()
    again = [resolve_weights(pth_source, "tiny"), resolve_weights(st_source, "tiny-st")]
    assert again == first
    assert fake_hub.count() == 0


def test_offline_mode(hf_env, fake_hub, tiny, monkeypatch):
    from huggingface_hub import constants

    source, _ = tiny
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsNotCachedError) as info:
        resolve_weights(source, "tiny")
    message = str(info.value)
    for needle in ("'tiny'", "HF_HUB_OFFLINE", "perface download tiny", str(hub_cache_dir()), "--from-file"):
        assert needle in message, needle
    assert fake_hub.count() == 0
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    path = resolve_weights(source, "tiny")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    fake_hub.reset_counts()
    assert resolve_weights(source, "tiny") == path
    assert fake_hub.count() == 0


def test_pinned_revision_gets_that_commits_file(hf_env, fake_hub):
    old, new = pth_bytes(1), pth_bytes(2)
    old_commit = fake_hub.add_commit(REPO, {PTH: old})
    new_commit = fake_hub.add_commit(REPO, {PTH: new})
    assert old_commit != new_commit
    pinned = WeightsSource(
        kind="hub", repo_id=REPO, filename=PTH, revision=old_commit, sha256=sha(old), size=len(old), format="pth"
    )
    path = resolve_weights(pinned, "tiny")
    assert torch.equal(load_file(str(path))["conv.weight"], tiny_state(1)["conv.weight"])
    paths = {p for (m, p) in fake_hub.requests if "/resolve/" in p}
    assert paths == {f"/{REPO}/resolve/{old_commit}/{PTH}"}
    latest = replace(pinned, revision="main", sha256=sha(new))
    path_main = resolve_weights(latest, "tiny")
    assert torch.equal(load_file(str(path_main))["conv.weight"], tiny_state(2)["conv.weight"])


def test_checksum_mismatch_refuses_to_load(hf_env, fake_hub, tiny):
    source, _ = tiny
    wrong = replace(source, sha256="0" * 64)
    with pytest.raises(ChecksumMismatchError) as info:
        resolve_weights(wrong, "tiny")
    message = str(info.value)
    assert "0" * 64 in message and "perface download tiny --force" in message and "delete" in message
    assert not any(perface_cache_dir().rglob("*.safetensors"))  # nothing converted from the bad file


def test_tampered_cache_is_caught_and_force_repairs_it(hf_env, fake_hub):
    source = safetensors_source(fake_hub)
    path = resolve_weights(source, "tiny")
    blob = Path(os.path.realpath(path))
    os.chmod(blob, 0o644)
    blob.write_bytes(blob.read_bytes()[:-1] + b"\0")
    with pytest.raises(ChecksumMismatchError, match="perface download tiny --force"):
        resolve_weights(source, "tiny")
    assert [c.ok for c in verify_source(source, "tiny")] == [False]
    repaired = resolve_weights(source, "tiny", force=True)
    assert load_file(str(repaired)).keys() == tiny_state(2).keys()
    assert [c.ok for c in verify_source(source, "tiny")] == [True]


def test_tampered_converted_file_is_caught(hf_env, fake_hub, tiny):
    source, _ = tiny
    converted = resolve_weights(source, "tiny")
    converted.write_bytes(converted.read_bytes()[:-1] + b"\0")
    with pytest.raises(ChecksumMismatchError, match="converted"):
        resolve_weights(source, "tiny")
    assert not all(c.ok for c in verify_source(source, "tiny"))


@pytest.mark.parametrize(
    "what, change, needle",
    [
        ("file", {"filename": "models/missing.pth"}, "does not exist (HTTP 404)"),
        ("repo", {"repo_id": "acme/nope"}, "HF_TOKEN"),
        ("revision", {"revision": "no-such-branch"}, "revision 'no-such-branch' does not exist"),
    ],
)
def test_404s_name_the_problem(hf_env, fake_hub, tiny, what, change, needle):
    source, _ = tiny
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights(replace(source, **change), "tiny")
    assert needle in str(info.value)
    assert "'tiny'" in str(info.value)


def test_timeout_is_bounded(hf_env, fake_hub, tiny, monkeypatch):
    """The bound is the mechanism, not a stopwatch: the timeout reaches the HTTP request, the
    request ends by timing out (the Hub would answer after 20 s), and it is made once (no retries)."""
    source, _ = tiny
    fake_hub.head_delay = 20.0
    calls = HubCalls(monkeypatch)
    with pytest.raises(WeightsNotCachedError) as info:
        resolve_weights(source, "tiny", timeout=0.5)
    assert [c["timeout"] for c in calls.head] == [0.5] and calls.download == []
    assert (fake_hub.count("HEAD"), fake_hub.count("GET")) == (1, 0)
    assert "did not answer within 0.5 s" in str(info.value)


def test_unpinned_source_is_trusted_on_first_use(hf_env, fake_hub, caplog):
    source = safetensors_source(fake_hub, pin=False)
    with caplog.at_level(logging.WARNING, logger="perface.hub"):
        path = resolve_weights(source, "tiny")
    assert "trusting it on first use" in caplog.text
    records = list((perface_cache_dir() / "trust").rglob("*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["sha256"] == sha(path.read_bytes())
    assert [c.what for c in verify_source(source, "tiny")] == ["download (trust-on-first-use record)"]
    blob = Path(os.path.realpath(path))
    os.chmod(blob, 0o644)
    blob.write_bytes(b"x" + blob.read_bytes()[1:])
    with pytest.raises(ChecksumMismatchError, match="trusted on first use"):
        resolve_weights(source, "tiny")


def test_import_local_copy_for_offline_use(hf_env, fake_hub, tiny, tmp_path, monkeypatch):
    from huggingface_hub import constants

    source, data = tiny
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(pth_bytes(5))
    with pytest.raises(ChecksumMismatchError):
        import_weights(source, "tiny", bad)
    good = tmp_path / "tiny.pth"
    good.write_bytes(data)
    path = import_weights(source, "tiny", good)
    assert resolve_weights(source, "tiny") == path
    assert weights_status(source) == "cached"
    assert fake_hub.count() == 0


def test_cli_models_download_verify(hf_env, fake_hub, tiny, capsys, monkeypatch):
    from perface import cli, registry

    source, _ = tiny
    spec = replace(registry.get_spec("sface"), name="tiny-test", weights=source)
    monkeypatch.setitem(registry.MODELS, "tiny-test", spec)
    assert cli.main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["tiny-test"]["status"] == "downloadable" and rows["sface"]["status"] == "embedded"
    assert cli.main(["download", "tiny-test"]) == 0
    assert "ready at" in capsys.readouterr().out
    assert cli.main(["verify", "tiny-test", "sface"]) == 0
    out = capsys.readouterr().out
    assert out.count("OK") == 3  # embedded sface, downloaded .pth, converted safetensors
    converted = next(perface_cache_dir().rglob("*.safetensors"))
    converted.write_bytes(converted.read_bytes()[:-1] + b"\0")
    assert cli.main(["verify", "tiny-test"]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    assert cli.main(["download", "tiny-tset"]) == 2
    assert "Did you mean 'tiny-test'" in capsys.readouterr().err


_WORKER = textwrap.dedent("""
    import json, logging, sys
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    from perface.hub import resolve_weights, sha256_file
    from perface.registry import WeightsSource
    path = resolve_weights(WeightsSource(**json.loads(sys.argv[1])), "tiny")
    print(json.dumps({"path": str(path), "sha256": sha256_file(path)}))
""")


@pytest.mark.slow
def test_concurrent_first_use_from_two_processes(fake_hub, tiny, tmp_path):
    """Two fresh processes (env vars HF_ENDPOINT/HF_HOME, read at import) race on an empty cache."""
    source, _ = tiny
    fake_hub.head_barrier = 2  # neither process gets an answer before both have asked: they overlap
    env = subprocess_env(fake_hub.endpoint, tmp_path / "hf_home")
    arg = json.dumps(asdict(source))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, arg], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results, logs = [], ""
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
        logs += err
    assert results[0] == results[1]
    assert logs.count("perface.hub: model 'tiny': converted") == 1  # the lock let one process convert
    home = tmp_path / "hf_home"
    assert Path(results[0]["path"]).is_relative_to(home / "perface")
    leftovers = [p for p in home.rglob("*") if p.name.endswith((".tmp", ".incomplete"))]
    assert leftovers == []
    blobs = list((home / "hub" / "models--acme--tiny" / "blobs").iterdir())
    assert len(blobs) == 1 and hashlib.sha256(blobs[0].read_bytes()).hexdigest() == source.sha256
    assert fake_hub.count("GET") >= 1


def test_verify_checks_embedded_model_and_detector(capsys, monkeypatch):
    """`perface verify` re-hashes the shipped sface and detector files, and flags a bad pin."""
    from perface.cli import main

    assert main(["verify"]) == 0
    out = capsys.readouterr().out
    assert "sface: OK" in out and "retinaface-mnet025 (face detector): OK" in out
    bad_pin = replace(registry.DETECTOR, weights=replace(registry.DETECTOR.weights, sha256="0" * 64))
    monkeypatch.setattr("perface.commands.verify.DETECTOR", bad_pin)
    assert main(["verify"]) == 1
    out = capsys.readouterr().out
    assert "retinaface-mnet025 (face detector): MISMATCH" in out and "force-reinstall" in out
