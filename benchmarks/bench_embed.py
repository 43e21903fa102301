"""Embedding speed on the CPU: ``PerFace.embed`` beside onnxruntime on the same SFace ONNX.

    python benchmarks/bench_embed.py [--quick] [--json OUT] [--threads N]

Rows: batch-32 throughput (faces/s, no grad), batch-1 latency (ms) and forward+backward
throughput (faces/s: embed a batch of 32 and backpropagate to the input pixels, frozen network)
for SFace (embedded weights) and iresnet50 (random weights, same compute), each with perface's
defaults; SFace once more in a fresh process with those defaults switched off (glibc's default
malloc settings, ``PERFACE_TUNE_MALLOC=0``, and the whole batch in one pass); and onnxruntime
(optional) on ``../shared/models/face_recognition_sface_2021dec_int8bq.onnx`` with torch's
thread count, both as shipped (weights dequantized on every run) and with the dequantization
folded into fp32 weights by onnxruntime itself. Numbers are medians; the table also gives the
best run, which is the one to trust on a machine shared with other jobs.
``run(quick)`` serves ``benchmarks/run_all.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _util import REPO, machine_info, random_checkpoint, sample_times

SFACE_ONNX = REPO.parent / "shared" / "models" / "face_recognition_sface_2021dec_int8bq.onnx"
BATCH = 32


def _rate(key: str, times: list[float], n: int) -> dict[str, float]:
    """``{key: median faces/s, key_best: best faces/s}`` for ``n`` faces per call."""
    return {key: n / times[len(times) // 2], f"{key}_best": n / times[0]}


def _latency(key: str, times: list[float]) -> dict[str, float]:
    """``{key: median ms, key_best: best ms}``."""
    return {key: 1000 * times[len(times) // 2], f"{key}_best": 1000 * times[0]}


def _faces(n: int, side: int = 112) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(0))


def bench_perface(source: str, quick: bool) -> dict[str, object]:
    """Batch-32 faces/s, batch-1 ms and forward+backward faces/s of ``PerFace(source).embed``."""
    import perface

    metric = perface.PerFace(source)
    warmup, iters, min_s = (1, 2, 0.0) if quick else (2, 10, 3.0)
    x32, x1 = _faces(BATCH), _faces(1)

    def forward(x: torch.Tensor) -> Callable[[], object]:
        def step() -> object:
            with torch.no_grad():
                return metric.embed(x)

        return step

    def forward_backward() -> None:
        x = x32.clone().requires_grad_(True)
        metric.embed(x).sum().backward()

    out: dict[str, object] = {"model": metric.name}
    out.update(_rate("b32_faces_s", sample_times(forward(x32), warmup, iters, min_s), BATCH))
    out.update(_latency("b1_ms", sample_times(forward(x1), 2 * warmup, 3 * iters, min_s)))
    out.update(_rate("fwd_bwd_faces_s", sample_times(forward_backward, 1, max(2, iters // 2), min_s), BATCH))
    return out


def _untuned_child(quick: bool) -> dict[str, object]:
    """SFace with glibc's malloc defaults and no chunking (run in a fresh process)."""
    import dataclasses

    from perface.registry import MODELS, register

    register(dataclasses.replace(MODELS["sface"], cpu_chunk=None))
    return bench_perface("sface", quick)


def bench_untuned(quick: bool) -> dict[str, object]:
    """:func:`_untuned_child` in a fresh process with ``PERFACE_TUNE_MALLOC=0``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "untuned.json"
        env = dict(os.environ, PERFACE_TUNE_MALLOC="0")
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child-untuned",
            "--json",
            str(out),
            "--threads",
            str(torch.get_num_threads()),
        ]
        cmd += ["--quick"] if quick else []
        subprocess.run(cmd, check=True, env=env, cwd=REPO)
        return json.loads(out.read_text())


def _ort_sessions(threads: int) -> dict[str, object]:
    """onnxruntime sessions on the SFace ONNX (batch dimension made dynamic): shipped and folded."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(SFACE_ONNX))
    graph = model.graph
    used = {name for node in graph.node for name in node.input}
    inits = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name in used and i.name not in inits]  # weights listed as inputs
    del graph.input[:]
    graph.input.extend(inputs)
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    sessions = {}
    for label, fold in (("onnxruntime, int8bq ONNX as shipped", "0"), ("onnxruntime, weights folded to fp32", "1")):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.disable_quant_qdq", fold)
        sessions[label] = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sessions


