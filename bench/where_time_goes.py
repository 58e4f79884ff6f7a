"""Where an ONNX artifact spends its time, per block and per operator type, from ONNX Runtime's own profiler.

    python bench/where_time_goes.py out/bench_int8/after/egeunet_fp32.onnx out/bench_int8/after/egeunet_int8.onnx \
        --out out/where_time_goes

Why: issue 6 asks for fp32 near the hardware limit (~1.5 ms for the 144 MFLOP forward at 1 thread) and int8 faster
than fp32. The latency bench says by how much both miss; this says why. ONNX Runtime times every kernel it runs
(``SessionOptions.enable_profiling``); node names carry the module path of the rewritten graph
(``/fast/encoder1/...``), so kernel times add up per block. It also counts the kernels per inference and their
median duration: a forward made of hundreds of kernels of a few microseconds each over 1-32-channel tensors is
bound by per-kernel overhead and memory traffic, which int8 does not reduce (each int8 island adds Quantize /
Dequantize kernels instead).

Runs each artifact at 1 thread on a fixed random uint8 image at the level the artifact records
(``ort_graph_optimization_level``). Writes ``<out>/where_time_goes.json`` and ``<out>/where_time_goes.png``
(time per block, one bar group per artifact). The profiler adds its own overhead: read shares, not absolute ms.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np


def block_of(node_name: str) -> str:
    """'/fast/encoder1/gn/Mul' -> 'encoder1'; '/preprocess/Sub' -> 'preprocess'; a node ONNX Runtime added itself
    (layout reorders, fused nodes named without a module path) -> 'ort-inserted'."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) >= 3 and parts[0] in ("fast", "deploy"):
        return parts[1]
    return parts[0] if len(parts) >= 2 else "ort-inserted"


def profile(path: Path, runs: int, warmup: int) -> dict:
    """Kernel times of ``runs`` inferences, aggregated per block and per operator type (ms per inference)."""
    import onnxruntime as ort

    from egeunet_deploy.export.metadata import read_metadata
    from egeunet_deploy.runtimes.onnx_runner import (
        DEFAULT_GRAPH_OPTIMIZATION_LEVEL,
        METADATA_LEVEL_KEY,
        graph_optimization_level,
    )

    level = read_metadata(path).get(METADATA_LEVEL_KEY, DEFAULT_GRAPH_OPTIMIZATION_LEVEL)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = graph_optimization_level(level)
    with tempfile.TemporaryDirectory() as tmp:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        inp = session.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        x = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
        feed = {inp.name: x if inp.type == "tensor(uint8)" else x.astype(np.float32)}
        for _ in range(warmup + runs):  # warm-up on the profiled session itself; its kernels are dropped below
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    cutoff = model_runs[warmup - 1]["ts"] + model_runs[warmup - 1]["dur"] if warmup else float("-inf")
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= cutoff]
    per_block: collections.Counter = collections.Counter()
    per_op: collections.Counter = collections.Counter()
    for e in kernels:
        per_block[block_of(e["name"][: -len("_kernel_time")])] += e["dur"]
        per_op[e["args"]["op_name"]] += e["dur"]
    total_us = sum(per_block.values())
    return {"artifact": str(path), "ort_graph_optimization_level": level, "runs": runs,
            "kernel_ms_per_inference": total_us / runs / 1000,
            "kernels_per_inference": len(kernels) / runs,
            "median_kernel_us": statistics.median(e["dur"] for e in kernels),
            "blocks_ms": {k: v / runs / 1000 for k, v in per_block.most_common()},
            "ops_ms": {k: v / runs / 1000 for k, v in per_op.most_common()}}


def plot(results: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = list(dict.fromkeys(b for r in results for b in r["blocks_ms"]))
    fig, ax = plt.subplots(figsize=(max(8, len(blocks) * 0.6), 4))
    width = 0.8 / len(results)
    for i, r in enumerate(results):
        ax.bar([j + i * width for j in range(len(blocks))], [r["blocks_ms"].get(b, 0) for b in blocks], width,
               label=f"{'/'.join(Path(r['artifact']).parts[-2:])} ({r['kernel_ms_per_inference']:.1f} ms, "
                     f"{r['kernels_per_inference']:.0f} kernels)")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(blocks))], blocks, rotation=45, ha="right")
    ax.set_ylabel("kernel ms per inference (1 thread)")
    ax.set_title("ONNX Runtime kernel time per block")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+", type=Path, help=".onnx files")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("out/where_time_goes"))
    args = ap.parse_args(argv)
    for a in args.artifacts:
        if a.suffix != ".onnx" or not a.is_file():
            ap.error(f"{a}: not an .onnx file")
    results = [profile(a, args.runs, args.warmup) for a in args.artifacts]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "where_time_goes.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out / "where_time_goes.png")
    for r in results:
        print(f"\n{r['artifact']} (ort {r['ort_graph_optimization_level']}): {r['kernel_ms_per_inference']:.2f} ms "
              f"in {r['kernels_per_inference']:.0f} kernels per inference, "
              f"median kernel {r['median_kernel_us']:.0f} us")
        top = list(r["blocks_ms"].items())[:8]
        print("  blocks: " + ", ".join(f"{k} {v:.2f}" for k, v in top))
        top = list(r["ops_ms"].items())[:8]
        print("  ops:    " + ", ".join(f"{k} {v:.2f}" for k, v in top))
    print(f"\nwrote {args.out / 'where_time_goes.json'} and {args.out / 'where_time_goes.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
