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


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("int8_friendly", [True, False])
def test_rewrite_equals_deploy_on_real_images(shipped, inputs, layout, int8_friendly):
    net = shipped[0]
    with torch.no_grad():
        want = DeployEGEUNet(copy.deepcopy(net))(inputs)
    got = _run(FastEGEUNet(net, layout=layout, int8_friendly=int8_friendly), inputs)
    assert (got - want).abs().max().item() <= TOL_FP32
    assert dice((got >= 0.5).numpy(), (want >= 0.5).numpy()) >= 0.999


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_sign_fold_is_exact_with_negative_groupnorm_gammas(shipped, inputs, layout):
    net = copy.deepcopy(shipped[0]).double()
    with torch.no_grad():
        for i in range(1, 6):
            getattr(net, f"ebn{i}").weight[::3] *= -1  # max-pool must become a min-pool on these channels
        assert sum(int((getattr(net, f"ebn{i}").weight < 0).sum()) for i in range(1, 6)) > 0
        want = DeployEGEUNet(copy.deepcopy(net))(inputs.double())
        fast = FastEGEUNet(net, layout=layout).double()
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
