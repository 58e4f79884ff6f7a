"""``egeunet deploy``: calibrate -> export -> drift -> bench -> one HTML page, on the bundled real sample.

The ONNX target only (fp32 + calibrated int8) keeps this test to about a minute; the full no-argument run is
timed in the runtimes note."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from egeunet_deploy.main import main


@pytest.fixture(scope="module")
def damaged_sample(tmp_path_factory, sample_dir) -> tuple[Path, dict[str, Path]]:
    """A copy of the bundled sample with one train and one test image cut short (real damaged JPEGs)."""
    root = tmp_path_factory.mktemp("damaged_sample") / "data"
    shutil.copytree(sample_dir, root, ignore=shutil.ignore_patterns("*.md", "*.csv"))
    bad = {}
    for split in ("train", "test"):
        bad[split] = sorted((root / split / "images").iterdir())[3]
        bad[split].write_bytes(bad[split].read_bytes()[:300])
    return root, bad


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, damaged_sample):
    """The whole pipeline once, on the sample with two damaged images passed over by --skip-bad."""
    out = tmp_path_factory.mktemp("deploy")
    rc = main(["deploy", "--data", str(damaged_sample[0]), "--out", str(out), "--targets", "onnx", "--threads", "1",
               "--runs", "3", "--warmup", "1", "--skip-bad", "--no-progress"])
    return rc, out, json.loads((out / "deploy.json").read_text())


def test_every_stage_ran(deployed):
    rc, out, result = deployed
    assert (out / "calibration.npz").is_file()
    assert {(e["target"], e["precision"], e["status"]) for e in result["exports"]} == {
        ("onnx", "fp32", "ok"), ("onnx", "int8", "ok")}
    drift = json.loads((out / "drift" / "drift.json").read_text())
    assert {a["precision"] for a in drift["artifacts"]} == {"fp32", "int8"}
    bench = json.loads((out / "bench" / "bench.json").read_text())
    assert [b["runtime"]["backend"] for b in bench] == ["onnxruntime", "onnxruntime", "torch"]
    assert rc == (0 if drift["passed"] else 1) and result["passed"] == drift["passed"]
    assert set(result["stages_s"]) == {"calibrate", "export", "drift", "bench"}


def test_one_table_joins_the_stages(deployed):
    _, _, result = deployed
    rows = {r["file"]: r for r in result["table"]}
    assert set(rows) == {"egeunet_fp32.onnx", "egeunet_int8.onnx", "egeunet_isic2017.pt"}
    fp32 = rows["egeunet_fp32.onnx"]
    assert fp32["drift_status"] == "passed" and fp32["agreement"] >= 0.999 and fp32["size_bytes"] > 0
    assert fp32["p50_ms"]["1"] > 0  # JSON keys: thread counts as strings
    ref = rows["egeunet_isic2017.pt"]
    assert ref["dsc"] == pytest.approx(result["drift"]["reference"]["dsc"])


def test_html_page_has_table_plots_and_overlays(deployed):
    _, out, _ = deployed
    html = (out / "report.html").read_text()
    for needle in ("egeunet_fp32.onnx", "egeunet_int8.onnx", "p50 ms, 1 thr", "bench/bench.png",
                   "drift/drift_summary.png", "_egeunet_int8.onnx.png", "drift/report.html", "int8 blame",
                   "Which artifact for which device"):
        assert needle in html
    # worst-image overlays only where the artifact differs from PyTorch at all
    fp32_overlays = list((out / "drift").glob("worst_*_egeunet_fp32.onnx.png"))
    assert fp32_overlays or "egeunet_fp32.onnx: no image differs" in html
    assert (out / "bench" / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((out / "drift").glob("worst_*_egeunet_int8.onnx.png"))) == 1
    assert len(list((out / "drift").glob("blame_*_egeunet_int8.onnx.png"))) == 1


def test_int8_blame_ranking_is_in_the_drift_report(deployed):
    _, out, _ = deployed
    drift = json.loads((out / "drift" / "drift.json").read_text())
    by_precision = {a["precision"]: a for a in drift["artifacts"]}
    blame = by_precision["int8"]["int8_blame"]
    assert "int8_blame" not in by_precision["fp32"]
    assert {"encoder1", "GAB1", "decoder3"} <= {b["block"] for b in blame}
    deltas = [b["dsc_delta"] for b in blame]
    assert deltas == sorted(deltas)  # worst block first
    assert all(0.0 <= b["agreement"] <= 1.0 for b in blame)


def test_bad_data_fails_before_exporting(tmp_path, damaged_sample, capsys):
    out = tmp_path / "out"
    assert main(["deploy", "--data", str(tmp_path / "absent"), "--out", str(out), "--no-progress"]) == 2
    assert "data folder not found" in capsys.readouterr().err
    assert main(["deploy", "--data", str(damaged_sample[0]), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert damaged_sample[1]["test"].name in err and "pass --skip-bad" in err
    assert not out.exists()


def test_skip_bad_lists_what_it_skipped(deployed, damaged_sample, capsys):
    _, out, result = deployed
    _, bad = damaged_sample
    for stage, split in (("calibration", "train"), ("drift", "test")):
        (line,) = result["skipped_files"][stage]
        assert line.startswith(f"{bad[split]}: ")
    drift = json.loads((out / "drift" / "drift.json").read_text())
    assert drift["n_images"] == 31 and drift["skipped_files"] == result["skipped_files"]["drift"]
    html = (out / "report.html").read_text()
    assert bad["train"].name in html and bad["test"].name in html


@pytest.mark.parametrize("extra, message", [
    (["--runs", "-1"], "--runs must be >= 1"),
    (["--runs", "0"], "--runs must be >= 1"),
    (["--warmup", "-1"], "--warmup must be >= 0"),
    (["--threads", "99999"], "CPU core"),
    (["--targets", "bogus"], "unknown export target 'bogus'"),
    (["--targets", "onnx,,tflite"], "empty entry"),
    (["--precisions", "fp8"], "fp8"),
    (["--weights", "{corrupt}"], "not a readable PyTorch weights file"),
    (["--tolerance", "{corrupt}"], "must be a mapping"),
])
def test_bad_arguments_fail_before_any_work(sample_dir, tmp_path, capsys, extra, message):
    """Each of these failed only after minutes of calibrating and exporting (or, --runs 0, silently became 20)."""
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK not really a checkpoint")
    out = tmp_path / "out"
    extra = [a.format(corrupt=corrupt) for a in extra]
    assert main(["deploy", "--data", str(sample_dir), "--out", str(out), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not out.exists()


def test_interrupted_rerun_leaves_no_old_verdict(deployed, sample_dir, tmp_path, monkeypatch):
    """A re-run into a finished report's folder, interrupted at its first write, must not leave the previous run's
    deploy.json/report.html (PASSED) beside its new, partial stage folders."""
    from egeunet_deploy.model import interrupts
    from egeunet_deploy.runtimes.deploy import deploy

    previous = tmp_path / "d"
    shutil.copytree(deployed[1], previous)
    assert (previous / "deploy.json").is_file() and (previous / "report.html").is_file()
    monkeypatch.setattr(interrupts, "_interrupted", True)  # Ctrl-C recorded (and swallowed) before the first write
    with pytest.raises(KeyboardInterrupt):
        deploy(data=sample_dir, out=previous, targets=["onnx"], precisions=["fp32"], threads=[1], runs=2,
               progress=False, quiet=True)
    assert not (previous / "deploy.json").exists() and not (previous / "report.html").exists()
    assert (previous / "drift" / "drift.json").is_file()  # the stage reports are each whole (drift swaps its folder)
