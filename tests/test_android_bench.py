"""``egeunet bench --device android``: benchmark_model output parser on every known variant, and the adb flow
against a fake ``adb`` on PATH that replays recorded phone output (tests/fixtures/android)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from egeunet_deploy.runtimes.android import (
    REMOTE_BINARY,
    AndroidError,
    BenchmarkOutputError,
    bench_android,
    device_facts,
    parse_benchmark_output,
    parse_getprop,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "android"


def read(name: str) -> str:
    return (FIXTURES / name).read_text()


# --- parser: one test per variant; the expected figures are the ones printed in the fixture text (us -> ms) ------

PARSED_VARIANTS = {
    # file: (format, init_ms, first_ms, mean_ms, p50_ms, min_ms, n, memory (init, overall, peak), delegate name)
    "bench_current_xnnpack.txt": ("current", 31.842, 21.934, 10.2017, 9.978, 9.512, 98, (6.42188, 18.5117, 24.0586),
                                  "XNNPACK"),
    "bench_current_gpu.txt": ("current", 1184.77, 30.512, 7.86602, 7.840, 7.690, 127, (71.3047, 73.9297, 80.4805),
                              "GPU"),
    "bench_scientific.txt": ("current", 18.31, 1402.118, 1240.27, 1239.807, 1229.877, 20, (3.98047, 11.2305, None),
                             "XNNPACK"),
    "bench_no_percentiles.txt": ("current", 42.117, 38.12, 17.7402, None, 17.21, 57, (5.14453, 16.7734, None),
                                 "XNNPACK"),
    "bench_legacy_average.txt": ("legacy", 5.118, 49.88, 26.2548, None, 25.702, 50, (None, None, None), None),
    "bench_legacy_logcat.txt": ("legacy", 6.021, None, 12.3107, None, None, None, (None, None, None), None),
    "bench_nnapi_fallback.txt": ("current", 61.904, 58.113, 41.6229, 41.38, 40.651, 50, (9.01172, 21.4531, 27.5977),
                                 "NNAPI"),
}
UNPARSEABLE = {"bench_error_flex.txt": "FlexErf", "bench_truncated.txt": "Initialized session"}


def test_every_fixture_variant_is_tested():
    on_disk = {p.name for p in FIXTURES.glob("bench_*.txt")}
    assert on_disk == set(PARSED_VARIANTS) | set(UNPARSEABLE)


@pytest.mark.parametrize("name", sorted(PARSED_VARIANTS))
def test_parser_reads_variant(name):
    fmt, init, first, mean, p50, mn, n, mem, delegate = PARSED_VARIANTS[name]
    r = parse_benchmark_output(read(name))
    approx = lambda v: None if v is None else pytest.approx(v, rel=1e-5)  # noqa: E731
    assert r["format"] == fmt
    assert r["init_ms"] == approx(init)
    assert r["first_inference_ms"] == approx(first)
    lat = r["latency_ms"]
    assert lat["mean"] == approx(mean)
    assert lat["p50"] == approx(p50)
    assert lat["min"] == approx(mn)
    assert lat["n"] == n
    assert lat["p90"] is None and lat["p99"] is None  # never invented: benchmark_model does not print them
    assert (r["memory_mb"]["init_mb"], r["memory_mb"]["overall_mb"], r["memory_mb"]["peak_mb"]) == tuple(
        approx(v) for v in mem)
    assert (r["delegate"] or {}).get("name") == delegate


def test_parser_scientific_notation_and_windows_line_endings():
    text = read("bench_scientific.txt").replace("\n", "\r\n")
    r = parse_benchmark_output(text)
    assert r["latency_ms"]["mean"] == pytest.approx(1240.27)  # "Inference (avg): 1.24027e+06" us
    assert r["warmup_avg_ms"] == pytest.approx(1357.59)  # "Warmup (avg): 1.35759e+06" us
    assert r["latency_ms"]["p95"] == pytest.approx(1257.415)


def test_parser_reports_delegate_coverage():
    gpu = parse_benchmark_output(read("bench_current_gpu.txt"))["delegate"]
    assert gpu["coverage"] == "partially" and gpu["kernels"] == 2
    assert (gpu["nodes_replaced"], gpu["nodes_total"], gpu["partitions"]) == (291, 297, 2)
    nnapi = parse_benchmark_output(read("bench_nnapi_fallback.txt"))["delegate"]
    assert nnapi["coverage"] == "none" and "CPU ran" in nnapi["note"]


@pytest.mark.parametrize("name", sorted(UNPARSEABLE))
def test_parser_rejects_output_without_timings(name):
    with pytest.raises(BenchmarkOutputError, match=UNPARSEABLE[name]):
        parse_benchmark_output(read(name))


def test_parser_rejects_empty_output():
    with pytest.raises(BenchmarkOutputError, match="no output"):
        parse_benchmark_output("")


def test_getprop_facts():
    new = device_facts(parse_getprop(read("getprop_pixel.txt")))
    assert (new["model"], new["abi"], new["soc"], new["android_version"], new["sdk"]) == (
        "Pixel 7", "arm64-v8a", "Google GS201", "14", "34")
    old = device_facts(parse_getprop(read("getprop_old.txt")))  # Android 9: no ro.soc.* -> board platform
    assert (old["model"], old["soc"], old["android_version"]) == ("Redmi Note 4", "msm8953", "9")


# --- the adb flow against the fake adb ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tflite_artifact(tmp_path_factory) -> Path:
    """A real fp32 TFLite export (the flow reads its metadata before pushing it)."""
    from egeunet_deploy.export import export

    cache = tmp_path_factory.getbasetemp() / "runtimes_artifacts"
    existing = sorted(cache.glob("*fp32*.tflite")) if cache.is_dir() else []
    return existing[0] if existing else export("tflite", "fp32", out_dir=cache)


@pytest.fixture
def phone(tmp_path, monkeypatch):
    """Put the fake adb first on PATH; returns a helper to pick fixtures and read the command log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copyfile(FIXTURES / "fake_adb", bin_dir / "adb")
    (bin_dir / "adb").chmod(0o755)
    root = tmp_path / "device"
    root.mkdir()
    log = tmp_path / "adb.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("ADB", raising=False)
    monkeypatch.setenv("FAKE_ADB_FIXTURES", str(FIXTURES))
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF stand-in for android_aarch64_benchmark_model")

    class Phone:
        def __init__(self):
            self.root, self.binary = root, binary

        def use(self, **fixtures):
            for key, name in fixtures.items():
                monkeypatch.setenv(f"FAKE_ADB_{key.upper()}", str(FIXTURES / name))

        def calls(self) -> list[list[str]]:
            return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return Phone()


