"""Before/after of issue 6 in one run: size, 1-thread latency (interleaved), accuracy on a real split.

Exports into one folder, from the same weights:

- ``before``: fp32 ONNX and TFLite of the plain DeployEGEUNet (``graph="deploy"``, what the exporters converted
  before the rewrite);
- ``after``: the default artifacts (``egeunet export``): fp32 and int8 ONNX and TFLite of the rewritten graph.

Then times all of them interleaved in one process (``runtimes.bench.bench_host``, 1 thread) and runs the drift
harness (``runtimes.drift.run_drift``) on the split, and prints one table: size, p50, the ratio of every artifact to
its target's "before" fp32 and of every int8 to its target's fp32, pooled Dice, its delta to PyTorch, and mask
agreement; ONNX rows also name the graph optimisation level ONNX Runtime ran them at (the level each artifact records
in its metadata, ``ort_graph_optimization_level``, which the runner honours). The table also goes to
``<out>/int8_vs_fp32.json``. Compare figures only within one run: this machine's
latency moves by 1.5x between runs.

    python bench/int8_vs_fp32.py --data ../shared/data/isic2017 --split test --out out/bench_int8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

ARTIFACTS = (  # (label, target, precision, graph)
    ("before", "onnx", "fp32", "deploy"),
    ("after", "onnx", "fp32", "fast"),
    ("after", "onnx", "int8", "fast"),
    ("before", "tflite", "fp32", "deploy"),
    ("after", "tflite", "fp32", "fast"),
    ("after", "tflite", "int8", "fast"),
)


def export_all(out: Path, calib: Path | None, blame: bool) -> list[dict]:
    from egeunet_deploy.export import export

    rows = []
    for label, target, precision, graph in ARTIFACTS:
        folder = out / label
        t0 = time.perf_counter()
        path = export(target, precision, out_dir=folder, calib=calib if precision == "int8" else None,
                      graph=graph, blame=blame, log=None)
        from egeunet_deploy.export.metadata import read_metadata

        rows.append({"label": label, "target": target, "precision": precision, "graph": graph, "path": str(path),
                     "export_s": round(time.perf_counter() - t0, 1), "size_kb": round(path.stat().st_size / 1024, 1),
                     "ort_level": read_metadata(path).get("ort_graph_optimization_level")})
        print(f"exported {label:6} {target:6} {precision}: {path} ({rows[-1]['size_kb']} KB)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="dataset root with ground truth (isic2017)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None, help="first N images only (smoke runs)")
    ap.add_argument("--calib", type=Path, default=None, help="calibration set (default: the bundled sample)")
    ap.add_argument("--out", type=Path, default=Path("out/bench_int8_vs_fp32"))
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--blame", action="store_true", help="also compute the int8 blame rankings (slower export)")
    args = ap.parse_args(argv)

    from egeunet_deploy.runtimes.bench import bench_host
    from egeunet_deploy.runtimes.drift import run_drift

    rows = export_all(args.out, args.calib, args.blame)
    paths = [Path(r["path"]) for r in rows]
    records = bench_host(paths, threads=[1], runs=args.runs, warmup=args.warmup, device="cpu", progress=False)
    p50 = {}
    for r, rec in zip(rows, records, strict=True):
        res = rec["results"][0] if rec["results"] else None
        p50[r["path"]] = res["latency_ms"]["p50"] if res else None
    report = run_drift(paths, args.data, split=args.split, out=args.out / "drift", threads=1, device="cpu",
                       limit=args.limit, progress=False)
    drift = {Path(a["file"]).resolve(): a for a in report["artifacts"]}
    for r in rows:
        r["p50_ms"] = p50[r["path"]]
        a = drift.get(Path(r["path"]).resolve(), {})
        r["pooled_dsc"] = (a.get("pooled") or {}).get("dsc")
        r["delta_dsc"] = (a.get("delta") or {}).get("dsc")
        r["agreement"] = (a.get("agreement") or {}).get("dsc")
        r["drift_status"] = a.get("status")
    for r in rows:
        before = next(x for x in rows if x["target"] == r["target"] and x["label"] == "before")
        fp32 = next(x for x in rows if x["target"] == r["target"] and x["label"] == "after"
                    and x["precision"] == "fp32")
        r["ratio_to_before_fp32"] = _ratio(r["p50_ms"], before["p50_ms"])
        r["ratio_to_fp32"] = _ratio(r["p50_ms"], fp32["p50_ms"]) if r["label"] == "after" else None
    conditions = {"host": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                  "loadavg": os.getloadavg(), "threads": 1, "runs": args.runs, "split": args.split,
                  "n_images": report["n_images"], "reference_dsc": report["reference"]["pooled"]["dsc"]}
    print_table(rows, conditions)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8_vs_fp32.json").write_text(json.dumps({"conditions": conditions, "rows": rows}, indent=2))
    print(f"wrote {args.out / 'int8_vs_fp32.json'} and the drift report in {args.out / 'drift'}")
    return 0


def _ratio(a, b):
    return round(a / b, 3) if a and b else None


def _f(v, spec):
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict], conditions: dict) -> None:
    print(f"\n{conditions['split']} ({conditions['n_images']} images), PyTorch pooled DSC "
          f"{conditions['reference_dsc']:.4f}; 1 thread, interleaved, {conditions['runs']} runs; load average "
          f"{', '.join(f'{x:.1f}' for x in conditions['loadavg'])} on {conditions['cpus']} CPUs")
    print(f"{'artifact':34} {'KB':>7} {'p50 ms':>7} {'/before':>7} {'/fp32':>6} {'DSC':>7} {'dDSC':>8} {'agree':>7}")
    for r in rows:
        level = f" (ort {r['ort_level']})" if r.get("ort_level") else ""
        name = f"{r['label']} {r['target']} {r['precision']}{level}"
        print(f"{name:34} {r['size_kb']:7.1f} {_f(r['p50_ms'], '7.2f')} {_f(r['ratio_to_before_fp32'], '7.2f')} "
              f"{_f(r['ratio_to_fp32'], '6.2f')} {_f(r['pooled_dsc'], '7.4f')} {_f(r['delta_dsc'], '+8.4f')} "
              f"{_f(r['agreement'], '7.4f')}")


if __name__ == "__main__":
    raise SystemExit(main())
