"""ONNX export on real ISIC images: equivalence with PyTorch, baked preprocessing, folded gates, int8, metadata.

Also the torch-level checks every exporter relies on (wrapper == contract, folded == unfolded gates)."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
from export_fixtures import (  # noqa: F401  (fixtures)
    AGREE_INT8_FLOOR,
    agreement,
    assert_fp32_close,
    assert_same_masks,
    calib_path,
    reference_probs,
    run_artifact,
)

from egeunet_deploy.calibration.blame import DEFAULT_FLOAT_BLOCKS, BlameSet
from egeunet_deploy.calibration.onnx_quant import DEFAULT_ORT_RECIPE, node_block
from egeunet_deploy.export import export
from egeunet_deploy.export.metadata import read_manifest, read_metadata
from egeunet_deploy.export.wrappers import IOSpec, deploy_module
from egeunet_deploy.model.bundled import DEFAULT_WEIGHTS
from egeunet_deploy.model.checkpoint import sha256_file
from egeunet_deploy.model.contract import CONTRACT, to_model_input
from egeunet_deploy.model.ege_unet import DeployEGEUNet
from egeunet_deploy.model.evaluate import predict_probs
from egeunet_deploy.model.layers import GHPA


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory, calib_path):  # noqa: F811
    """One folder, four artifacts: deployment fp32, raw fp32, NHWC + dynamic batch fp32, int8 (QDQ)."""
    out = tmp_path_factory.mktemp("onnx")
    export("onnx", "fp32", out_dir=out, log=None)
    export("onnx", "fp32", out_dir=out, raw=True, log=None)
    export("onnx", "fp32", out_dir=out, nhwc=True, dynamic_batch=True, log=None)
    export("onnx", "int8", out_dir=out, calib=calib_path, log=None)
    return out


def test_artifact_names(onnx_dir):
    names = {p.name for p in onnx_dir.iterdir() if p.suffix == ".onnx"}
    assert names == {"egeunet_fp32.onnx", "egeunet_fp32_raw.onnx", "egeunet_fp32_nhwc_dynamic.onnx",
                     "egeunet_int8.onnx"}


def test_fp32_matches_pytorch(onnx_dir, sample_test_set, reference_probs, shipped):  # noqa: F811
    probs = run_artifact(onnx_dir / "egeunet_fp32.onnx", sample_test_set.images)
    assert_fp32_close(probs, reference_probs, shipped[0], sample_test_set.images)


def test_baked_preprocessing_equals_contract_in_python(onnx_dir, sample_test_set):
    """The uint8 graph (min-max inside) and the raw graph fed with the Python contract give the same masks."""
    images = sample_test_set.images[:8]
    baked = run_artifact(onnx_dir / "egeunet_fp32.onnx", images)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_dir / "egeunet_fp32_raw.onnx"), providers=["CPUExecutionProvider"])
    contract = np.concatenate([sess.run(["prob"], {"image": to_model_input(images[i : i + 1]).numpy()})[0]
                               for i in range(len(images))])[:, 0]
    assert_same_masks(baked, contract)
    assert np.abs(baked - contract).max() <= 1e-5


def test_wrapper_equals_contract_in_torch(shipped, sample_test_set):
    """Torch level: the baked wrapper on uint8 == DeployEGEUNet on ``contract.to_model_input``, bit for bit in NCHW
    (a flat image included: min-max must give zeros, not NaN). In NHWC the network runs on a permuted tensor, i.e.
    PyTorch's channels_last evaluation (the drift reference), which it equals; that one differs from NCHW by float
    noise (1.0e-4 with the epoch-117 weights: LayerNorm eps 1e-6 on flat regions), with the same masks."""
    net = shipped[0]
    images = np.concatenate([sample_test_set.images[:3], np.full((1, 256, 256, 3), 97, np.uint8)])
    plain = DeployEGEUNet(copy.deepcopy(net))
    with torch.no_grad():
        want = plain(to_model_input(images))[:, 0]
        spec = IOSpec("NCHW", baked=True)
        nchw = deploy_module(net, spec)(torch.from_numpy(spec.feed(images)))[:, 0]
        nhwc = deploy_module(net, IOSpec("NHWC", baked=True))(torch.from_numpy(images[:3]))[..., 0]
    assert torch.equal(nchw, want)
    assert np.abs(nhwc.numpy() - predict_probs(net, images[:3])).max() <= 1e-6
    assert_same_masks(nhwc.numpy(), want[:3].numpy())


def test_folded_gates_equal_unfolded(shipped, sample_test_set):
    net = shipped[0]
    folded = DeployEGEUNet(copy.deepcopy(net))
    unfolded = DeployEGEUNet(copy.deepcopy(net), input_hw=None)
    ghpas = [m for m in folded.modules() if isinstance(m, GHPA)]
    assert ghpas and all(m.folded_gates is not None for m in ghpas)
    assert all(m.folded_gates is None for m in unfolded.modules() if isinstance(m, GHPA))
    x = to_model_input(sample_test_set.images[:4])
    with torch.no_grad():
        assert (folded(x) - unfolded(x)).abs().max().item() <= 1e-5


def test_export_leaves_callers_network_unfolded(shipped):
    net = shipped[0]
    deploy_module(net, IOSpec("NCHW", baked=True))
    assert all(m.folded_gates is None for m in net.modules() if isinstance(m, GHPA))


def test_onnx_graph_is_opset17_checked_and_gates_are_constants(onnx_dir):
    model = onnx.load(str(onnx_dir / "egeunet_fp32.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"] == 17
    ops = {n.op_type for n in model.graph.node}
    # 9 Resize = 4 GAB (GAB5's resize to its own size is the identity, dropped by the rewrite) + 4 decoder
    # upsamplings + the final one; unfolded gates would add 3 per GHPA (params_xy/zx/zy)
    assert sum(n.op_type == "Resize" for n in model.graph.node) == 9
    assert "Cast" in ops and "ReduceMin" in ops and "ReduceMax" in ops  # the baked contract


def test_metadata_matches_graph(onnx_dir):
    path = onnx_dir / "egeunet_fp32.onnx"
    meta = read_metadata(path)
    model = onnx.load(str(path))
    (inp,), (out,) = model.graph.input, model.graph.output
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    assert (inp.name, dims, inp.type.tensor_type.elem_type) == ("image", meta["input"]["shape"], onnx.TensorProto.UINT8)
    assert out.name == meta["output"]["name"] == "prob"
    assert meta["input"] == {"name": "image", "shape": [1, 3, 256, 256], "dtype": "uint8", "layout": "NCHW"}
    assert meta["preprocessing_in_graph"] is True and meta["contract_sha256"] == CONTRACT.fingerprint()
    assert meta["weights_sha256"] == sha256_file(DEFAULT_WEIGHTS)
    assert meta["calibration_sha256"] is None and meta["quantization"] is None
    assert {"torch", "onnx", "onnxruntime", "onnxslim"} <= set(meta["tool_versions"])
    assert meta["opset"] == 17 and meta["gates_folded"] is True
    raw = read_metadata(onnx_dir / "egeunet_fp32_raw.onnx")
    assert raw["preprocessing_in_graph"] is False and raw["input"]["dtype"] == "float32"


def test_nhwc_dynamic_batch(onnx_dir, sample_test_set):
    path = onnx_dir / "egeunet_fp32_nhwc_dynamic.onnx"
    meta = read_metadata(path)
    assert meta["input"]["shape"] == ["batch", 256, 256, 3] and meta["output"]["shape"] == ["batch", 256, 256, 1]
    images = sample_test_set.images[:4]
    batched = run_artifact(path, images)
    single = run_artifact(onnx_dir / "egeunet_fp32.onnx", images)
    assert np.abs(batched - single).max() <= 1e-5


def test_int8_runs_and_is_measured(onnx_dir, sample_test_set, reference_probs, calib_path):  # noqa: F811
    path = onnx_dir / "egeunet_int8.onnx"
    model = onnx.load(str(path))
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert q, "no QDQ nodes: the model was not quantized"
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    fed_by_dq = [any(producer.get(i) == "DequantizeLinear" for i in c.input) for c in convs]
    assert not fed_by_dq[0] and not fed_by_dq[-1], "the recipe keeps the first and last convolutions in float"
    # exactly the convolutions of the blocks the recipe quantizes (node names carry the block)
    assert fed_by_dq == [node_block(c.name) not in DEFAULT_FLOAT_BLOCKS for c in convs]
    assert 0 < sum(fed_by_dq) < len(convs)
    meta = read_metadata(path)
    assert meta["calibration_sha256"] == sha256_file(calib_path)
    assert meta["quantization"]["name"] == DEFAULT_ORT_RECIPE.name and meta["calibration"]["n_images"] == 64
    probs = run_artifact(path, sample_test_set.images)
    assert np.isfinite(probs).all() and probs.min() >= 0 and probs.max() <= 1
    agree = agreement(probs, reference_probs)
    print(f"onnx int8: mask agreement {agree:.4f}, max abs diff {np.abs(probs - reference_probs).max():.3f}")
    assert agree >= AGREE_INT8_FLOOR


def test_manifest_lists_every_artifact_with_its_hash(onnx_dir):
    manifest = read_manifest(onnx_dir)
    files = {p.name for p in onnx_dir.iterdir() if p.suffix == ".onnx"}
    assert set(manifest["artifacts"]) == files
    for name, entry in manifest["artifacts"].items():
        assert entry["sha256"] == sha256_file(onnx_dir / name)
        assert entry["size_bytes"] == (onnx_dir / name).stat().st_size
        assert entry["target"] == "onnx" and entry["precision"] in ("fp32", "int8")
    assert json.loads((onnx_dir / "manifest.json").read_text()) == manifest


def test_int8_blame_ranks_blocks_on_real_images(tmp_path, calib_path, sample_test_set):  # noqa: F811
    """ONNX Runtime blame mechanics on two blocks and 6 real pairs (the export default ranks every block)."""
    blame = BlameSet(sample_test_set.images[:6], sample_test_set.masks[:6], "6 bundled test pairs",
                     ("encoder4", "final"))
    path = export("onnx", "int8", out_dir=tmp_path, calib=calib_path, blame=True, blame_data=blame, log=None)
    meta = read_metadata(path)
    rows = meta["int8_blame"]
    assert [r["block"] for r in rows] in (["encoder4", "final"], ["final", "encoder4"])
    assert [r["dsc_delta"] for r in rows] == sorted(r["dsc_delta"] for r in rows)
    assert {r["block"]: r["quantized_in_artifact"] for r in rows} == {"encoder4": True, "final": False}
    assert all(0.0 <= r["agreement"] <= 1.0 for r in rows)
    assert meta["int8_blame_info"]["images"] == 6 and meta["int8_blame_info"]["calibration_images"] == 16
    assert json.loads((tmp_path / "egeunet_int8.onnx.blame.json").read_text())["int8_blame"] == rows
