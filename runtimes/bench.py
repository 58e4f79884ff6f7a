"""``egeunet bench``: latency of artifacts on this host (CPU, or CUDA when present), measured fairly.

Per artifact and thread count: init time (load + session build), first inference, then ``warmup`` untimed and
``runs`` timed calls of ``Runner.run`` on one real contract image (p50/p90/p99/mean, throughput = 1000 / mean), the
memory the runner added and the process's peak RSS, the artifact's size, and the end-to-end time an app pays per
photo: decode the file + resize to the contract size + inference + upsample the probability to the photo's size
and threshold it. Several artifacts are loaded side by side and timed interleaved in one process (round robin,
order rotated each round), so a noisy machine slows all of them alike and their ratios stay meaningful; compare
figures only within one run.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from egeunet_deploy.export.targets import FOLDER_SUFFIXES

from .base import (
    DEVICES,
    RUNNERS,
    ArtifactError,
    RuntimeUnavailable,
    artifact_kind,
    host_info,
    runner_class_for,
)

ANDROID_MAX_THREADS = 64
"""Most threads a phone benchmark may ask for: the phone's cores are not known before adb is asked, and no phone has
more; the point is to refuse typos like 99999 before anything runs."""


def thread_limit(device: str) -> tuple[int, str]:
    """(most threads, what limits them) for a benchmark device. Host runtimes (cpu, cuda: its CPU side) are held to
    this host's cores: ONNX Runtime builds a pool of as many threads as asked and ran out of 16 GB at 99999."""
    if device == "android":
        return ANDROID_MAX_THREADS, f"the most a phone benchmark takes ({ANDROID_MAX_THREADS})"
    cores = os.cpu_count() or 1
    return cores, f"this host's {cores} CPU core{'s' if cores > 1 else ''}"


def parse_threads(text: str | list[int] | tuple[int, ...], device: str = "cpu") -> list[int]:
    """'1,2,4' -> [1, 2, 4]; refuses empty entries, zero, negatives, duplicates, junk, and more threads than the
    device has (:func:`thread_limit`), with a clear message."""
    if isinstance(text, (list, tuple)):
        values = list(text)
    else:
        entries = str(text).replace(" ", "").split(",")
        if "" in entries and entries != [""]:
            raise ValueError(f"--threads {text!r} has an empty entry; give comma-separated positive integers like "
                             f"1,2,4")
        try:
            values = [int(t) for t in entries if t]
        except ValueError:
            raise ValueError(f"--threads takes comma-separated positive integers like 1,2,4; got {text!r}") from None
    if not values or any(v < 1 for v in values) or len(set(values)) != len(values):
        raise ValueError(f"--threads takes distinct positive integers like 1,2,4; got {text!r}")
    most, why = thread_limit(device)
    if max(values) > most:
        raise ValueError(f"--threads {max(values)} is more than {why}; give at most {most}")
    return values


def check_budget(runs: int, warmup: int, e2e_runs: int | None = None) -> None:
    """Refuse run counts that make no sense, before anything is loaded (one message shape for every option)."""
    for option, value, least in (("--runs", runs, 1), ("--warmup", warmup, 0), ("--e2e-runs", e2e_runs, 0)):
        if value is not None and value < least:
            raise ValueError(f"{option} must be >= {least} (got {value})")


def split_runtime(artifact: Path | str, runtime: str | None = None) -> tuple[Path, str | None]:
    """``FILE@RUNTIME`` -> (FILE, RUNTIME): one artifact timed by a named runner (``egeunet_fp32.onnx@openvino``)
    beside the same file in its default runner, in one interleaved run; a plain path keeps ``runtime``."""
    path = Path(artifact)
    head, sep, name = str(artifact).rpartition("@")
    if sep and name in RUNNERS and not path.exists():
        return Path(head), name
    return path, runtime


def check_artifact_paths(artifacts: list[Path | str], runtime: str | None = None) -> list[Path]:
    """Every ``--artifact`` exists, is a file (or a folder artifact: a Core ML ``.mlpackage``) and has a runtime
    (``runtime``, or the one named by ``FILE@RUNTIME``: that one, e.g. ``tflm``, must load its kind); checked before
    anything is loaded or measured. The paths come back as given (``@RUNTIME`` kept: :func:`split_runtime`)."""
    paths = [Path(a) for a in artifacts]
    for a in paths:
        p, rt = split_runtime(a, runtime)
        if not p.exists():
            raise FileNotFoundError(f"artifact not found: {p}")
        if p.is_dir() and artifact_kind(p) not in FOLDER_SUFFIXES:
            raise ValueError(f"--artifact takes a file; {p} is a folder")
        runner_class_for(p, rt)  # unknown suffix, or one the chosen runtime does not load
    return paths


