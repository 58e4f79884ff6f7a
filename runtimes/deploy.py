"""``egeunet deploy``: the whole product in one command, ending in one HTML page.

calibrate (train split of DATA) -> export every target this OS supports -> drift report on the test split ->
latency bench (1 and 2 threads, the PyTorch weights included for scale) -> ``OUT/report.html`` with one table
(size, accuracy, drift verdict, latency per artifact), the plots and the worst-image overlays, plus
``OUT/deploy.json``. With no arguments it uses the shipped weights and the bundled real ISIC sample (train: 64
pairs for calibration, test: 32 pairs), so a first run takes minutes on a laptop. Each stage keeps going when one
artifact fails and says so in the table; the exit status is non-zero if any export or drift check failed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from egeunet_deploy.model.checkpoint import atomic_write_bytes

from . import report as rep
from .bench import contention_warning


def _say(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(f"[deploy] {msg}", flush=True)


def default_bench_budget() -> tuple[int, int]:
    """(runs, warmup): small on a 2-core machine so the whole pipeline stays within a few minutes."""
    cores = os.cpu_count() or 2
    return (20, 3) if cores <= 2 else (50, 5)


def _result_row(r) -> dict:
    """An export result (dataclass from egeunet_deploy.export) -> plain dict, whatever optional fields it has."""
    from dataclasses import asdict, is_dataclass

    d = asdict(r) if is_dataclass(r) else dict(r)
    path = d.get("path")
    d["path"] = str(path) if path else None
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def _export_ok(row: dict) -> bool:
    return row.get("status") == "ok" and bool(row.get("path"))


def calibrate(data: Path, out: Path, progress: bool, quiet: bool = False) -> tuple[Path, str]:
    """Build the int8 calibration set from DATA's train split (the bundled sample's when DATA has none)."""
    from egeunet_deploy.calibration import build_calibration_set
    from egeunet_deploy.model.bundled import SAMPLE_DATA
    from egeunet_deploy.model.data import DataError, find_pairs

    source = data
    try:
        pairs, _ = find_pairs(data, "train")
    except DataError:
        source = SAMPLE_DATA
        pairs, _ = find_pairs(SAMPLE_DATA, "train")
        _say(f"{data} has no train split: calibrating on the bundled sample's train split instead", quiet)
    calib = build_calibration_set(source, out, split="train", num=min(200, len(pairs)), progress=progress)
    return Path(calib), str(source)


def deploy(
    weights: Path | str | None = None,
    data: Path | str | None = None,
    out: Path | str = "deploy",
    split: str = "test",
    targets: list[str] | None = None,
    threads: list[int] = (1, 2),
    runs: int | None = None,
    warmup: int | None = None,
    tolerance: Path | str | None = None,
    progress: bool = True,
    quiet: bool = False,
    blame: bool = True,
) -> dict:
    """Run the four stages into ``out``; ``progress`` draws bars, ``quiet`` silences the stage lines and tables."""
    from egeunet_deploy.export import export_all
    from egeunet_deploy.model.bundled import DEFAULT_WEIGHTS, SAMPLE_DATA
    from egeunet_deploy.model.data import load_split

    from .bench import bench_host
    from .bench import summary_lines as bench_lines
    from .drift import run_drift
    from .drift import summary_lines as drift_lines

    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(data) if data is not None else SAMPLE_DATA
    weights_path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if not weights_path.is_file():
        raise FileNotFoundError(f"weights file not found: {weights_path}")
    if data == SAMPLE_DATA:
        _say(f"no --data: using the bundled ISIC 2017 sample ({SAMPLE_DATA})", quiet)
    test_set = load_split(data, split, progress=progress)  # fail early on bad data, before minutes of exporting
    if test_set.masks is None:
        raise ValueError(f"{data} [{split}] has no masks: the drift report needs ground truth")
    stages: dict[str, float] = {}

    t = time.perf_counter()
    _say("1/4 calibration set", quiet)
    calib, calib_source = calibrate(data, out / "calibration.npz", progress, quiet)
    stages["calibrate"] = time.perf_counter() - t

    t = time.perf_counter()
    _say("2/4 export every target this OS supports", quiet)
    results = export_all(weights=weights, out_dir=out / "artifacts", calib=calib, targets=targets or None,
                         blame=blame, log=None if quiet else print)
    exports = [_result_row(r) for r in results]
    stages["export"] = time.perf_counter() - t
    artifacts = [Path(r["path"]) for r in exports if _export_ok(r)]

    t = time.perf_counter()
    _say(f"3/4 drift report on {len(test_set)} images of [{split}]", quiet)
    drift = run_drift(artifacts, data, split=split, out=out / "drift", tolerance=tolerance, weights=weights,
                      progress=progress, loaded=test_set) if artifacts else None
    stages["drift"] = time.perf_counter() - t

    t = time.perf_counter()
    d_runs, d_warmup = default_bench_budget()
    runs, warmup = runs or d_runs, d_warmup if warmup is None else warmup
    runnable = [p for p in artifacts if not _skipped_in(drift, p)]
    _say(f"4/4 latency: {len(runnable)} artifact(s) + PyTorch, threads {list(threads)}, {runs} runs", quiet)
    bench = bench_host([*runnable, weights_path], threads=list(threads), runs=runs, warmup=warmup,
                       e2e_runs=min(runs, 5), progress=progress)
    (out / "bench").mkdir(exist_ok=True)
    atomic_write_bytes(out / "bench" / "bench.json", json.dumps(bench, indent=2).encode())
    bench_png = rep.bench_figure([b for b in bench if b["results"]], out / "bench" / "bench.png")
    stages["bench"] = time.perf_counter() - t

    result = {
        "weights": str(weights_path.resolve()), "data": str(data.resolve()), "split": split,
        "calibration": {"file": str(calib), "source": calib_source}, "exports": exports,
        "drift": _drift_digest(drift), "bench": bench, "table": summary_table(exports, drift, bench),
        "stages_s": stages, "total_s": time.perf_counter() - t_start,
    }
    export_failed = [r for r in exports if r.get("status") == "failed"]  # "skipped": cannot build on this OS
    result["passed"] = not export_failed and bool(drift and drift["passed"])
    atomic_write_bytes(out / "deploy.json", json.dumps(result, indent=2).encode())
    atomic_write_bytes(out / "report.html", deploy_html(result, drift, bench_png).encode())
    if not quiet:
        if drift:
            print("\n".join(drift_lines(drift)))
        print("\n".join(bench_lines(bench)))
        verdict = "PASSED" if result["passed"] else "FAILED"
        print(f"[deploy] {verdict} in {result['total_s']:.0f} s: {out / 'report.html'}")
    return result


def _skipped_in(drift: dict | None, path: Path) -> bool:
    if not drift:
        return False
    rec = next((r for r in drift["artifacts"] if r["file"] == str(path)), None)
    return bool(rec and rec["status"] in ("skipped", "error"))


def _drift_digest(drift: dict | None) -> dict | None:
    if drift is None:
        return None
    return {"json": "drift/drift.json", "passed": drift["passed"], "summary": drift["summary"],
            "reference": drift["reference"]["pooled"], "n_images": drift["n_images"]}


def summary_table(exports: list[dict], drift: dict | None, bench: list[dict]) -> list[dict]:
    """One row per exported artifact (failed exports included), joined across the three stages by file."""
    rows = []
    drift_by = {r["file"]: r for r in (drift or {}).get("artifacts", [])}
    bench_by = {b["artifact"]: b for b in bench}
    for e in exports:
        path = e.get("path")
        d = drift_by.get(path or "", {})
        b = bench_by.get(path or "", {})
        p50 = {x["threads"]: x["latency_ms"]["p50"] for x in b.get("results", [])}
        rows.append({
            "file": Path(path).name if path else None, "target": e.get("target"), "precision": e.get("precision"),
            "export_ok": _export_ok(e), "export_status": e.get("status"), "export_error": e.get("error"),
            "size_bytes": e.get("size_bytes") or b.get("size_bytes"), "export_s": e.get("seconds"),
            "dsc": (d.get("pooled") or {}).get("dsc"), "delta_dsc": (d.get("delta") or {}).get("dsc"),
            "agreement": (d.get("agreement") or {}).get("dsc"), "drift_status": d.get("status"),
            "drift_reason": d.get("reason"), "p50_ms": p50,
            "runtime": (b.get("runtime") or d.get("runtime") or {}).get("provider"),
        })
    ref = next((b for b in bench if b["artifact"].endswith((".pt", ".pth"))), None)
    if ref is not None:
        rows.append({"file": Path(ref["artifact"]).name, "target": "pytorch", "precision": "fp32", "export_ok": True,
                     "size_bytes": ref["size_bytes"],
                     "dsc": drift["reference"]["pooled"]["dsc"] if drift else None, "delta_dsc": 0.0,
                     "agreement": 1.0, "drift_status": "reference",
                     "p50_ms": {x["threads"]: x["latency_ms"]["p50"] for x in ref["results"]},
                     "runtime": (ref.get("runtime") or {}).get("provider")})
    return rows


def deploy_html(result: dict, drift: dict | None, bench_png: str) -> str:
    threads = sorted({t for row in result["table"] for t in row["p50_ms"]})
    rows = []
    for r in result["table"]:
        status = r["drift_status"] if r["export_ok"] else r.get("export_status", "failed")
        reason = r.get("drift_reason") or (r.get("export_error") if not r["export_ok"] else "") or ""
        rows.append([r["file"] or f"{r['target']} {r['precision']}", r["target"], r["precision"],
                     rep._f((r["size_bytes"] or 0) / 1024, ".0f") if r["size_bytes"] else "-",
                     rep._f(r.get("export_s"), ".1f"), rep._f(r["dsc"]), rep._f(r["delta_dsc"], "+.5f"),
                     rep._f(r["agreement"]), *[rep._f(r["p50_ms"].get(t), ".2f") for t in threads],
                     r.get("runtime") or "-", rep.status_badge(status) if status != "reference" else "reference",
                     reason])
    headers = ["artifact", "target", "precision", "size KB", "export s", "DSC", "ΔDSC", "agreement",
               *[f"p50 ms @{t} thr" for t in threads], "runtime", "drift", "notes"]
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result["stages_s"].items())
    body = [f"<p>Weights <code>{rep.esc(result['weights'])}</code>; data <code>{rep.esc(result['data'])}</code> "
            f"[{rep.esc(result['split'])}]; calibration from <code>{rep.esc(result['calibration']['source'])}</code>"
            f" (train split). Total {result['total_s']:.0f} s ({stages}).</p>",
            rep.table(headers, rows, raw_cols=(len(headers) - 2,)),
            "<p class='note'>DSC: pooled over the split as the paper computes it; ΔDSC and agreement are against "
            "the PyTorch model with the same weights on the same images; latency is the median of interleaved runs "
            "on this host (compare within this page only). Details: <a href='drift/report.html'>drift report</a>, "
            "<a href='drift/drift.json'>drift.json</a>, <a href='bench/bench.json'>bench.json</a>, "
            "<a href='deploy.json'>deploy.json</a>.</p>",
            "<h2>Latency</h2>"]
    warning = contention_warning(result["bench"])
    if warning:
        body.append(f"<p class='note'><b>{rep.esc(warning)}</b></p>")
    body += [rep.img(f"bench/{bench_png}", "latency"), rep.bench_table(result["bench"])]
    if drift is not None:
        body += ["<h2>Accuracy drift</h2>", rep.drift_body(drift, prefix="drift/")]
    verdict = "PASSED" if result["passed"] else "FAILED"
    return rep.page(f"EGE-UNet deploy report: {verdict}", "".join(body))
