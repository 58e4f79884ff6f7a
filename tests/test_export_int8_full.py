"""The full-integer TFLite artifact: integer everywhere but the input's min-max stretch, int8 output, census."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from integer_fixtures import int8_full  # noqa: F401  (fixture)

from egeunet_deploy.export import ExportError
from egeunet_deploy.export.metadata import read_metadata
from egeunet_deploy.export.tflite_integer import PREPROCESSING_FLOAT_OPS, check_integer_only, op_census


def test_census_has_no_float_tensor_past_the_preprocessing(int8_full):  # noqa: F811
    census = op_census(int8_full.read_bytes())
    n_pre = len(census["float_op_indices"])
    assert census["float_op_indices"] == list(range(n_pre))  # the graph's first ops, nothing later
    assert set(census["float_ops"]) <= PREPROCESSING_FLOAT_OPS and n_pre <= 16
    assert census["ops"].get("DEQUANTIZE", 0) <= 1  # at most the input's uint8 -> float step (scale 1)
    assert census["activation_dtypes"]["int8"] > 500
    for op in ("CONV_2D", "RSQRT", "LOGISTIC", "MEAN", "RESIZE_BILINEAR", "CONCATENATION"):
        assert census["ops"].get(op, 0) > 0, op  # the network's ops are there, in int8
    assert "GELU" not in census["ops"]  # the integer variant's sigmoid form: TFLite Micro has no GELU kernel
    check_integer_only(census)


def test_no_elementwise_op_adds_a_broadcast_constant(int8_full):  # noqa: F811
    """Vela runs an Ethos-U55 ADD of a (1, 1, 1, C) constant at ~13 cycles per element (GAB1's LayerNorm bias alone
    was 8.4 ms of a 44.5 ms estimate): the integer graph adds constant per-channel biases in 1x1 depthwise
    convolutions instead (export.rewrite._Layout.add_bias)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(int8_full),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    ops = it._get_ops_details()
    produced = {t for op in ops for t in op["outputs"]} | {d["index"] for d in it.get_input_details()}
    shapes = {d["index"]: tuple(d["shape"]) for d in it.get_tensor_details()}
    constant_adds = [op["index"] for op in ops if op["op_name"] == "ADD"
                     and any(t not in produced and len(shapes[t]) == 4 and shapes[t][1:3] == (1, 1)
                             for t in op["inputs"])]
    assert not constant_adds
    assert sum(op["op_name"] == "DEPTHWISE_CONV_2D" for op in ops) >= 9 + 20  # 9 bias convs beside the GAB filters


def test_metadata_carries_the_integer_output_census_and_provenance(int8_full):  # noqa: F811
    meta = read_metadata(int8_full)
    q = meta["output_quantization"]
    assert (meta["precision"], meta["output"]["dtype"], q["dtype"]) == ("int8-full", "int8", "int8")
    assert q["scale"] == pytest.approx(1 / 256) and q["zero_point"] == -128
    assert q["threshold_q"] == 0  # p >= 0.5  <=>  q >= 0
    assert meta["op_census"]["n_ops"] == sum(meta["op_census"]["ops"].values())
    assert meta["model_cfg"]["act"] == "sigmoid_gelu" and meta["model_cfg"]["align_corners"] is False
    assert meta["quantization"]["name"] == "aeq-a8w8-full-integer"
    manifest = json.loads((int8_full.parent / "manifest.json").read_text())
    assert manifest["artifacts"][int8_full.name]["op_census"] == meta["op_census"]


def test_integer_output_thresholds_like_the_probability(int8_full, sample_test_set):  # noqa: F811
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(int8_full), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert np.dtype(inp["dtype"]) == np.uint8 and np.dtype(out["dtype"]) == np.int8
    it.set_tensor(inp["index"], sample_test_set.images[:1])
    it.invoke()
    q = it.get_tensor(out["index"])
    scale, zero = out["quantization"]
    p = (q.astype(np.float32) - zero) * scale
    threshold_q = read_metadata(int8_full)["output_quantization"]["threshold_q"]
    assert 0 < (q >= threshold_q).mean() < 1  # a real mask, not all or nothing
    assert np.array_equal(q >= threshold_q, p >= 0.5)


def test_a_mixed_int8_graph_is_refused_naming_its_float_ops(exported):
    census = op_census(exported("tflite", "int8").read_bytes())
    with pytest.raises(ExportError, match="not a full-integer graph: float tensors at ops .*(RSQRT|MUL|ADD)"):
        check_integer_only(census)


def test_export_step_compiles_for_ethos_u_and_records_the_estimates(int8_full, tmp_path, capsys):  # noqa: F811
    pytest.importorskip("ethosu.vela")
    import shutil

    from egeunet_deploy.cmd_export import ethos_u_step

    folder = tmp_path / "art"  # a copy: the shared artifact's folder stays as the other tests expect it
    folder.mkdir()
    art = Path(shutil.copy(int8_full, folder))
    shutil.copy(int8_full.parent / "manifest.json", folder)
    ethos_u_step(art)
    entry = json.loads((folder / "manifest.json").read_text())["artifacts"][art.name]
    u55 = next(e for e in entry["ethos_u"] if e["config"] == "ethos-u55-256")
    assert u55["npu_share"] >= 0.97 and u55["inference_ms"] > 0 and u55["sram_kib"] > 0
    assert "estimate" in entry["ethos_u_note"]
    assert list((folder / "ethos-u").glob("*_vela.tflite"))
    assert (folder / "ethos-u" / f"{art.stem}_ethos-u.json").is_file()
    assert "ethos-u55-256" in capsys.readouterr().out
