"""The metric signature: format and parsing, what each field tracks, checking, model cards, CLI.

Expected hashes come from hashing the weights files here with ``hashlib`` (not from the
registry's pins), expected field values from what each test changed.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
import torch

import perface
from perface import PerFace, Signature, SignatureMismatchError, check_signature
from perface.cli import main
from perface.signature import checkpoint_signature, signature_of

WEIGHTS = Path(perface.__file__).parent / "weights"
EXAMPLE = (
    "perface:0.2.0|model:sface@0f0fbaa2|det:retinaface-mnet025@6797d194|align:detect|tpl:arcface|size:112|prec:fp32"
)


def _sha8(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def _field(sig: str, key: str) -> str:
    return dict(part.split(":", 1) for part in sig.split("|"))[key]


# --- format ----------------------------------------------------------------------------------


def test_format_parse_round_trip():
    sig = Signature.parse(EXAMPLE)
    assert (sig.perface, sig.model, sig.det, sig.align, sig.tpl, sig.size, sig.prec) == (
        "0.2.0",
        "sface@0f0fbaa2",
        "retinaface-mnet025@6797d194",
        "detect",
        "arcface",
        "112",
        "fp32",
    )
    assert str(sig) == EXAMPLE
    assert Signature.parse(str(sig)) == sig


def test_live_signature_round_trips(metric):
    for align in ("none", "detect", ("none", "detect")):
        sig = signature_of(metric, align)
        assert Signature.parse(str(sig)) == sig


def test_parse_accepts_a_copy_wrapped_across_lines():
    wrapped = " " + EXAMPLE.replace("|det:", " |\n  det:").replace("|tpl:", "| tpl:") + "\n"
    assert str(Signature.parse(wrapped)) == EXAMPLE


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "is not key:value"),
        ("perface:0.2.0|model:sface@0f0fbaa2", "missing field(s) det, align, tpl, size, prec"),
        (EXAMPLE + "|gpu:a100", "unknown field 'gpu'"),
        (EXAMPLE.replace("|det:", "|model:x|det:"), "'model' appears twice"),
        (
            EXAMPLE.replace(
                "det:retinaface-mnet025@6797d194|align:detect", "align:detect|det:retinaface-mnet025@6797d194"
            ),
            "must come in the order",
        ),
        (EXAMPLE.replace("prec:fp32", "prec:"), "'prec:' is not key:value"),
        (EXAMPLE.replace("prec:fp32", "prec fp32"), "'prec fp32' is not key:value"),
        (EXAMPLE.replace("sface@", "s face@"), "whitespace"),
    ],
)
def test_malformed_signatures_raise_value_error_naming_the_problem(text, problem):
    with pytest.raises(ValueError) as info:
        Signature.parse(text)
    assert problem in str(info.value)


def test_a_field_cannot_hold_the_separator():
    fields = dict(part.split(":", 1) for part in EXAMPLE.split("|"))
    with pytest.raises(ValueError, match="model"):
        Signature(**{**fields, "model": "a|b@0f0fbaa2"})


# --- what each field tracks ------------------------------------------------------------------


def test_model_field_is_name_and_weights_file_hash(metric):
    assert _field(metric.signature, "model") == f"sface@{_sha8(WEIGHTS / 'sface.safetensors')}"
    assert _field(metric.signature, "perface") == perface.__version__
    assert (_field(metric.signature, "tpl"), _field(metric.signature, "size")) == ("arcface", "112")


def test_model_hash_changes_when_weights_differ(tmp_path):
    m = PerFace()
    with torch.no_grad():
        next(m.net.parameters()).mul_(1.01)
    out = m.save_pretrained(tmp_path / "ckpt", name="sface-tweaked")
    reloaded = PerFace(out)
    expected = f"sface-tweaked@{_sha8(out / 'model.safetensors')}"
    assert _field(reloaded.signature, "model") == expected
    assert expected.split("@")[1] != _sha8(WEIGHTS / "sface.safetensors")


def test_det_field_names_the_detector_only_when_faces_are_detected(metric):
    detector = f"retinaface-mnet025@{_sha8(WEIGHTS / 'retinaface_mnet025.safetensors')}"
    assert _field(str(signature_of(metric, "detect")), "det") == detector
    assert _field(PerFace(align="detect").signature, "det") == detector
    assert _field(metric.signature, "det") == "none"
    ffhq = PerFace(align="ffhq").signature
    assert (_field(ffhq, "align"), _field(ffhq, "det")) == ("ffhq", "none")


def test_align_field_names_both_inputs_when_they_differ(metric):
    assert str(signature_of(metric, ("none", "detect"))).count("|align:none,detect|") == 1
    assert _field(str(signature_of(metric, ("detect", "detect"))), "align") == "detect"
    assert _field(str(signature_of(metric, ("ffhq", "none"))), "align") == "ffhq,none"


def test_tpl_and_size_fields_follow_the_checkpoint(tmp_path, metric):
    out = PerFace().save_pretrained(tmp_path / "ckpt", template="ffhq")
    assert _field(PerFace(out).signature, "tpl") == "ffhq"
    spec = perface.registry.get_spec("arcface-r50-ms1mv3")
    sig = str(checkpoint_signature(spec, "ab" * 32))
    assert (_field(sig, "model"), _field(sig, "size")) == ("arcface-r50-ms1mv3@abababab", str(spec.input_size))


@pytest.mark.parametrize("cast, prec", [("half", "fp16"), ("bfloat16", "bf16"), ("double", "fp64"), ("float", "fp32")])
def test_prec_field_follows_the_network_dtype_and_a_cast_is_no_modification(cast, prec):
    sig = getattr(PerFace(), cast)().signature
    assert _field(sig, "prec") == prec
    assert not _field(sig, "model").endswith("*")


@pytest.mark.slow
def test_star_marks_weights_changed_by_an_optimizer_step(tmp_path):
    m = PerFace(trainable=True)
    m.eval()
    x = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    m(x, x.flip(0)).sum().backward()
    assert not _field(m.signature, "model").endswith("*")  # gradients alone change nothing
    torch.optim.SGD(m.parameters(), lr=0.01).step()
    assert _field(m.signature, "model") == f"sface@{_sha8(WEIGHTS / 'sface.safetensors')}*"
    assert _field(m.half().signature, "model").endswith("*")  # a cast does not clear it
    out = m.float().save_pretrained(tmp_path / "trained")
    assert _field(PerFace(out).signature, "model") == f"sface@{_sha8(out / 'model.safetensors')}"


# --- checking --------------------------------------------------------------------------------


def test_check_signature_passes_on_a_match_and_returns_the_installed_signature(metric):
    assert str(check_signature(metric.signature, metric)) == metric.signature
    detect = str(signature_of(metric, "detect"))
    assert str(check_signature(detect)) == detect  # metric built from the model name, align from the signature


def test_check_signature_strict_raises_naming_every_differing_field(metric):
    other = metric.signature.replace("prec:fp32", "prec:fp16").replace("perface:", "perface:9")
    with pytest.raises(SignatureMismatchError) as info:
        check_signature(other, metric)
    message = str(info.value)
    assert "prec: expected 'fp16', installed 'fp32'" in message
    assert f"perface: expected '9{perface.__version__}'" in message
    assert "model:" not in message and ".half()" in message


def test_check_signature_non_strict_warns_and_returns(metric):
    other = metric.signature.replace("sface@", "sface@f")
    with pytest.warns(UserWarning, match="model: expected"):
        have = check_signature(other, metric, strict=False)
    assert str(have) == metric.signature


def test_check_signature_rejects_malformed_input(metric):
    with pytest.raises(ValueError, match="missing field"):
        check_signature("perface:0.2.0", metric)


# --- model cards and the command line --------------------------------------------------------


def test_model_card_prints_the_signatures_the_checkpoint_loads_with(tmp_path):
    out = PerFace().save_pretrained(tmp_path / "ckpt", name="card-test")
    card = (out / "README.md").read_text()
    loaded = PerFace(out)
    assert f"`{loaded.signature}`" in card
    assert f"`{signature_of(loaded, 'detect')}`" in card
    assert f"card-test@{_sha8(out / 'model.safetensors')}" in card


def _cli(capsys, *argv: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["signature", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_the_signature(capsys, metric):
    code, out, _ = _cli(capsys)
    assert code == 0 and out.strip() == metric.signature
    code, out, _ = _cli(capsys, "--align", "detect")
    assert code == 0 and out.strip() == str(signature_of(metric, "detect"))
    code, out, _ = _cli(capsys, "--align", "none,detect")
    assert code == 0 and _field(out.strip(), "align") == "none,detect"


def test_cli_check_exits_0_on_match_and_1_naming_the_fields_on_mismatch(capsys, metric):
    detect = str(signature_of(metric, "detect"))
    code, out, _ = _cli(capsys, "--check", detect)
    assert code == 0 and out.splitlines()[0] == detect and "matches" in out
    code, out, err = _cli(capsys, "--check", detect.replace("fp32", "fp16"))
    assert code == 1 and out.strip() == detect
    assert err.startswith("perface signature: error: signature mismatch (prec: expected 'fp16', installed 'fp32')")


@pytest.mark.parametrize(
    "argv, problem", [(["--check", "perface:0.2.0"], "missing field"), (["--align", "sideways"], "--align 'sideways'")]
)
def test_cli_usage_errors_exit_2(capsys, argv, problem):
    code, _, err = _cli(capsys, *argv)
    assert code == 2 and problem in err and len(err.strip().splitlines()) == 1