def test_flow_pushes_runs_parses_and_cleans_up(phone, tflite_artifact):
    records = bench_android([tflite_artifact], threads=[1, 2], runs=20, warmup=3, benchmark_binary=phone.binary,
                            progress=False)
    (rec,) = records
    assert rec["device"] == "android" and rec["status"] == "ok"
    assert (rec["phone"]["model"], rec["phone"]["abi"], rec["phone"]["soc"], rec["phone"]["android_version"]) == (
        "Pixel 7", "arm64-v8a", "Google GS201", "14")
    assert [r["threads"] for r in rec["results"]] == [1, 2]
    assert rec["results"][0]["latency_ms"]["mean"] == pytest.approx(10.2017)
    assert rec["results"][0]["throughput_ips"] == pytest.approx(1000 / 10.2017)
    runs = [c for c in phone.calls() if c[2:3] == ["shell"] and c[3].startswith(REMOTE_BINARY)]
    assert len(runs) == 2
    assert "--num_threads=1" in runs[0][3] and "--num_threads=2" in runs[1][3]
    assert "--num_runs=20" in runs[0][3] and "--warmup_runs=3" in runs[0][3] and "--use_xnnpack=true" in runs[0][3]
    assert any(c[2:] == ["shell", f"chmod 755 {REMOTE_BINARY}"] for c in phone.calls())
    assert not list((phone.root / "data/local/tmp/egeunet").iterdir())  # pushed model removed afterwards
    assert (phone.root / REMOTE_BINARY.lstrip("/")).exists()  # binary stays for the next run


def test_flow_gpu_flag_and_delegate(phone, tflite_artifact):
    phone.use(bench="bench_current_gpu.txt")
    (rec,) = bench_android([tflite_artifact], runs=10, warmup=1, benchmark_binary=phone.binary, use_gpu=True,
                           progress=False)
    run = next(c for c in phone.calls() if c[2:3] == ["shell"] and c[3].startswith(REMOTE_BINARY))
    assert "--use_gpu=true" in run[3] and "--use_xnnpack=true" not in run[3]
    assert rec["runtime"]["delegate"] == "gpu"
    assert rec["results"][0]["delegate"]["name"] == "GPU"


