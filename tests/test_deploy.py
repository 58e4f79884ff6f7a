"""``egeunet deploy``: calibrate -> export -> drift -> bench -> one HTML page, on the bundled real sample.

The ONNX target only (fp32 + calibrated int8) keeps this test to about a minute; the full no-argument run is
timed in the runtimes note."""

from __future__ import annotations

import json

import pytest

from egeunet_deploy.main import main


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, sample_dir):
    out = tmp_path_factory.mktemp("deploy")
    rc = main(["deploy", "--data", str(sample_dir), "--out", str(out), "--targets", "onnx", "--threads", "1",
               "--runs", "3", "--warmup", "1", "--no-progress"])
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
    for needle in ("egeunet_fp32.onnx", "egeunet_int8.onnx", "p50 ms @1 thr", "bench/bench.png",
                   "drift/drift_summary.png", "_egeunet_fp32.onnx.png", "drift/report.html", "int8 blame"):
        assert needle in html
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


def test_bad_data_fails_before_exporting(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["deploy", "--data", str(tmp_path / "absent"), "--out", str(out), "--no-progress"]) == 2
    assert "data folder not found" in capsys.readouterr().err
    assert not (out / "artifacts").exists()