def latency_stats(samples_ms) -> dict:
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "std": None, "min": None, "max": None, "n": 0}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(a.mean()), "std": float(a.std()),
            "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


def artifact_size(path: Path) -> int:
    if path.is_dir():  # .mlpackage
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def current_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KB on Linux


def default_image() -> Path:
    from egeunet_deploy.model.bundled import SAMPLE_DATA
    from egeunet_deploy.model.imageio import IMAGE_EXTENSIONS

    images = sorted(p for p in (SAMPLE_DATA / "test" / "images").iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    return images[0]


class _E2E:
    """The app's path for one photo: decode, resize, infer, upsample + threshold at the photo's size."""

    def __init__(self, image_path: Path) -> None:
        self.path = image_path

    def __call__(self, runner) -> dict:
        from egeunet_deploy.model.contract import binarize, resize_rgb
        from egeunet_deploy.model.evaluate import upsample_prob
        from egeunet_deploy.model.imageio import read_rgb

        t0 = time.perf_counter()
        im = read_rgb(self.path)
        t1 = time.perf_counter()
        x = resize_rgb(im)[None]
        t2 = time.perf_counter()
        prob = runner.run(x)[0]
        t3 = time.perf_counter()
        binarize(upsample_prob(prob, (im.height, im.width)))
        t4 = time.perf_counter()
        return {"decode": t1 - t0, "resize": t2 - t1, "infer": t3 - t2, "postprocess": t4 - t3, "total": t4 - t0}


CONTENTION_WARN_CORES = 0.25
"""Warn when other processes kept more than this many CPU cores busy, on average, while the benchmark ran."""


def _cpu_busy_seconds() -> float | None:
    """CPU time all processes on this host have spent busy since boot (Linux /proc/stat), None elsewhere."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class ContentionMeter:
    """How many cores *other* processes kept busy while we measured: host busy time minus this process's CPU time (and
    what its own worker processes report with ``stop(workers_cpu_seconds=...)``), over the wall time. Why: latency on
    a shared machine is inflated and noisy (a training run on the other core of this 2-vCPU host turned 13 ms into
    18-31 ms, and PyTorch at 2 threads into a second), and the figures alone do not say so; the report must."""

    def __init__(self) -> None:
        self.wall0, self.own0, self.busy0 = time.perf_counter(), time.process_time(), _cpu_busy_seconds()

    def stop(self, workers_cpu_seconds: float = 0.0) -> dict:
        busy1 = _cpu_busy_seconds()
        wall = time.perf_counter() - self.wall0
        if self.busy0 is None or busy1 is None or wall <= 0:
            return {"other_processes_cores": None, "note": "no /proc/stat here: contention not measured"}
        own = time.process_time() - self.own0 + workers_cpu_seconds
        others = max(0.0, (busy1 - self.busy0) - own) / wall
        return {"other_processes_cores": round(others, 3), "seconds": round(wall, 1)}


def contention_warning(records: list[dict]) -> str | None:
    """A plain warning when the benchmark shared the CPU with other work (None when it did not or was unmeasured)."""
    host = next((r.get("host") for r in records if r.get("host")), None) or {}
    cores = (host.get("contention") or {}).get("other_processes_cores")
    if cores is None or cores <= CONTENTION_WARN_CORES:
        return None
    return (f"warning: other processes kept {cores:.2f} of {host.get('cpu_count')} CPU cores busy during this "
            f"benchmark: absolute latencies are inflated and noisy; ratios between artifacts (interleaved) hold "
            f"better. Stop other work for figures to publish.")


def _record(given: Path) -> dict:
    path, _ = split_runtime(given)
    return {"artifact": str(path), "name": given.name, "size_bytes": artifact_size(path) if path.exists() else None,
            "device": None, "status": "ok", "reason": None, "runtime": None, "results": []}


def bench_host(
    artifacts: list[Path | str],
    threads: list[int] = (1,),
    runs: int = 50,
    warmup: int = 5,
    device: str = "auto",
    e2e_runs: int | None = None,
    image: Path | str | None = None,
    progress: bool = True,
    runtime: str | None = None,
) -> list[dict]:
    """Benchmark artifacts (and/or PyTorch .pt weights) on this host, interleaved; one record per artifact.
    ``runtime`` names the runner (e.g. ``tflm``) instead of the default for each suffix."""
    check_budget(runs, warmup, e2e_runs)
    if device not in DEVICES or device == "android":
        raise ValueError(f"host benchmark device must be one of {', '.join(d for d in DEVICES if d != 'android')}, "
                         f"got {device!r} (android: bench_android)")
    threads = parse_threads(threads, device)
    paths = check_artifact_paths(artifacts, runtime)
    from egeunet_deploy.model.contract import resize_rgb
    from egeunet_deploy.model.imageio import read_rgb

    image = Path(image) if image else default_image()
    x = resize_rgb(read_rgb(image))[None]
    e2e = _E2E(image)
    e2e_runs = min(runs, 20) if e2e_runs is None else e2e_runs
    records = [_record(p) for p in paths]
    host = host_info()
    meter = ContentionMeter()
    steps = [(t, phase) for t in threads for phase in ("load", "warmup", "timed", "e2e")]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(steps), desc="bench", unit="step", leave=False)
    for t in threads:
        live = []  # (record, runner, row)
        for rec, p in zip(records, paths, strict=True):
            if rec["status"] in ("skipped", "error"):
                continue
            p, rt = split_runtime(p, runtime)
            cls = runner_class_for(p, rt)
            gc.collect()
            rss0 = current_rss_mb()
            runner = cls(threads=t, device=device)
            t0 = time.perf_counter()
            try:
                runner.load(p)
                t1 = time.perf_counter()
                runner.run(x)
                t2 = time.perf_counter()
            except RuntimeUnavailable as e:
                rec.update({"status": "skipped", "reason": str(e)})
                continue
            except ArtifactError as e:
                rec.update({"status": "error", "reason": str(e)})
                continue
            rss1 = current_rss_mb()
            info = runner.info()
            rec.update({"device": info.get("device", "cpu"), "runtime": info, "format": info.get("format"),
                        "precision": info.get("precision")})
            row = {"threads": t, "init_ms": 1e3 * (t1 - t0), "first_inference_ms": 1e3 * (t2 - t1),
                   "rss_delta_mb": (rss1 - rss0) if rss0 is not None and rss1 is not None else None,
                   "_lat": [], "_e2e": []}
            live.append((rec, runner, row))
        if bar is not None:
            bar.update(1)
        for _ in range(warmup):
            for _, runner, _ in live:
                runner.run(x)
        if bar is not None:
            bar.update(1)
        for i in range(runs):
            k = i % max(1, len(live))
            for _, runner, row in live[k:] + live[:k]:  # rotate who goes first each round
                s = time.perf_counter()
                runner.run(x)
                row["_lat"].append(1e3 * (time.perf_counter() - s))
        if bar is not None:
            bar.update(1)
        for i in range(e2e_runs):
            k = i % max(1, len(live))
            for _, runner, row in live[k:] + live[:k]:
                row["_e2e"].append(e2e(runner))
        if bar is not None:
            bar.update(1)
        peak = peak_rss_mb()
        for rec, runner, row in live:
            lat = latency_stats(row.pop("_lat"))
            parts = row.pop("_e2e")
            e2e_ms = latency_stats([1e3 * p["total"] for p in parts])
            if parts:
                e2e_ms["breakdown_mean"] = {k: 1e3 * float(np.mean([p[k] for p in parts]))
                                            for k in ("decode", "resize", "infer", "postprocess")}
            row.update({"latency_ms": lat, "throughput_ips": 1e3 / lat["mean"] if lat["mean"] else None,
                        "e2e_ms": e2e_ms, "peak_rss_mb": peak, "runs": runs, "warmup": warmup})
            rec["results"].append(row)
            runner.close()
        del live
        gc.collect()
    if bar is not None:
        bar.close()
    host["contention"] = meter.stop()
    for rec in records:
        rec["host"] = host
        rec["image"] = str(image)
        rec["notes"] = ("latency_ms times Runner.run on one uint8 256x256 image (input prep + inference + output "
                        "reshape); e2e_ms adds decode + resize + upsample/threshold at the photo's size; "
                        "peak_rss_mb is the whole process's peak (all artifacts loaded side by side), rss_delta_mb "
                        "what loading this runner added")
        if rec["device"] is None:
            rec["device"] = device if device != "auto" else "cpu"
    return records


def check_measured(records: list[dict]) -> None:
    """Raise when not one artifact could be measured: the reasons then belong in one error (exit status 2), not in a
    table of ERROR rows with nothing on stderr."""
    if not records or any(r["results"] for r in records):
        return
    reasons = [r["reason"] if str(r["reason"]).startswith(r["artifact"]) else f"{r['artifact']}: {r['reason']}"
               for r in records]
    if len(reasons) == 1:
        raise ValueError(reasons[0])
    raise ValueError(f"none of the {len(reasons)} artifacts could be benchmarked:\n  " + "\n  ".join(reasons))


def accelerator_notes(paths: list[Path], verbose: bool = False, runtime: str | None = None) -> list[str]:
    """What accelerators the backends of these artifacts have, so a CPU-only run says so plainly: a present one gets
    its own line; the absent ones share one short line (``verbose``: one line each, with the reason)."""
    present, absent = [], []
    seen = set()
    for p in paths:
        cls = runner_class_for(*split_runtime(p, runtime))
        if cls.backend in seen:
            continue
        seen.add(cls.backend)
        for name, (ok, detail) in cls.accelerators().items():
            if ok:
                present.append(f"{cls.backend} {name}: present, {detail}")
            else:
                absent.append((f"{cls.backend} {name}: absent", detail))
    lines = list(present)
    if verbose:
        lines += [f"{what}: {why}" for what, why in absent]
    elif absent:
        lines.append(f"{', '.join(what for what, _ in absent)} (timing on the CPU; --verbose or `egeunet doctor` "
                     f"says why)")
    return lines


def machine_load_line(records: list[dict]) -> str:
    """How busy other processes kept this host while the benchmark ran: it decides whether a figure can be trusted,
    so it is printed, not only stored in --json."""
    host = next((r.get("host") for r in records if r.get("host")), None) or {}
    contention = host.get("contention") or {}
    cores = contention.get("other_processes_cores")
    if cores is None:
        return f"machine load: not measured ({contention.get('note') or 'no /proc/stat here'})"
    verdict = "quiet enough" if cores <= CONTENTION_WARN_CORES else "busy: see the warning below"
    return (f"machine load: other processes kept {cores:.2f} of {host.get('cpu_count')} CPU cores busy while this "
            f"ran ({verdict}; the limit is {CONTENTION_WARN_CORES})")


def summary_lines(records: list[dict]) -> list[str]:
    lines = [f"{'artifact':30} {'device':7} {'provider':22} {'thr':>3} {'p50':>8} {'p90':>8} {'p99':>8} "
             f"{'mean':>8} {'img/s':>7} {'init':>8} {'first':>8} {'e2e p50':>8} {'KB':>6} {'+MB':>5} {'peakMB':>6}"]
    for r in records:
        if r["status"] != "ok" and not r["results"]:
            lines.append(f"{r['name'][:30]:30} {r['status'].upper()}: {r['reason']}")
            continue
        prov = str((r.get("runtime") or {}).get("provider", "-"))[:22]
        for x in r["results"]:
            lat, e = x["latency_ms"], x.get("e2e_ms") or {}

            def f(v, spec=".2f"):
                return "-" if v is None else format(v, spec)

            lines.append(f"{r['name'][:30]:30} {r['device'][:7]:7} {prov:22} {x['threads']:>3} {f(lat['p50']):>8} "
                         f"{f(lat['p90']):>8} {f(lat['p99']):>8} {f(lat['mean']):>8} "
                         f"{f(x.get('throughput_ips'), '.1f'):>7} {f(x.get('init_ms'), '.1f'):>8} "
                         f"{f(x.get('first_inference_ms'), '.1f'):>8} {f(e.get('p50')):>8} "
                         f"{f((r['size_bytes'] or 0) / 1024, '.0f'):>6} {f(x.get('rss_delta_mb'), '.0f'):>5} "
                         f"{f(x.get('peak_rss_mb'), '.0f'):>6}")
    lines.append("milliseconds; latency = Runner.run on one image, interleaved across artifacts in one process; "
                 "+MB = RSS the runner added at load, peakMB = whole process")
    if any(r.get("host") for r in records):
        lines.append(machine_load_line(records))
    for r in records:  # TFLite Micro: the RAM an MCU must give it
        arena = (r.get("runtime") or {}).get("arena_bytes")
        if arena:
            lines.append(f"{r['name']}: TFLite Micro tensor arena {arena:,} bytes ({arena / 1024:.0f} KiB); host "
                         f"latency of its reference kernels, not an MCU's")
    warning = contention_warning(records)
    if warning:
        lines.append(warning)
    return lines


def ratio_lines(records: list[dict]) -> list[str]:
    """p50 of each artifact relative to the first one, per thread count (fair: same process, interleaved)."""
    ok = [r for r in records if r["results"]]
    if len(ok) < 2:
        return []
    base = ok[0]
    lines = [f"p50 ratio to {base['name']}:"]
    for r in ok[1:]:
        parts = []
        for x in r["results"]:
            b = next((y for y in base["results"] if y["threads"] == x["threads"]), None)
            if b and b["latency_ms"]["p50"] and x["latency_ms"]["p50"]:
                parts.append(f"{x['threads']} thr {x['latency_ms']['p50'] / b['latency_ms']['p50']:.2f}x")
        lines.append(f"  {r['name']}: " + ", ".join(parts))
    return lines


def env_threads_note() -> str | None:
    v = os.environ.get("OMP_NUM_THREADS")
    return f"note: OMP_NUM_THREADS={v} is set; per-runtime thread settings still apply" if v else None