def test_flow_uses_binary_already_on_phone(phone, tflite_artifact):
    bench_android([tflite_artifact], runs=5, warmup=1, benchmark_binary=phone.binary, progress=False)
    (rec,) = bench_android([tflite_artifact], runs=5, warmup=1, progress=False)  # no --benchmark-binary now
    assert rec["runtime"]["binary"]["pushed"] is False


def test_several_devices_need_serial(phone, tflite_artifact):
    phone.use(devices="devices_two.txt")
    with pytest.raises(AndroidError, match=r"several devices.*2A131FDH2004CS.*emulator-5554.*--serial"):
        bench_android([tflite_artifact], benchmark_binary=phone.binary, progress=False)
    (rec,) = bench_android([tflite_artifact], runs=5, warmup=1, serial="emulator-5554",
                           benchmark_binary=phone.binary, progress=False)
    assert rec["phone"]["serial"] == "emulator-5554"
    assert all(c[:2] == ["-s", "emulator-5554"] for c in phone.calls() if c[:1] not in (["devices"], ["version"]))
    with pytest.raises(AndroidError, match="'nope' not attached"):
        bench_android([tflite_artifact], serial="nope", benchmark_binary=phone.binary, progress=False)


@pytest.mark.parametrize("devices, message", [("devices_none.txt", "no Android device attached"),
                                              ("devices_unauthorized.txt", "unauthorized: accept the USB")])
def test_device_problems_are_clear(phone, tflite_artifact, devices, message):
    phone.use(devices=devices)
    with pytest.raises(AndroidError, match=message):
        bench_android([tflite_artifact], benchmark_binary=phone.binary, progress=False)


def test_adb_missing(tmp_path, monkeypatch, tflite_artifact):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    monkeypatch.delenv("ADB", raising=False)
    with pytest.raises(AndroidError, match="adb not found"):
        bench_android([tflite_artifact], progress=False)


def test_binary_missing(phone, tflite_artifact, tmp_path):
    with pytest.raises(AndroidError, match="benchmark_model is not on .* --benchmark-binary"):
        bench_android([tflite_artifact], progress=False)
    with pytest.raises(FileNotFoundError, match="benchmark binary not found"):
        bench_android([tflite_artifact], benchmark_binary=tmp_path / "absent", progress=False)


@pytest.mark.parametrize("bench, message", [("bench_error_flex.txt", "FlexErf"),
                                            ("bench_truncated.txt", "no timing results")])
def test_unparseable_output_is_an_error(phone, tflite_artifact, bench, message):
    phone.use(bench=bench)
    with pytest.raises(BenchmarkOutputError, match=message):
        bench_android([tflite_artifact], benchmark_binary=phone.binary, progress=False)
    assert not list((phone.root / "data/local/tmp/egeunet").iterdir())  # cleaned up on failure too


def test_non_zero_exit_with_timings_is_an_error(phone, tflite_artifact, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_BENCH_RC", "1")
    with pytest.raises(AndroidError, match="exited with status 1"):
        bench_android([tflite_artifact], benchmark_binary=phone.binary, progress=False)


def test_only_tflite_goes_to_the_phone(phone, tmp_path):
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.tflite"):
        bench_android([onnx_file], progress=False)


def test_cli_android_json_and_errors(phone, tflite_artifact, tmp_path, capsys):
    from egeunet_deploy.main import main

    out = tmp_path / "android.json"
    rc = main(["bench", "--device", "android", "--artifact", str(tflite_artifact), "--threads", "1,4",
               "--runs", "10", "--warmup", "2", "--benchmark-binary", str(phone.binary), "--json", str(out),
               "--no-progress"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["artifact"] == str(tflite_artifact) and data["device"] == "android"
    assert [r["threads"] for r in data["results"]] == [1, 4]
    assert set(data["results"][0]["latency_ms"]) >= {"p50", "p90", "p99", "mean"}
    assert "Pixel 7" in capsys.readouterr().out
    phone.use(devices="devices_none.txt")
    rc = main(["bench", "--device", "android", "--artifact", str(tflite_artifact), "--no-progress"])
    assert rc == 2
    assert "no Android device attached" in capsys.readouterr().err
