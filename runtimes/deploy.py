"""``egeunet deploy``: the whole product in one command, ending in one HTML page.

calibrate (train split of DATA) -> export every target this OS supports -> drift report on the test split ->
latency bench (1 and 2 threads, the PyTorch weights included for scale) -> ``OUT/report.html`` (first screen: the
verdict, which artifact to ship for which device, one table of size, accuracy, latency and drift verdict per
artifact; plots, blame rankings and differing images in collapsible sections), plus ``OUT/deploy.json``. With no
arguments it uses the shipped weights and the bundled real ISIC sample (train: 64 pairs for calibration, test: 32
pairs), so a first run takes minutes on a laptop. Each stage keeps going when one artifact fails and says so in
the table; the exit status is non-zero if any export or drift check failed.
Every check that takes a second (options, weights, tolerances, data, the output folders) runs before stage 1 and
before OUT is created; a run then first removes the previous run's ``deploy.json`` and ``report.html``, so only a
finished run has them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from egeunet_deploy.model.checkpoint import atomic_write_bytes

from . import report as rep
from .bench import contention_warning
from .report import Footnotes


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


def calibrate(data: Path, out: Path, progress: bool, quiet: bool = False,
              skip_bad: bool = False) -> tuple[Path, str, list[str]]:
    """Build the int8 calibration set from DATA's train split (the bundled sample's when DATA has none).
    Returns (set, where it came from, the files ``skip_bad`` passed over)."""
    from egeunet_deploy.calibration import build_calibration_set, load_calibration_set
    from egeunet_deploy.model.bundled import SAMPLE_DATA
    from egeunet_deploy.model.data import DataError, find_pairs, resolve_layout

    source = data
    try:
        resolve_layout(data, "train")
    except DataError:
        source = SAMPLE_DATA
        _say(f"{data} has no train split: calibrating on the bundled sample's train split instead", quiet)
    pairs, _ = find_pairs(source, "train", skip_bad=skip_bad)
    calib = build_calibration_set(source, out, split="train", num=min(200, len(pairs)), progress=progress,
                                  skip_bad=skip_bad)
    skipped = load_calibration_set(calib)[1]["source"]["skipped"] if skip_bad else []
    return Path(calib), str(source), skipped


def check_arguments(weights: Path, out: Path, targets: list[str] | None, precisions: list[str] | None,
                    threads: list[int] | None, runs: int | None, warmup: int | None) -> tuple[list[int], int, int]:
    """Every argument check that takes a second, before minutes of calibrating and exporting and before ``out`` is
    created. Returns (threads, runs, warmup) with the host's defaults filled in."""
    from egeunet_deploy.export.api import plan
    from egeunet_deploy.model.checkpoint import load_model

    from .base import check_output_path
    from .bench import check_budget, parse_threads

    plan(targets, precisions)  # unknown target or precision, or a pair that exports nothing
    d_runs, d_warmup = default_bench_budget()
    runs, warmup = d_runs if runs is None else runs, d_warmup if warmup is None else warmup
    check_budget(runs, warmup)
    threads = parse_threads(default_threads() if threads is None else threads)
    check_output_path(out, "--out", folder=True)
    load_model(weights)  # a missing or damaged weights file fails now, not at the export stage
    return threads, runs, warmup


def default_threads() -> list[int]:
    """1 and 2 threads for the latency table, as far as this host has cores."""
    return [t for t in (1, 2) if t <= (os.cpu_count() or 1)]


def clear_previous_verdict(out: Path) -> None:
    """Remove a previous run's top-level ``deploy.json`` and ``report.html`` before this run writes anything: only
    a finished run has them, so an interrupted re-run cannot leave an old PASSED beside new, partial stage folders.
    (Simpler than swapping the whole folder: the stage folders are rewritten each run, drift's whole.)"""
    for name in ("deploy.json", "report.html"):
        (out / name).unlink(missing_ok=True)


