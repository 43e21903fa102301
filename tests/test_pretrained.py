"""save_pretrained -> from_pretrained round trips (local and through a stand-in Hub), strict
loading errors, push_to_hub, unknown names, and the arcface failure with no network."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import perface
from fake_hub import FakeHub, HubCalls, SilentServer, point_hf_at, subprocess_env
from perface import IncompatibleCheckpointError, UnknownModelError, WeightsNotCachedError, WeightsNotFoundError
from perface.pretrained import PublishedCheckpoint, parse_hub_id


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny CPU batches: one thread is faster than several on a shared, busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sface():
    return perface.PerFace()


@pytest.fixture(scope="module")
def faces():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 112, 112, generator=g)


@pytest.fixture
def saved(sface, tmp_path):
    return sface.save_pretrained(tmp_path / "ckpt", name="sface-copy")


def test_save_load_round_trip_is_bit_exact(sface, faces, saved):
    assert sorted(p.name for p in saved.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    again = perface.PerFace.from_pretrained(saved)
    assert again.name == "sface-copy" and again.spec.arch == "sface"
    with torch.no_grad():
        assert torch.equal(again.embed(faces), sface.embed(faces))
        assert torch.equal(again(faces, faces.flip(0)), sface(faces, faces.flip(0)))
    # the weights file alone (config.json beside it) loads too
    alone = perface.PerFace.from_pretrained(str(saved / "model.safetensors"))
    with torch.no_grad():
        assert torch.equal(alone.embed(faces), sface.embed(faces))


def test_round_trip_keeps_changed_weights_and_card_fields(faces, tmp_path):
    metric = perface.PerFace(trainable=True)
    with torch.no_grad():
        before = metric.embed(faces)
        for p in metric.net.parameters():
            p.add_(0.01 * torch.randn_like(p))
        changed = metric.embed(faces)
    assert not torch.equal(before, changed)
    out = metric.save_pretrained(
        tmp_path / "tuned",
        name="sface-tuned",
        perceptual=True,
        trained_on="SimCelebA triplets",
        scores={"simceleba_triplet_accuracy": 0.5},
    )
    config = json.loads((out / "config.json").read_text())
    assert config["name"] == "sface-tuned" and config["perceptual"] is True
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "license: apache-2.0" in card and "library_name: perface" in card
    assert "SimCelebA triplets" in card and "simceleba_triplet_accuracy" in card and "2509.20281" in card
    reloaded = perface.PerFace.from_pretrained(out)
    assert reloaded.spec.perceptual
    with torch.no_grad():
        assert torch.equal(reloaded.embed(faces), changed)
    with pytest.raises(ValueError, match="unknown checkpoint fields"):
        metric.save_pretrained(tmp_path / "bad", colour="blue")


def test_non_apache_license_goes_to_other(sface, tmp_path):
    out = sface.save_pretrained(tmp_path / "nc", license="insightface: non-commercial research use only")
    card = (out / "README.md").read_text()
    assert "license: other" in card and "license_name: insightface-non-commercial-research-use-only" in card


@pytest.mark.parametrize(
    "edit, needle",
    [
        ("drop", "missing keys: fc.weight"),
        ("extra", "unexpected keys: head.weight"),
        ("shape", "fc.bias (7,) vs (128,)"),
    ],
)
def test_strict_loading_names_bad_keys(saved, edit, needle):
    path = saved / "model.safetensors"
    state = load_file(str(path))
    if edit == "drop":
        del state["fc.weight"]
    elif edit == "extra":
        state["head.weight"] = torch.zeros(2)
    else:
        state["fc.bias"] = torch.zeros(7)
    save_file(state, str(path))
    with pytest.raises(IncompatibleCheckpointError) as info:
        perface.PerFace.from_pretrained(saved)
    assert needle in str(info.value) and str(saved) in str(info.value)


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"colour": "blue"}, "unknown keys ['colour']"),
        ({"arch": "resnet9000"}, "cannot build"),
    ],
)
def test_incompatible_config_is_an_error(saved, change, needle):
    config_path = saved / "config.json"
    config = json.loads(config_path.read_text())
    config.update(change)
    config_path.write_text(json.dumps(config))
    with pytest.raises(IncompatibleCheckpointError, match="config") as info:
        perface.PerFace.from_pretrained(saved)
    assert needle in str(info.value)


def test_missing_config_and_legacy_files_explain_the_fix(saved, tmp_path):
    (saved / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json not found"):
        perface.PerFace.from_pretrained(saved)
    legacy = tmp_path / "weights.pth"
    legacy.write_bytes(b"not a checkpoint")
    with pytest.raises(IncompatibleCheckpointError, match="perface download NAME --from-file"):
        perface.PerFace.from_pretrained(str(legacy))


def test_unknown_names_suggest_close_ones():
    with pytest.raises(UnknownModelError, match="Did you mean 'arcface-r50-ms1mv3'"):
        perface.PerFace("arcface-r50")
    with pytest.raises(UnknownModelError, match="Did you mean 'sface'"):
        perface.PerFace("sfcae")
    assert parse_hub_id("org/repo") == ("org/repo", "main")
    assert parse_hub_id("org/repo@v1.0") == ("org/repo", "v1.0")
    assert parse_hub_id("not a repo") is None


@pytest.fixture
def hub_repo(saved, tmp_path, monkeypatch):
    """The saved checkpoint published as acme/sface-copy on a stand-in Hub; yields (hub, commit)."""
    hub = FakeHub().start()
    files = {p.name: p.read_bytes() for p in saved.iterdir()}
    commit = hub.add_commit("acme/sface-copy", files)
    point_hf_at(hub.endpoint, tmp_path / "hf_home", monkeypatch)
    yield hub, commit
    hub.stop()


def test_load_from_hub_repo_id(hub_repo, sface, faces, caplog, monkeypatch):
    from huggingface_hub import constants

    hub, commit = hub_repo
    with caplog.at_level(logging.WARNING, logger="perface.hub"):
        metric = perface.PerFace.from_pretrained("acme/sface-copy")
    assert "trusting it on first use" in caplog.text  # a user repo has no pinned hash
    with torch.no_grad():
        assert torch.equal(metric.embed(faces), sface.embed(faces))
    assert hub.count("GET") == 2  # config.json and model.safetensors
    hub.reset_counts()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    pinned = perface.PerFace.from_pretrained(f"acme/sface-copy@{commit}")
    assert pinned.name == "sface-copy" and hub.count() == 0
    with pytest.raises(WeightsNotCachedError, match="HF_HUB_OFFLINE"):
        perface.PerFace.from_pretrained("acme/other-repo")


def test_hub_repo_errors(hub_repo):
    hub, _ = hub_repo
    with pytest.raises(WeightsNotFoundError, match="no registered model either"):
        perface.PerFace.from_pretrained("acme/no-such-repo")
    with pytest.raises(WeightsNotFoundError, match="revision 'v9' does not exist"):
        perface.PerFace.from_pretrained("acme/sface-copy@v9")
    hub.add_commit("acme/half", {"config.json": b"{}"})
    with pytest.raises(IncompatibleCheckpointError, match="config"):
        perface.PerFace.from_pretrained("acme/half")


def test_push_to_hub_uploads_the_saved_files(sface, monkeypatch):
    import huggingface_hub

    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False, repo_type=None):
            calls["create"] = (repo_id, private, exist_ok)

        def upload_folder(self, repo_id, folder_path, repo_type=None, commit_message=None):
            folder = Path(folder_path)
            calls["files"] = {p.name: p.read_bytes() for p in folder.iterdir()}
            calls["message"] = commit_message
            return type("CommitInfo", (), {"oid": "a" * 40, "commit_url": "http://hub/commit"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    published = sface.push_to_hub("acme/new", private=True, token="tok", name="sface-pub")
    assert isinstance(published, PublishedCheckpoint)
    assert calls["create"] == ("acme/new", True, True) and calls["token"] == "tok"
    assert sorted(calls["files"]) == ["README.md", "config.json", "model.safetensors"]
    assert json.loads(calls["files"]["config.json"])["name"] == "sface-pub"
    import hashlib

    assert published.sha256 == hashlib.sha256(calls["files"]["model.safetensors"]).hexdigest()
    assert published.revision == "a" * 40 and "sface-pub" in calls["message"]
    assert f'revision="{"a" * 40}"' in published.registry_source()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("hub", ["closed port", "never answers"])
def test_arcface_without_network_fails_fast_and_says_what_to_do(hub, tmp_path, monkeypatch):
    """Fail fast is a mechanism: one HEAD request with the etag timeout (here 0.5 s), no retry
    loop, no download attempt; then a message that says what to do."""
    from huggingface_hub import constants

    silent = SilentServer() if hub == "never answers" else None
    endpoint = silent.endpoint if silent else f"http://127.0.0.1:{_closed_port()}"
    home = point_hf_at(endpoint, tmp_path / "empty_home", monkeypatch)
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 0.5)
    calls = HubCalls(monkeypatch)
    try:
        with pytest.raises(WeightsNotCachedError) as info:
            perface.PerFace("arcface-r50-ms1mv3")
        assert [c["timeout"] for c in calls.head] == [0.5] and calls.download == []
        if silent:
            assert silent.connections == 1  # one attempt, no retries
    finally:
        if silent:
            silent.stop()
    message = str(info.value)
    for needle in (
        "'arcface-r50-ms1mv3'",
        str(home / "hub"),
        "did not answer within 0.5 s" if silent else "could not be reached",
        "perface download arcface-r50-ms1mv3",
        "--from-file",
        "HF_ENDPOINT",
    ):
        assert needle in message, needle


_OFFLINE_CLI = textwrap.dedent("""
    import sys
    from perface import cli
    print("rc", cli.main(["download", sys.argv[1]]))
    print("rc", cli.main(["download", "arcface-r50-ms1mv3"]))
""")


def test_env_vars_offline_cli_in_fresh_process(hub_repo, tmp_path):
    """HF_HOME / HF_HUB_OFFLINE set in the environment (read at import) are honoured."""
    hub, commit = hub_repo
    perface.PerFace.from_pretrained(f"acme/sface-copy@{commit}")  # fills tmp_path/hf_home
    hub.reset_counts()
    env = subprocess_env(hub.endpoint, tmp_path / "hf_home", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", _OFFLINE_CLI, f"acme/sface-copy@{commit}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stdout.splitlines() if line.startswith("rc ")] == ["rc 0", "rc 1"]
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in proc.stderr
    assert hub.count() == 0
