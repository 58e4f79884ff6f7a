"""Arm Ethos-U through Vela: the full-integer artifact compiles with the whole network on the NPU (only the input
preprocessing and I/O left to the CPU, each with Vela's reason), Vela's memory and time estimates come back labelled
as estimates, and a float model is refused with its float ops named instead of a 0%-on-the-NPU "compile"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from integer_fixtures import int8_full, tflm_blockers  # noqa: F401  (fixture)

from egeunet_deploy.main import main
from egeunet_deploy.runtimes import vela
from egeunet_deploy.runtimes.integer_graph import FloatOpsError, analyse

pytest.importorskip("ethosu.vela")

NPU_SHARE_MIN = 0.97  # issue 17: >= 97% of ops on the Ethos-U55-256, i.e. all but the preprocessing and the I/O
PREPROCESSING_AND_IO = {"CAST", "DEQUANTIZE", "QUANTIZE", "REDUCE_MIN", "REDUCE_MAX", "MAXIMUM", "DIV", "SUB", "MUL",
                        "RESHAPE"}


@pytest.fixture(scope="module")
def u55(int8_full, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("vela")
    return vela.compile_model(int8_full, "ethos-u55-256", out_dir=out), out


def test_u55_takes_the_whole_network(u55):
    est, _ = u55
    print(f"Vela {est['vela_version']}, {est['config']}: {est['ops_npu']}/{est['ops_total']} ops on the NPU "
          f"({100 * est['npu_share']:.1f}%), SRAM {est['sram_kib']:.0f} KiB, Flash {est['flash_kib']:.0f} KiB, "
          f"{est['inference_ms']:.1f} ms at {est['clock_hz'] / 1e6:.0f} MHz, {est['macs'] / 1e6:.1f} M MACs; "
          f"CPU: {est['cpu_reasons']}")
    assert est["npu_share"] >= NPU_SHARE_MIN
    assert est["whole_network_on_npu"] and est["cpu_ops_in_network"] == 0
    assert set(est["cpu_op_types"]) <= PREPROCESSING_AND_IO
    assert all(op["reason"] and op["region"] in ("preprocessing", "output") for op in est["cpu_ops"])
    assert est["ops_npu"] + est["ops_cpu"] == est["ops_total"] == len(analyse(est["artifact"]).ops)


def test_u55_estimates_are_vela_figures_labelled_as_such(u55):
    est, out = u55
    assert est["clock_hz"] == 500e6 and est["system_config"] == "Ethos_U55_High_End_Embedded"
    assert est["sram_kib"] > 100 and est["flash_kib"] > 10  # activations in SRAM, weights in flash
    assert est["inference_ms"] > 0 and est["cycles_total"] > 0 and est["macs"] > 50e6
    # the estimate is Vela's cycle count at the configuration's clock
    assert est["inference_ms"] == pytest.approx(1e3 * est["cycles_total"] / est["clock_hz"], rel=1e-3)
    assert est["note"] == vela.ESTIMATE_LABEL
    compiled = analyse(est["compiled_model"])  # the NPU command stream sits in one custom op per NPU subgraph
    assert any(op.startswith("CUSTOM(ethos-u") for op in compiled.op_types)
    assert (out / f"{est['compiled_model'].split('/')[-1].replace('_vela.tflite', '_summary.csv')}").is_file()


def test_every_configuration_compiles(int8_full, tmp_path):  # noqa: F811
    ests = {e["config"]: e for e in vela.compile_all(int8_full, out_dir=tmp_path)}
    assert set(ests) == set(vela.CONFIGS)
    saved = json.loads((tmp_path / f"{int8_full.stem}_ethos-u.json").read_text())
    assert [c["config"] for c in saved["configs"]] == list(vela.CONFIGS) and saved["note"] == vela.ESTIMATE_LABEL
    assert all(Path(e["compiled_model"]).is_file() for e in ests.values())
    for c, est in ests.items():
        assert est["accelerator"].lower().replace("_", "-") == c, est["accelerator"]
        assert est["npu_share"] >= NPU_SHARE_MIN and est["inference_ms"] > 0
    # twice the MACs per cycle at twice the clock: the U65-512 is estimated faster than the U55-256
    assert ests["ethos-u65-512"]["inference_ms"] < ests["ethos-u55-256"]["inference_ms"]


def test_fp32_model_is_refused_naming_the_float_ops(tflite_fp32):
    with pytest.raises(FloatOpsError) as e:
        vela.compile_model(tflite_fp32, "ethos-u55-256")
    msg = str(e.value)
    assert "Vela" in msg and "full-integer models only" in msg
    for op in ("CONV_2D", "GELU"):
        assert op in msg


def test_fp32_npu_share_without_strict_is_zero(tflite_fp32):
    """What :mod:`.where` reports for a float artifact: Vela leaves every op on the CPU, each with a reason."""
    from egeunet_deploy.runtimes.where import npu_placement

    est = vela.compile_model(tflite_fp32, "ethos-u55-256", strict=False)
    assert est["ops_npu"] == 0 and est["ops_cpu"] == est["ops_total"] and not est["whole_network_on_npu"]
    assert any("Float32" in r for r in est["cpu_reasons"])
    rec = npu_placement(tflite_fp32)
    assert rec["runs"] is False and rec["ms"] is None and "GELU" in rec["reason"]


def test_non_tflite_and_unknown_config_are_refused(onnx_fp32, int8_full):  # noqa: F811
    with pytest.raises(ValueError, match="Vela compiles .tflite files"):
        vela.compile_model(onnx_fp32)
    with pytest.raises(ValueError, match="unknown Ethos-U configuration"):
        vela.compile_model(int8_full, "ethos-u99-1")


def test_bench_device_ethos_u_prints_the_estimate(int8_full, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "npu.json"
    rc = main(["bench", "--device", "ethos-u55-256", "--artifact", str(int8_full), "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "Vela's estimate, not a measurement" in text and "ops on the NPU" in text and "SRAM" in text
    rec = json.loads(out.read_text())
    assert rec["device"] == "ethos-u55-256" and rec["estimate"]["inference_ms"] > 0
    assert rec["results"][0]["source"] == vela.ESTIMATE_LABEL


def test_bench_device_ethos_u_refuses_fp32_with_exit_2(tflite_fp32, capsys):
    assert main(["bench", "--device", "ethos-u65-512", "--artifact", str(tflite_fp32)]) == 2
    assert "full-integer models only" in capsys.readouterr().err


def test_cli_devices_are_the_vela_configurations():
    from egeunet_deploy.cmd_runtimes import VELA_DEVICES

    assert VELA_DEVICES == tuple(vela.CONFIGS)


def test_where_reports_all_three_places(int8_full, onnx_fp32):  # noqa: F811
    from egeunet_deploy.runtimes.where import where

    w = where(int8_full)
    assert w["cpu"]["runs"] and w["cpu"]["runtime"] == "litert"
    assert w["npu"]["runs"] and w["npu"]["npu_share"] >= NPU_SHARE_MIN and w["npu"]["ms"] > 0
    assert w["mcu"]["runs"] is not bool(tflm_blockers(int8_full))  # TFLite Micro: see test_tflm.py
    w = where(onnx_fp32)
    assert w["cpu"]["runs"] and not w["npu"]["runs"] and not w["mcu"]["runs"]
    assert ".tflite" in w["npu"]["reason"] and ".tflite" in w["mcu"]["reason"]


def test_report_labels_vela_figures_as_estimates_never_as_timings():
    from egeunet_deploy.runtimes.report import Footnotes, device_summary

    npu = {"runs": True, "ms": 29.39, "note": "Vela", "estimate": vela.ESTIMATE_LABEL}
    rows = [{"file": "egeunet_int8-full.tflite", "target": "tflite", "precision": "int8-full", "size_bytes": 270000,
             "drift_status": "passed", "delta_dsc": -0.001, "agreement": 0.97, "p50_ms": {"1": 13.8}, "npu": npu},
            {"file": "egeunet_fp32.tflite", "target": "tflite", "precision": "fp32", "size_bytes": 340000,
             "drift_status": "passed", "delta_dsc": 0.0, "agreement": 1.0, "p50_ms": {"1": 7.9},
             "npu": {"runs": False, "ms": None, "note": "float"}}]
    html = device_summary(rows, Footnotes())
    npu_row = next(line for line in html.split("<tr>") if ">NPU<" in line)
    assert "est. 29.39" in npu_row and "egeunet_int8-full.tflite" in npu_row
    assert "est. 7.90" not in html and "7.90" in html  # host timings stay plain
