"""``egeunet bench`` on this host: real artifacts, the JSON schema, interleaved comparison with a plot, CUDA said
plainly absent (or used when present), clear errors. Timings are not asserted (noisy machine); their shape is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from egeunet_deploy.main import main
from egeunet_deploy.model.bundled import DEFAULT_WEIGHTS
from egeunet_deploy.runtimes.bench import (
    ContentionMeter,
    bench_host,
    contention_warning,
    latency_stats,
    parse_threads,
    summary_lines,
)


def test_parse_threads():
    assert parse_threads("1,2,4", "android") == [1, 2, 4]  # a phone: the host's cores do not limit it
    assert parse_threads(" 1 ") == [1]
    for bad in ("0", "1,1", "a", "", "-2", "1,,2", "1,", ",1"):
        with pytest.raises(ValueError, match="--threads"):
            parse_threads(bad)


def test_thread_counts_are_held_to_the_device():
    """More threads than the host has cores is refused (ONNX Runtime allocated until 16 GB ran out at 99999); on a
    phone, whose cores the host cannot count, up to 64."""
    cores = os.cpu_count()
    assert parse_threads(str(cores)) == [cores]
    for device in ("cpu", "cuda", "auto"):
        with pytest.raises(ValueError, match=f"more than this host's {cores} CPU core"):
            parse_threads(f"1,{cores + 1}", device)
    assert parse_threads("64", "android") == [64]
    with pytest.raises(ValueError, match="more than the most a phone benchmark takes"):
        parse_threads("99999", "android")


def test_latency_stats_order():
    samples = np.random.default_rng(0).gamma(4.0, 3.0, 500)
    s = latency_stats(samples)
    assert s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"] and s["n"] == 500
    assert s["p50"] == pytest.approx(float(np.median(samples)))
    assert s["mean"] == pytest.approx(float(samples.mean()))
    assert latency_stats([])["p50"] is None


def test_cli_single_artifact_json(onnx_fp32, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--artifact", str(onnx_fp32), "--threads", "1,2", "--runs", "6", "--warmup", "1",
               "--e2e-runs", "3", "--json", str(out), "--no-progress"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert isinstance(data, dict)  # one artifact -> one object
    assert data["artifact"] == str(onnx_fp32) and data["device"] in ("cpu", "cuda")
    assert data["size_bytes"] == onnx_fp32.stat().st_size
    assert [r["threads"] for r in data["results"]] == [1, 2]
    for r in data["results"]:
        lat = r["latency_ms"]
        assert set(lat) >= {"p50", "p90", "p99", "mean"} and lat["n"] == 6
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert r["throughput_ips"] == pytest.approx(1000.0 / lat["mean"])
        assert r["init_ms"] > 0 and r["first_inference_ms"] > 0 and r["peak_rss_mb"] > 0
        e2e = r["e2e_ms"]
        assert e2e["n"] == 3 and all(v > 0 for v in e2e["breakdown_mean"].values())
        assert sum(e2e["breakdown_mean"].values()) == pytest.approx(e2e["mean"], rel=1e-6)
    assert data["runtime"]["backend"] == "onnxruntime" and data["host"]["cpu_count"] >= 1
    assert "other_processes_cores" in data["host"]["contention"]  # how busy the host was while we measured
    text = capsys.readouterr().out
    assert "p50" in text and onnx_fp32.name in text
    if not torch.cuda.is_available():
        assert "cuda: absent" in text  # a CPU-only run says so plainly


def test_several_artifacts_interleaved_list_and_plot(onnx_fp32, tflite_fp32, tmp_path):
    out = tmp_path / "cmp.json"
    rc = main(["bench", "--artifact", str(onnx_fp32), "--artifact", str(tflite_fp32), "--artifact",
               str(DEFAULT_WEIGHTS), "--runs", "4", "--warmup", "1", "--e2e-runs", "2", "--json", str(out),
               "--no-progress"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert isinstance(data, list) and [Path(d["artifact"]).name for d in data] == [
        onnx_fp32.name, tflite_fp32.name, DEFAULT_WEIGHTS.name]
    assert [d["runtime"]["backend"] for d in data] == ["onnxruntime", "litert", "torch"]
    assert all(d["results"][0]["latency_ms"]["n"] == 4 for d in data)
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_cuda_requested(onnx_fp32):
    (rec,) = bench_host([onnx_fp32], runs=2, warmup=0, e2e_runs=1, device="cuda", progress=False)
    ok = "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers()
    if ok:
        assert rec["status"] == "ok" and rec["device"] == "cuda"
    else:
        assert rec["status"] == "skipped" and "CUDAExecutionProvider requested but absent" in rec["reason"]


def test_cli_errors(onnx_fp32, tmp_path, capsys):
    assert main(["bench", "--artifact", str(tmp_path / "absent.onnx"), "--no-progress"]) == 2
    assert "artifact not found" in capsys.readouterr().err
    odd = tmp_path / "model.engine"
    odd.write_bytes(b"x")
    assert main(["bench", "--artifact", str(odd), "--no-progress"]) == 2
    assert "no runtime for '.engine'" in capsys.readouterr().err
    assert main(["bench", "--artifact", str(onnx_fp32), "--use-gpu", "--no-progress"]) == 2
    assert "--device android" in capsys.readouterr().err
    assert main(["bench", "--artifact", str(onnx_fp32), "--threads", "-1", "--no-progress"]) == 2  # 0: all cores


@pytest.mark.parametrize("extra, message", [
    (["--threads", "99999"], "CPU core"),
    (["--threads", "1,,2"], "empty entry"),
    (["--runs", "0"], "--runs must be >= 1"),
    (["--warmup", "-1"], "--warmup must be >= 0"),
    (["--e2e-runs", "-2"], "--e2e-runs must be >= 0"),
    (["--json", "{tmp}"], "a folder is in the way"),
    (["--json", "{onnx}/bench.json"], "is a file, not a folder"),
])
def test_bad_options_fail_before_measuring(onnx_fp32, tmp_path, capsys, extra, message):
    extra = [a.format(tmp=tmp_path, onnx=onnx_fp32) for a in extra]
    rc = main(["bench", "--artifact", str(onnx_fp32), "--runs", "2", "--warmup", "0", "--e2e-runs", "1", *extra,
               "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 2 and captured.err.startswith("error: ") and message in captured.err
    assert "p50" not in captured.out  # nothing was measured


def test_artifact_must_be_a_file_or_a_package(tmp_path, capsys):
    from egeunet_deploy.runtimes.bench import check_artifact_paths

    assert main(["bench", "--artifact", str(tmp_path), "--no-progress"]) == 2
    assert f"error: --artifact takes a file; {tmp_path} is a folder" in capsys.readouterr().err
    package = tmp_path / "egeunet_fp32.mlpackage"  # Core ML packages are folders: still taken
    package.mkdir()
    assert check_artifact_paths([package]) == [package]


def test_nothing_loadable_is_an_error(onnx_fp32, tmp_path, capsys):
    """When no artifact loads, the reasons go to stderr with exit status 2, not only into a table of ERROR rows;
    when one of several fails, it is an ERROR row beside the others' figures (exit status 1)."""
    truncated = tmp_path / "egeunet_fp32.onnx"
    truncated.write_bytes(onnx_fp32.read_bytes()[:20000])
    text = tmp_path / "model.onnx"
    text.write_text("not a model\n")
    base = ["bench", "--runs", "2", "--warmup", "0", "--e2e-runs", "1", "--no-progress"]
    assert main([*base, "--artifact", str(truncated)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {truncated}: not a valid ONNX model (truncated or corrupt")
    assert main([*base, "--artifact", str(truncated), "--artifact", str(text)]) == 2
    err = capsys.readouterr().err
    assert "none of the 2 artifacts could be benchmarked" in err and str(text) in err
    assert main([*base, "--artifact", str(onnx_fp32), "--artifact", str(truncated), "--plot",
                 str(tmp_path / "bench.png")]) == 1
    out = capsys.readouterr().out
    assert "ERROR: " in out and "not a valid ONNX model" in out


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _spin_command(seconds: float) -> list[str]:
    """:func:`_spin` in a child Python process."""
    return [sys.executable, "-c", f"import time\nend = time.perf_counter() + {seconds}\n"
            "while time.perf_counter() < end: pass"]


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="contention is measured from /proc/stat (Linux)")
def test_contention_meter_counts_other_processes_not_ours():
    """A busy child process shows up as ~1 other core; the same spin in this process does not. Differential, so
    whatever else runs on the host (CI neighbours, a training run) cancels out."""
    meter = ContentionMeter()
    _spin(1.0)
    own = meter.stop()["other_processes_cores"]
    child = subprocess.Popen(_spin_command(1.5))
    time.sleep(0.2)  # interpreter start-up
    meter = ContentionMeter()
    time.sleep(1.0)
    other = meter.stop()["other_processes_cores"]
    child.wait()
    assert other - own >= 0.6, (own, other)


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="contention is measured from /proc/stat (Linux)")
def test_contention_meter_counts_reported_worker_cpu_as_ours():
    """A benchmark's own worker process (bench/train_speed.py runs each loop in one) reports its CPU time, which is
    then not 'other work'; unreported, the same spin is (see the test above)."""
    import resource

    def spin_in_child() -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(_spin_command(1.0), check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime

    meter = ContentionMeter()
    unreported = spin_in_child()
    other = meter.stop()["other_processes_cores"]
    meter = ContentionMeter()
    reported = meter.stop(workers_cpu_seconds=spin_in_child())["other_processes_cores"]
    assert unreported > 0.8 and other - reported >= 0.6, (unreported, other, reported)


def test_contention_warning_only_above_threshold():
    def records(cores):
        return [{"name": "a.onnx", "status": "ok", "results": [],
                 "host": {"cpu_count": 2, "contention": {"other_processes_cores": cores}}}]

    assert contention_warning(records(0.1)) is None
    assert contention_warning(records(None)) is None
    assert "0.90 of 2 CPU cores" in contention_warning(records(0.9))
    assert any("0.90 of 2" in line for line in summary_lines(records(0.9)))