def deploy(
    weights: Path | str | None = None,
    data: Path | str | None = None,
    out: Path | str = "deploy",
    split: str = "test",
    targets: list[str] | None = None,
    threads: list[int] | None = None,
    runs: int | None = None,
    warmup: int | None = None,
    tolerance: Path | str | None = None,
    progress: bool = True,
    quiet: bool = False,
    blame: bool = True,
    precisions: list[str] | None = None,
    skip_bad: bool = False,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Run the four stages into ``out``; ``progress`` draws bars, ``quiet`` silences the stage lines and tables.
    ``threads`` defaults to 1 and 2 (as far as the host has cores); ``skip_bad`` passes over unpaired or unreadable
    files of the calibration and drift splits, and the result lists them (``skipped_files``). ``log`` receives the
    export stage's lines (the command line passes one that folds the int8 blame's per-block lines into a bar)."""
    from egeunet_deploy.export import export_all
    from egeunet_deploy.export.metadata import annotate_manifest
    from egeunet_deploy.model.bundled import DEFAULT_WEIGHTS, SAMPLE_DATA
    from egeunet_deploy.model.data import load_split

    from .bench import bench_host
    from .bench import summary_lines as bench_lines
    from .drift import check_report_folder, load_tolerances, run_drift, skipped_lines
    from .drift import summary_lines as drift_lines

    t_start = time.perf_counter()
    out = Path(out)
    data = Path(data) if data is not None else SAMPLE_DATA
    weights_path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    threads, runs, warmup = check_arguments(weights_path, out, targets, precisions, threads, runs, warmup)
    load_tolerances(tolerance)
    check_report_folder(out / "drift")
    if data == SAMPLE_DATA:
        _say(f"no --data: using the bundled ISIC 2017 sample ({SAMPLE_DATA})", quiet)
    # fail early on bad data, before minutes of exporting
    test_set = load_split(data, split, skip_bad=skip_bad, progress=progress)
    if test_set.masks is None:
        raise ValueError(f"{data} [{split}] has no masks: the drift report needs ground truth")
    out.mkdir(parents=True, exist_ok=True)
    clear_previous_verdict(out)
    stages: dict[str, float] = {}

    t = time.perf_counter()
    _say("1/4 calibration set", quiet)
    calib, calib_source, calib_skipped = calibrate(data, out / "calibration.npz", progress, quiet, skip_bad)
    stages["calibrate"] = time.perf_counter() - t

    t = time.perf_counter()
    _say("2/4 export every target this OS supports", quiet)
    results = export_all(weights=weights, out_dir=out / "artifacts", calib=calib, targets=targets or None,
                         precisions=precisions or None, blame=blame, log=None if quiet else log)
    if hasattr(log, "finish"):
        log.finish()
    exports = [_result_row(r) for r in results]
    stages["export"] = time.perf_counter() - t
    artifacts = [Path(r["path"]) for r in exports if _export_ok(r)]

    t = time.perf_counter()
    _say(f"3/4 drift report on {len(test_set)} images of [{split}]", quiet)
    drift = run_drift(artifacts, data, split=split, out=out / "drift", tolerance=tolerance, weights=weights,
                      progress=progress, loaded=test_set) if artifacts else None
    for row in (drift or {}).get("artifacts", []):  # where each artifact runs, beside it in the export manifest
        placed = {k: row[k] for k in rep.ACCELERATOR_KEYS if k in row}
        if placed:
            annotate_manifest(out / "artifacts", Path(row["file"]).name, placed)
    stages["drift"] = time.perf_counter() - t

    t = time.perf_counter()
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
        "skipped_files": {"calibration": calib_skipped,
                          "drift": [f"{s.path}: {s.reason}" for s in test_set.skipped]},
    }
    export_failed = [r for r in exports if r.get("status") == "failed"]  # "skipped": cannot build on this OS
    result["passed"] = not export_failed and bool(drift and drift["passed"])
    atomic_write_bytes(out / "deploy.json", json.dumps(result, indent=2).encode())
    atomic_write_bytes(out / "report.html", deploy_html(result, drift, bench_png).encode())
    if not quiet:
        if drift:
            print("\n".join(drift_lines(drift)))
        print("\n".join(bench_lines(bench)))
        for stage in ("calibration",) if drift else ("calibration", "drift"):  # drift's table lists its own
            for line in skipped_lines(result["skipped_files"][stage]):
                print(f"[deploy] {stage}: {line}")
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
            # where else it runs, when the runners of those targets say so (report.ACCELERATOR_KEYS)
            **{k: d[k] for k in rep.ACCELERATOR_KEYS if k in d},
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


def verdict_text(result: dict, drift: dict | None) -> str:
    """One sentence: what passed, on how many images, and what was not checked here and why."""
    exports = result["exports"]
    failed = [e for e in exports if e.get("status") == "failed"]
    not_built = [e for e in exports if e.get("status") == "skipped"]
    parts = []
    if drift is not None:
        rows, s = drift["artifacts"], drift["summary"]
        ran = s["passed"] + s["failed"] + s["error"]
        parts.append(f"{s['passed']} of the {ran} artifacts that run on this host stay within tolerance of the "
                     f"PyTorch model on {drift['n_images']} images of [{result['split']}]")
        bad = [r["name"] for r in rows if r["status"] in ("failed", "error")]
        if bad:
            parts.append(f"not within it: {', '.join(bad)}")
        if s["skipped"]:
            kinds = sorted({r["format"] for r in rows if r["status"] == "skipped"})
            parts.append(f"{s['skipped']} exported but not run here ({', '.join(kinds)}: see the notes)")
    else:
        parts.append("no artifact could be checked against PyTorch")
    if failed:
        parts.append(f"{len(failed)} export(s) failed")
    if not_built:
        parts.append(f"{len(not_built)} not exportable on this OS")
    return "; ".join(parts) + "."


def deploy_html(result: dict, drift: dict | None, bench_png: str) -> str:
    """The page. First screen: the verdict, which artifact to ship for which device and what it costs, then every
    artifact in one table that fits a 1280 px window (long reasons as numbered notes). Latency and drift details
    are collapsible sections below, and links lead to the full drift report and the JSON files."""
    notes = Footnotes("note")
    rows = result["table"]
    body = [rep.verdict_banner(result["passed"], verdict_text(result, drift)),
            "<h2>Which artifact for which device</h2>", rep.device_summary(rows, notes),
            "<h2>Every artifact</h2>", rep.summary_table(rows, notes), notes.html(),
            "<p class='note'>DSC: pooled over the split as the paper computes it; ΔDSC (a fraction) and mask "
            "agreement (Dice between the artifact's and PyTorch's masks) are against the PyTorch model with the same "
            "weights on the same images; latency: median of interleaved runs on this host's CPU (compare within this "
            "page only). Details: <a href='drift/report.html'>drift report</a>, <a href='drift/drift.json'>"
            "drift.json</a>, <a href='bench/bench.json'>bench.json</a>, <a href='deploy.json'>deploy.json</a>.</p>"]
    warning = contention_warning(result["bench"])
    if warning:
        body.append(f"<p class='note'><b>{rep.esc(warning)}</b></p>")
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result["stages_s"].items())
    body.append(f"<p class='note'>Weights <code>{rep.esc(result['weights'])}</code>; data "
                f"<code>{rep.esc(result['data'])}</code> [{rep.esc(result['split'])}]; calibration from "
                f"<code>{rep.esc(result['calibration']['source'])}</code> (train split). "
                f"{machine_load(result['bench'])}"
                f" Total {result['total_s']:.0f} s ({stages}).</p>")
    calib_skipped = (result.get("skipped_files") or {}).get("calibration")
    if calib_skipped:
        body.append("<h2>Calibration</h2>" + rep.skipped_note(calib_skipped))
    exports = [[e.get("target"), e.get("precision"), e.get("status"), rep._f(e.get("seconds"), ".1f"),
                Path(e["path"]).name if e.get("path") else "-"] for e in result["exports"]]
    body.append("<h2>Details</h2>")
    body.append(rep.details("Latency: chart and every measurement",
                            rep.img(f"bench/{bench_png}", "latency") + rep.bench_table(result["bench"])))
    body.append(rep.details("Export: seconds per artifact",
                            rep.table(["target", "precision", "status", "export s", "artifact"], exports)))
    if drift is not None:
        body.append(rep.details("Accuracy drift: figures, by lesion size, int8 blame, images that differ",
                                rep.drift_body(drift, prefix="drift/")))
    verdict = "PASSED" if result["passed"] else "FAILED"
    return rep.page(f"EGE-UNet deploy report: {verdict}", "".join(body))


def machine_load(bench: list[dict]) -> str:
    """How busy other processes kept this host while the latency was measured (it decides whether to trust it)."""
    host = next((b.get("host") for b in bench if b.get("host")), None) or {}
    cores = (host.get("contention") or {}).get("other_processes_cores")
    if cores is None:
        return ""
    return f"Other processes kept {cores:.2f} of {host.get('cpu_count')} CPU cores busy during the latency runs."