def bench_ort(quick: bool, threads: int) -> list[dict[str, object]]:
    """Rows for onnxruntime (empty with a note when it or the ONNX file is missing)."""
    warmup, iters, min_s = (1, 2, 0.0) if quick else (2, 10, 3.0)
    rows = []
    for label, session in _ort_sessions(threads).items():
        name = session.get_inputs()[0].name
        x32 = (_faces(BATCH) * 255).numpy()
        x1 = (_faces(1) * 255).numpy()
        row: dict[str, object] = {"model": "sface", "engine": label}
        row.update(
            _rate("b32_faces_s", sample_times(lambda: session.run(None, {name: x32}), warmup, iters, min_s), BATCH)
        )
        row.update(_latency("b1_ms", sample_times(lambda: session.run(None, {name: x1}), 2 * warmup, 3 * iters, min_s)))
        rows.append(row)
    return rows


def _fmt(row: dict[str, object], key: str, digits: int = 1) -> str:
    if key not in row:
        return "n/a"
    return f"{row[key]:.{digits}f} (best {row[key + '_best']:.{digits}f})"


def table(rows: list[dict[str, object]], machine: dict[str, object]) -> str:
    """Markdown: machine details, then one line per row."""
    lines = ["| machine | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in machine.items()]
    lines += [
        "",
        "| model | engine | batch-32 faces/s | batch-1 ms | fwd+bwd faces/s (batch 32) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['engine']} | {_fmt(r, 'b32_faces_s')} | {_fmt(r, 'b1_ms', 2)} | "
            f"{_fmt(r, 'fwd_bwd_faces_s')} |"
        )
    return "\n".join(lines)


def run(quick: bool = False) -> dict[str, object]:
    """Measure everything; ``{"title", "rows", "notes", "machine"}``."""
    from perface._malloc import tune_malloc

    threads = torch.get_num_threads()
    machine = machine_info()
    machine["threads"] = threads
    rows: list[dict[str, object]] = []
    notes: list[str] = []
    rows.append(dict(bench_perface("sface", quick), engine="perface (torch, defaults)"))
    machine["malloc_tuned"] = tune_malloc()
    rows.append(dict(bench_untuned(quick), engine="torch, glibc malloc defaults, one pass"))
    try:
        import onnxruntime

        machine["onnxruntime"] = onnxruntime.__version__
        if not SFACE_ONNX.is_file():
            raise FileNotFoundError(SFACE_ONNX)
        rows += bench_ort(quick, threads)
    except (ImportError, FileNotFoundError) as exc:
        notes.append(f"onnxruntime rows skipped: {exc!r} (pip install onnx onnxruntime; needs {SFACE_ONNX})")
    with tempfile.TemporaryDirectory() as tmp:
        source = str(random_checkpoint("iresnet50", Path(tmp) / "iresnet50"))
        rows.append(
            dict(bench_perface(source, quick), engine="perface (torch, defaults)", model="iresnet50 (random init)")
        )
    notes.append("faces/s and ms: median (best) over repeated runs; inputs are random 112x112 crops.")
    notes.append("fwd+bwd: embed 32 faces and backpropagate to the pixels through the frozen network.")
    return {"title": "Embedding speed (CPU)", "rows": rows, "notes": notes, "machine": machine}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (about a minute on a quiet 2-core CPU)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--threads", type=int, help="CPU threads for torch and onnxruntime (default: torch's choice)")
    parser.add_argument("--child-untuned", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_untuned:
        result = _untuned_child(args.quick)
    else:
        result = run(args.quick)
        print(table(result["rows"], result["machine"]))
        print("\n".join(f"- {n}" for n in result["notes"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
