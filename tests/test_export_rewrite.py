"""The rewritten export graph (export/rewrite.py) computes the same function as DeployEGEUNet.

Real images, shipped weights, both layouts, both GroupNorm-statistics forms; the sign fold that lets max-pool
commute with the GroupNorm affine is exercised on a network whose GroupNorm gammas were partly negated (checked in
float64, where the rewrite must be exact up to rounding of its folded constants)."""

from __future__ import annotations

import copy

import pytest
import torch

from egeunet_deploy.export.rewrite import BLOCKS, FastEGEUNet, fast_module
from egeunet_deploy.model.contract import minmax_normalize, to_model_input
from egeunet_deploy.model.ege_unet import DeployEGEUNet
from egeunet_deploy.model.metrics import dice

TOL_FP32 = 1e-5


def _run(fast: FastEGEUNet, x_nchw: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if fast.layout == "NHWC":
            return fast(x_nchw.permute(0, 2, 3, 1).contiguous()).permute(0, 3, 1, 2)
        return fast(x_nchw)


@pytest.fixture(scope="module")
def inputs(sample_test_set):
    return to_model_input(sample_test_set.images[:6])


@pytest.mark.parametrize(("layout", "int8_friendly", "phase_encoder1"),
                         [(lay, f8, True) for lay in ("NCHW", "NHWC") for f8 in (True, False)]
                         + [("NCHW", False, False), ("NHWC", False, False)])
def test_rewrite_equals_deploy_on_real_images(shipped, inputs, layout, int8_friendly, phase_encoder1):
    net = shipped[0]
    with torch.no_grad():
        want = DeployEGEUNet(copy.deepcopy(net))(inputs)
    got = _run(FastEGEUNet(net, layout=layout, int8_friendly=int8_friendly, phase_encoder1=phase_encoder1), inputs)
    assert (got - want).abs().max().item() <= TOL_FP32
    assert dice((got >= 0.5).numpy(), (want >= 0.5).numpy()) >= 0.999


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("phase_encoder1", [True, False])
def test_sign_fold_is_exact_with_negative_groupnorm_gammas(shipped, inputs, layout, phase_encoder1):
    net = copy.deepcopy(shipped[0]).double()
    with torch.no_grad():
        for i in range(1, 6):
            getattr(net, f"ebn{i}").weight[::3] *= -1  # max-pool must become a min-pool on these channels
        assert sum(int((getattr(net, f"ebn{i}").weight < 0).sum()) for i in range(1, 6)) > 0
        want = DeployEGEUNet(copy.deepcopy(net))(inputs.double())
        fast = FastEGEUNet(net, layout=layout, phase_encoder1=phase_encoder1).double()
    got = _run(fast, inputs.double())
    # float64: this sign-scrambled network amplifies float32 rounding to ~4e-4 between two PyTorch evaluations of
    # itself; in float64 only the rewrite's float32-built constants (1/C averages, fold products) remain
    assert (got - want).abs().max().item() <= TOL_FP32


def test_baked_module_is_contract_plus_network(shipped, sample_test_set):
    images = torch.from_numpy(sample_test_set.images[:2])
    net = shipped[0]
    with torch.no_grad():
        baked = fast_module(net, "NHWC", baked=True)(images)
        raw = fast_module(net, "NHWC", baked=False)(minmax_normalize(images))
    assert torch.equal(baked, raw)


def test_rewrite_leaves_callers_network_untouched(shipped):
    net = shipped[0]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    FastEGEUNet(net)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(getattr(m, "folded_gates", None) is None for m in net.modules())


def test_blocks_are_named_submodules_in_execution_order(shipped):
    fast = FastEGEUNet(shipped[0])
    names = {n for n, _ in fast.named_children()}
    assert set(BLOCKS) - {"preprocess"} <= names
    assert BLOCKS.index("decoder1") < BLOCKS.index("GAB5") < BLOCKS.index("decoder2") < BLOCKS.index("GAB1")


def test_rejects_variants_it_does_not_implement():
    from egeunet_deploy.model.ege_unet import create_model

    with pytest.raises(ValueError, match="bridge=True, gt_ds=True"):
        FastEGEUNet(create_model("egeunet_nods"))


def test_rewrite_stores_each_constant_once(shipped):
    """The rewrite's constants are the network's parameters plus the folded gates, stored once, and a few small fixed
    matrices: no gate stored twice (gate * w, gate * b), no C x C group matrices, no C^2 centring matrices in the
    wide GABs (they were 2.1x the parameters in the first rewrite)."""
    from egeunet_deploy.model.layers import GHPA

    net = shipped[0]
    fast = FastEGEUNet(net)
    deploy = DeployEGEUNet(copy.deepcopy(net))
    gates = sum(g.numel() for m in deploy.modules() if isinstance(m, GHPA) for g in m.folded_gates)
    params = sum(p.numel() for p in net.parameters())
    stored = sum(b.numel() for b in fast.buffers())
    assert stored <= 1.15 * params + gates, (stored, params, gates)


def test_onnx_artifact_names_its_ort_level_and_the_runner_honours_it(onnx_fp32):
    from egeunet_deploy.export.metadata import read_metadata
    from egeunet_deploy.export.onnx import ORT_GRAPH_OPTIMIZATION_LEVEL
    from egeunet_deploy.runtimes.onnx_runner import OnnxRunner

    assert read_metadata(onnx_fp32)["ort_graph_optimization_level"] == ORT_GRAPH_OPTIMIZATION_LEVEL["fast"]
    info = OnnxRunner(threads=1, device="cpu").load(onnx_fp32).info()
    assert (info["graph_optimization_level"], info["graph_optimization_level_from"]) == \
        (ORT_GRAPH_OPTIMIZATION_LEVEL["fast"], "metadata")
    info = OnnxRunner(threads=1, device="cpu", graph_optimization_level="basic").load(onnx_fp32).info()
    assert (info["graph_optimization_level"], info["graph_optimization_level_from"]) == ("basic", "option")
    with pytest.raises(ValueError, match="known: disable, basic, extended, all"):
        OnnxRunner(threads=1, device="cpu", graph_optimization_level="fastest").load(onnx_fp32)
