"""TFLite (LiteRT) export on real ISIC images: fp32 / fp16 / int8 vs PyTorch, builtin ops only, metadata."""

from __future__ import annotations

import json
import zipfile
from collections import Counter

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from export_fixtures import (  # noqa: F401  (fixtures)
    AGREE_FP16,
    AGREE_INT8_FLOOR,
    agreement,
    assert_fp32_close,
    calib_path,
    reference_probs,
    run_artifact,
)

from egeunet_deploy.calibration.blame import DEFAULT_FLOAT_BLOCKS, BlameSet
from egeunet_deploy.export import export
from egeunet_deploy.export.metadata import TFLITE_ASSOCIATED_FILE, read_manifest, read_metadata
from egeunet_deploy.model.checkpoint import sha256_file
from egeunet_deploy.model.contract import CONTRACT
from egeunet_deploy.runtimes.drift import read_blame

PRECISIONS = ("fp32", "fp16", "int8")
BLAME_BLOCKS = ("preprocess", "encoder3", "GAB3", "final")
pytestmark = pytest.mark.slow  # converts real models (CI runs it: keep it under a minute or two)


@pytest.fixture(scope="module")
def tflite_dir(tmp_path_factory, calib_path, sample_test_set):  # noqa: F811
    """fp32, fp16, int8 in one folder; the float conversion runs once (the exporter caches it in-process). The int8
    blame ranking runs on 8 real test pairs and four blocks (the mechanics; the full ranking is the default)."""
    out = tmp_path_factory.mktemp("tflite")
    blame = BlameSet(sample_test_set.images[:8], sample_test_set.masks[:8], "8 bundled test pairs", BLAME_BLOCKS)
    for precision in PRECISIONS:
        export("tflite", precision, out_dir=out, calib=calib_path, blame=True, blame_data=blame, log=None)
    return out


@pytest.fixture(scope="module")
def probs(tflite_dir, sample_test_set):
    return {p: run_artifact(tflite_dir / f"egeunet_{p}.tflite", sample_test_set.images) for p in PRECISIONS}


