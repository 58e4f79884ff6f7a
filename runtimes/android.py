"""``egeunet bench --device android``: TFLite's ``benchmark_model`` on a phone over adb, parsed into bench JSON.

Flow: find adb, pick the device (``--serial`` when several), read ``getprop`` (model, ABI, SoC, Android version),
push the ``benchmark_model`` binary (or use the one already on the phone) and the ``.tflite`` artifact to
``/data/local/tmp``, run it once per thread count, parse its output, remove the pushed model.

``benchmark_model`` has printed its results in several formats over the years; :func:`parse_benchmark_output`
reads all the ones we know (``tests/fixtures/android`` holds one text per variant):

- current: ``Inference timings in us: Init: X, First inference: Y, Warmup (avg): Z, Inference (avg): W`` after
  ``count=N first=.. curr=.. min=.. max=.. avg=.. std=..`` lines that newer builds extend with
  ``p5=.. median=.. p95=..``; averages are C++ stream doubles, so large values come as ``1.24027e+06``;
- memory: ``Memory footprint delta from the start of the tool (MB): init=A overall=B`` (older: ``Peak memory
  footprint (MB): init=A overall=B``) and, with ``--report_peak_memory_footprint``, ``Overall peak memory
  footprint (MB) via periodic monitoring: P``;
- legacy: ``Average inference timings in us: Warmup: .., Init: .., Inference: ..`` (or ``no stats: ..``);
- any of these behind a logcat or ``INFO:`` prefix.

The tool reports min/max/avg/std and, in newer builds, the median: p50 is that median when printed, and p90/p99
are left ``null`` (never invented).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from .base import read_spec

REMOTE_DIR = "/data/local/tmp/egeunet"
REMOTE_BINARY = "/data/local/tmp/benchmark_model"
BINARY_URL = ("https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/tools/nightly/"
              "latest/android_aarch64_benchmark_model")
PROPS = {
    "model": "ro.product.model",
    "manufacturer": "ro.product.manufacturer",
    "abi": "ro.product.cpu.abi",
    "abilist": "ro.product.cpu.abilist",
    "soc_manufacturer": "ro.soc.manufacturer",
    "soc_model": "ro.soc.model",
    "board_platform": "ro.board.platform",
    "hardware": "ro.hardware",
    "android_version": "ro.build.version.release",
    "sdk": "ro.build.version.sdk",
    "fingerprint": "ro.build.fingerprint",
}

NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RE = {
    "summary": re.compile(rf"Inference timings in us: Init: ({NUM}), First inference: ({NUM}), "
                          rf"Warmup \(avg\): ({NUM}), Inference \(avg\): ({NUM})"),
    "legacy": re.compile(rf"Average inference timings in us: Warmup: ({NUM}), Init: ({NUM}), "
                         rf"(?:Inference|no stats): ({NUM})"),
    "count": re.compile(rf"\bcount=(\d+)((?:\s+\w+={NUM})*)"),
    "pair": re.compile(rf"(\w+)=({NUM})"),
    "init": re.compile(rf"Initialized session in ({NUM})\s*ms"),
    "size": re.compile(rf"The input model file size \(MB\): ({NUM})"),
    "memory": re.compile(rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
                         rf"init=({NUM}) overall=({NUM})"),
    "peak": re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({NUM})"),
    "applied": re.compile(r"Explicitly applied (\S+) delegate, and the model graph will be (completely|partially) "
                          r"executed by the delegate(?: w/ (\d+) delegate kernels)?"),
    "not_applied": re.compile(r"Though (\S+) delegate is explicitly applied, the model graph will not be executed"),
    "replacing": re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]+)\) node, "
                            r"yielding (\d+) partitions"),
    "threads": re.compile(r"(?:#threads used for CPU inference|Num threads): \[(\d+)\]"),
    "error": re.compile(r"(?:^|\s)(?:ERROR: .*|E tflite\s*: .*|Failed to .*|.*inaccessible or not found.*)$"),
}


class AndroidError(ValueError):
    """A problem with adb, the phone, the binary or its output; the message says what to do."""


class BenchmarkOutputError(AndroidError):
    """benchmark_model's output holds no timing we can read."""


# --- parsing ----------------------------------------------------------------------------------------------------


def parse_getprop(text: str) -> dict[str, str]:
    """``[key]: [value]`` lines of ``adb shell getprop`` -> dict (multi-line values keep their first line)."""
    props = {}
    for m in re.finditer(r"^\[([^\]]+)\]: \[(.*)\]\s*$", text, re.M):
        props[m.group(1)] = m.group(2)
    return props


def device_facts(props: dict[str, str]) -> dict:
    facts = {k: props.get(v) or None for k, v in PROPS.items()}
    soc = " ".join(x for x in (facts["soc_manufacturer"], facts["soc_model"]) if x)
    facts["soc"] = soc or facts["board_platform"] or facts["hardware"]
    return facts


def _us_to_ms(v: float | None) -> float | None:
    return None if v is None else v / 1000.0


def parse_benchmark_output(text: str) -> dict:
    """Every figure benchmark_model printed, in milliseconds / MB; raises BenchmarkOutputError if there is none."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    counts = []
    for m in _RE["count"].finditer(text):
        stats = {"count": int(m.group(1))}
        stats.update({k: float(v) for k, v in _RE["pair"].findall(m.group(2))})
        counts.append(stats)
    summary, legacy = _RE["summary"].search(text), _RE["legacy"].search(text)
    if summary is None and legacy is None and not any("avg" in c for c in counts):
        errors = [line.strip() for line in text.splitlines() if _RE["error"].search(line)]
        tail = "\n".join(text.strip().splitlines()[-8:]) or "(no output)"
        why = ("; ".join(errors[:4])) if errors else f"last lines:\n{tail}"
        raise BenchmarkOutputError(f"benchmark_model output has no timing results: {why}")
    res: dict = {"format": "current" if summary else ("legacy" if legacy else "count-lines-only")}
    inference = counts[-1] if counts and "avg" in counts[-1] else None
    warm = counts[-2] if len(counts) >= 2 else None
    init_us = first_us = warm_avg_us = inf_avg_us = None
    if summary:
        init_us, first_us, warm_avg_us, inf_avg_us = (float(g) for g in summary.groups())
    elif legacy:
        warm_avg_us, init_us, inf_avg_us = (float(g) for g in legacy.groups())
        if warm is not None:
            first_us = warm.get("first", warm.get("curr"))
    if init_us is None and (m := _RE["init"].search(text)):
        init_us = float(m.group(1)) * 1000.0
    if inf_avg_us is None and inference is not None:
        inf_avg_us = inference["avg"]
    lat = {"p50": None, "p90": None, "p99": None, "mean": _us_to_ms(inf_avg_us), "std": None, "min": None,
           "max": None, "p5": None, "p95": None, "n": None}
    if inference is not None:
        lat.update({"p50": _us_to_ms(inference.get("median")), "std": _us_to_ms(inference.get("std")),
                    "min": _us_to_ms(inference.get("min")), "max": _us_to_ms(inference.get("max")),
                    "p5": _us_to_ms(inference.get("p5")), "p95": _us_to_ms(inference.get("p95")),
                    "n": inference["count"]})
    res.update({"init_ms": _us_to_ms(init_us), "first_inference_ms": _us_to_ms(first_us),
                "warmup_avg_ms": _us_to_ms(warm_avg_us), "latency_ms": lat,
                "warmup_runs": warm["count"] if warm else None})
    mem = {"init_mb": None, "overall_mb": None, "peak_mb": None}
    if m := _RE["memory"].search(text):
        mem["init_mb"], mem["overall_mb"] = float(m.group(1)), float(m.group(2))
    if m := _RE["peak"].search(text):
        mem["peak_mb"] = float(m.group(1))
    res["memory_mb"] = mem
    if m := _RE["size"].search(text):
        res["model_size_mb"] = float(m.group(1))
    if m := _RE["threads"].search(text):
        res["threads_reported"] = int(m.group(1))
    delegate: dict = {}
    if m := _RE["applied"].search(text):
        delegate = {"name": m.group(1), "coverage": m.group(2),
                    "kernels": int(m.group(3)) if m.group(3) else (1 if m.group(2) == "completely" else None)}
    elif m := _RE["not_applied"].search(text):
        delegate = {"name": m.group(1), "coverage": "none", "kernels": 0,
                    "note": "the delegate took no nodes: the CPU ran the model"}
    if m := _RE["replacing"].search(text):
        delegate.update({"nodes_replaced": int(m.group(1)), "nodes_total": int(m.group(2)),
                         "delegate_kernel": m.group(3), "partitions": int(m.group(4))})
    res["delegate"] = delegate or None
    return res


# --- adb --------------------------------------------------------------------------------------------------------


def find_adb(adb: str | None = None) -> str:
    exe = adb or os.environ.get("ADB") or shutil.which("adb")
    if not exe or not (shutil.which(exe) or Path(exe).is_file()):
        raise AndroidError("adb not found (looked at --adb/$ADB and PATH): install Android platform-tools "
                           "(Debian/Ubuntu: apt install adb) or put adb on PATH")
    return exe


class Adb:
    """Thin subprocess wrapper; every failure becomes an AndroidError naming the command."""

    def __init__(self, exe: str | None = None, serial: str | None = None, timeout: float = 900.0) -> None:
        self.exe = find_adb(exe)
        self.serial = serial
        self.timeout = timeout

    def _cmd(self, *args: str) -> list[str]:
        return [self.exe, *(("-s", self.serial) if self.serial else ()), *args]

    def call(self, *args: str, check: bool = True) -> tuple[int, str]:
        cmd = self._cmd(*args)
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout, errors="replace")
        except subprocess.TimeoutExpired:
            raise AndroidError(f"`{shlex.join(cmd)}` did not finish within {self.timeout:.0f} s") from None
        except OSError as e:
            raise AndroidError(f"cannot run adb ({self.exe}): {e}") from None
        out = (p.stdout or "") + (p.stderr or "")
        if check and p.returncode != 0:
            raise AndroidError(f"`{shlex.join(cmd)}` failed (exit {p.returncode}): {out.strip()[-600:]}")
        return p.returncode, out

    def devices(self) -> list[tuple[str, str]]:
        _, out = self._unbound().call("devices")
        rows = []
        for line in out.splitlines():
            line = line.strip()
            if not line or line.startswith(("*", "List of devices")) or len(line.split()) < 2:
                continue
            serial, state = line.split(None, 1)
            rows.append((serial, state.split()[0]))
        return rows

    def _unbound(self) -> Adb:
        other = object.__new__(Adb)
        other.exe, other.serial, other.timeout = self.exe, None, self.timeout
        return other

    def select(self, serial: str | None) -> str:
        """Pick the device: the one attached, or ``serial``; every ambiguous or unusable case is an error."""
        rows = self.devices()
        if serial is not None:
            match = [s for s in rows if s[0] == serial]
            if not match:
                listed = ", ".join(f"{s} ({st})" for s, st in rows) or "none"
                raise AndroidError(f"device {serial!r} not attached (adb devices lists: {listed})")
            state = match[0][1]
        else:
            if not rows:
                raise AndroidError("no Android device attached: connect a phone with USB debugging enabled and "
                                   "check `adb devices`")
            if len(rows) > 1:
                raise AndroidError("several devices attached (" + ", ".join(f"{s} ({st})" for s, st in rows)
                                   + "): choose one with --serial")
            serial, state = rows[0]
        if state == "unauthorized":
            raise AndroidError(f"device {serial} is unauthorized: accept the USB debugging prompt on the phone")
        if state != "device":
            raise AndroidError(f"device {serial} is {state}, not ready (reconnect it, or `adb reconnect`)")
        self.serial = serial
        return serial

    def shell(self, command: str, check: bool = True) -> tuple[int, str]:
        return self.call("shell", command, check=check)

    def push(self, local: Path, remote: str) -> None:
        self.call("push", str(local), remote)

    def exists(self, remote: str) -> bool:
        rc, _ = self.shell(f"ls {shlex.quote(remote)}", check=False)
        return rc == 0

    def version(self) -> str | None:
        _, out = self._unbound().call("version", check=False)
        m = re.search(r"Android Debug Bridge version (\S+)", out)
        return m.group(1) if m else None


# --- the flow ---------------------------------------------------------------------------------------------------


def benchmark_flags(remote_model: str, threads: int, runs: int, warmup: int, use_gpu: bool, use_nnapi: bool) -> list:
    flags = [f"--graph={remote_model}", f"--num_threads={threads}", f"--num_runs={runs}",
             f"--warmup_runs={warmup}", "--report_peak_memory_footprint=true"]
    if use_gpu:
        flags.append("--use_gpu=true")
    if use_nnapi:
        flags.append("--use_nnapi=true")
    if not use_gpu and not use_nnapi:
        flags.append("--use_xnnpack=true")
    return flags


def bench_android(
    artifacts: list[Path | str],
    threads: list[int] = (1,),
    runs: int = 50,
    warmup: int = 5,
    serial: str | None = None,
    benchmark_binary: Path | str | None = None,
    use_gpu: bool = False,
    use_nnapi: bool = False,
    adb: str | None = None,
    progress: bool = True,
) -> list[dict]:
    """Run benchmark_model on the phone for each .tflite artifact and thread count; one record per artifact."""
    from .bench import artifact_size

    paths = [Path(a) for a in artifacts]
    for p in paths:
        if p.suffix.lower() != ".tflite":
            raise ValueError(f"{p}: --device android benchmarks TFLite models (.tflite) with benchmark_model")
        if not p.is_file():
            raise FileNotFoundError(f"artifact not found: {p}")
        read_spec(p)  # refuse another contract or a foreign file before anything goes to the phone
    if runs < 1 or warmup < 0:
        raise ValueError(f"--runs must be >= 1 and --warmup >= 0 (got {runs}, {warmup})")
    if benchmark_binary is not None and not Path(benchmark_binary).is_file():
        raise FileNotFoundError(f"benchmark binary not found: {benchmark_binary} (download it from {BINARY_URL})")
    client = Adb(adb)
    serial = client.select(serial)
    _, props_text = client.shell("getprop")
    phone = {"serial": serial, **device_facts(parse_getprop(props_text))}
    if benchmark_binary is not None:
        client.push(Path(benchmark_binary), REMOTE_BINARY)
        client.shell(f"chmod 755 {REMOTE_BINARY}")
        binary = {"local": str(Path(benchmark_binary).resolve()), "remote": REMOTE_BINARY, "pushed": True}
    elif client.exists(REMOTE_BINARY):
        binary = {"local": None, "remote": REMOTE_BINARY, "pushed": False}
    else:
        raise AndroidError(f"benchmark_model is not on {serial} ({REMOTE_BINARY}) and no --benchmark-binary was "
                           f"given: download TFLite's benchmark tool for the phone's ABI ({phone['abi']}), e.g. "
                           f"{BINARY_URL}, and pass --benchmark-binary PATH")
    client.shell(f"mkdir -p {REMOTE_DIR}")
    delegate = "gpu" if use_gpu else ("nnapi" if use_nnapi else "xnnpack")
    records = []
    jobs = [(p, t) for p in paths for t in threads]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="android bench", unit="run", leave=False)
    for p in paths:
        remote_model = f"{REMOTE_DIR}/{p.name}"
        client.push(p, remote_model)
        rec = {"artifact": str(p), "name": p.name, "size_bytes": artifact_size(p), "device": "android",
               "status": "ok", "reason": None, "phone": phone,
               "runtime": {"backend": "benchmark_model", "provider": f"benchmark_model/{delegate}",
                           "delegate": delegate, "binary": binary, "adb": client.version()},
               "results": []}
        try:
            for t in threads:
                flags = benchmark_flags(remote_model, t, runs, warmup, use_gpu, use_nnapi)
                rc, out = client.shell(shlex.join([REMOTE_BINARY, *flags]), check=False)
                try:
                    parsed = parse_benchmark_output(out)
                except BenchmarkOutputError as e:
                    raise BenchmarkOutputError(f"{p.name} on {serial} ({t} threads, exit {rc}): {e}") from None
                if rc != 0:
                    raise AndroidError(f"benchmark_model exited with status {rc} on {serial} although it printed "
                                       f"timings; last lines: {out.strip()[-400:]}")
                lat = parsed["latency_ms"]
                rec["results"].append({
                    "threads": t, "init_ms": parsed["init_ms"], "first_inference_ms": parsed["first_inference_ms"],
                    "warmup_avg_ms": parsed["warmup_avg_ms"], "latency_ms": lat,
                    "throughput_ips": 1e3 / lat["mean"] if lat["mean"] else None,
                    "memory_mb": parsed["memory_mb"], "peak_rss_mb": parsed["memory_mb"]["peak_mb"],
                    "delegate": parsed["delegate"], "output_format": parsed["format"], "e2e_ms": None,
                    "runs": runs, "warmup": warmup, "command": shlex.join([REMOTE_BINARY, *flags]),
                    "raw_output": out})
                if bar is not None:
                    bar.update(1)
        finally:
            client.shell(f"rm -f {shlex.quote(remote_model)}", check=False)
        rec["notes"] = ("TFLite benchmark_model on the phone: latency_ms.mean = Inference (avg); p50 = its median "
                        "when printed; p90/p99 are not reported by benchmark_model (null); e2e not measured "
                        "on the phone (the Android demo app times its own pipeline)")
        records.append(rec)
    if bar is not None:
        bar.close()
    return records