def ops_of(path) -> Counter:
    it = Interpreter(model_path=str(path),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return Counter(o["op_name"] for o in it._get_ops_details())


def test_fp32_matches_pytorch(probs, reference_probs, shipped, sample_test_set):  # noqa: F811
    assert_fp32_close(probs["fp32"], reference_probs, shipped[0], sample_test_set.images)


def test_fp16_agrees(probs, reference_probs):  # noqa: F811
    assert agreement(probs["fp16"], reference_probs) >= AGREE_FP16


def test_int8_runs_and_is_measured(probs, reference_probs, tflite_dir):  # noqa: F811
    p = probs["int8"]
    assert np.isfinite(p).all() and p.min() >= 0 and p.max() <= 1
    agree = agreement(p, reference_probs)
    print(f"tflite int8: mask agreement {agree:.4f}, max abs diff {np.abs(p - reference_probs).max():.3f}")
    assert agree >= AGREE_INT8_FLOOR
    ops = ops_of(tflite_dir / "egeunet_int8.tflite")
    assert ops["QUANTIZE"] > 0 and ops["DEQUANTIZE"] > 0


def test_int8_recipe_keeps_the_full_resolution_blocks_float(tflite_dir):
    """The default recipe: int8 convolutions in the low-resolution blocks, the blamed and full-resolution blocks
    float (the first convolution reads the stretched image, the last one produces the logits)."""
    it = Interpreter(model_path=str(tflite_dir / "egeunet_int8.tflite"))
    dtype = {t["index"]: t["dtype"] for t in it.get_tensor_details()}
    convs = [o for o in it._get_ops_details() if o["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    weight_types = [dtype[o["inputs"][1]] for o in convs]
    assert weight_types[0] == np.float32 and weight_types[-1] == np.float32
    n_int8 = sum(t == np.int8 for t in weight_types)
    assert 0 < n_int8 < len(convs)
    q = read_metadata(tflite_dir / "egeunet_int8.tflite")["quantization"]
    assert tuple(q["float_blocks"]) == DEFAULT_FLOAT_BLOCKS and "RSQRT" in q["float_ops"]


def test_int8_blame_ranking_in_metadata_and_beside(tflite_dir):
    path = tflite_dir / "egeunet_int8.tflite"
    meta = read_metadata(path)
    rows = meta["int8_blame"]
    assert [r["block"] for r in rows] != [] and {r["block"] for r in rows} == set(BLAME_BLOCKS)
    assert [r["dsc_delta"] for r in rows] == sorted(r["dsc_delta"] for r in rows)
    assert all(0.0 <= r["agreement"] <= 1.0 for r in rows)
    # preprocess has no convolution: quantizing only it with the conv recipe changes nothing
    pre = next(r for r in rows if r["block"] == "preprocess")
    assert pre["agreement"] == 1.0 and pre["dsc_delta"] == 0.0
    assert {r["block"] for r in rows if r["quantized_in_artifact"]} == set(BLAME_BLOCKS) - set(DEFAULT_FLOAT_BLOCKS)
    assert meta["int8_blame_info"]["images"] == 8
    side = json.loads((tflite_dir / "egeunet_int8.tflite.blame.json").read_text())
    assert side["int8_blame"] == rows and read_blame(path) == side
    assert read_blame(tflite_dir / "egeunet_fp32.tflite") is None


@pytest.mark.parametrize("precision", PRECISIONS)
def test_graph_is_transpose_free_and_names_stripped(tflite_dir, precision):
    """NHWC end to end (no layout transposes) and no module-path tensor names (they were ~45% of the file)."""
    path = tflite_dir / f"egeunet_{precision}.tflite"
    assert ops_of(path)["TRANSPOSE"] == 0
    it = Interpreter(model_path=str(path))
    named = [t["name"] for t in it.get_tensor_details() if t["name"]]
    assert len(named) <= 2, named[:5]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_builtin_ops_only_and_io_contract(tflite_dir, precision):
    path = tflite_dir / f"egeunet_{precision}.tflite"
    ops = ops_of(path)
    assert not [n for n in ops if n.upper().startswith("FLEX") or n.upper() == "CUSTOM"]
    it = Interpreter(model_path=str(path))
    sig = it.get_signature_list()["serving_default"]
    assert sig == {"inputs": ["image"], "outputs": ["prob"]}
    runner = it.get_signature_runner("serving_default")
    (inp,), (out,) = runner.get_input_details().values(), runner.get_output_details().values()
    assert list(inp["shape"]) == [1, 256, 256, 3] and inp["dtype"] == np.uint8
    assert list(out["shape"]) == [1, 256, 256, 1] and out["dtype"] == np.float32


@pytest.mark.parametrize("precision", PRECISIONS)
def test_metadata_round_trip(tflite_dir, precision, calib_path):  # noqa: F811
    path = tflite_dir / f"egeunet_{precision}.tflite"
    with zipfile.ZipFile(path) as z:
        assert z.namelist() == [TFLITE_ASSOCIATED_FILE]
    meta = read_metadata(path)
    assert meta["format"] == "tflite" and meta["precision"] == precision
    assert meta["input"] == {"name": "image", "shape": [1, 256, 256, 3], "dtype": "uint8", "layout": "NHWC"}
    assert meta["preprocessing_in_graph"] is True and meta["contract_sha256"] == CONTRACT.fingerprint()
    assert {"litert-torch", "ai-edge-litert", "ai-edge-quantizer"} <= set(meta["tool_versions"])
    assert meta["graph"]["transposes"] == meta["graph"]["ops"].get("TRANSPOSE", 0)
    want_calib = sha256_file(calib_path) if precision == "int8" else None
    assert meta["calibration_sha256"] == want_calib
    assert read_manifest(tflite_dir)["artifacts"][path.name]["sha256"] == sha256_file(path)
