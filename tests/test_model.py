"""EGE-UNet matches the official checkpoint format and computation; variants and the deploy view work."""

from __future__ import annotations

import copy
import os
import signal
import time
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from egeunet_deploy.model import DeployEGEUNet, create_model, list_models
from egeunet_deploy.model.checkpoint import WeightsError, atomic_write_bytes, load_model
from egeunet_deploy.model.ege_unet import fold_all_gates
from egeunet_deploy.model.info import count_macs
from egeunet_deploy.model.interrupts import remember_interrupts
from egeunet_deploy.model.layers import (
    GHPA,
    ChannelLayerNorm,
    _DilatedDepthwiseConv,
    _GroupNormMaxPool,
    _NchwChannelLayerNorm,
    _NhwcLayerNorm,
    group_norm_max_pool,
    resize_bilinear,
    use_fused_norms,
    use_training_fast_paths,
)
from egeunet_deploy.model.train import recipe_loss

REFERENCE_TSV = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "official_state_dict_keys.tsv"


def official_keys() -> dict[str, tuple[int, ...]]:
    if not REFERENCE_TSV.is_file():
        pytest.skip(f"{REFERENCE_TSV} not found")
    rows = [line.rstrip("\n").split("\t") for line in REFERENCE_TSV.read_text().splitlines() if line[:1] != "#"]
    return {k: tuple(int(d) for d in shape.split("x")) for k, shape in rows}


def test_state_dict_matches_official_layout():
    ref = official_keys()
    net = create_model("egeunet")
    mine = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert mine == ref
    assert len(ref) == 314
    assert sum(p.numel() for p in net.parameters()) == 53_374


def test_macs_match_paper():
    assert count_macs(create_model("egeunet")) == 72_096_256  # the paper's "0.072 GFLOPs"


def _paper_ghpa_forward(self: GHPA, x: torch.Tensor) -> torch.Tensor:
    """Algorithm 1 of the paper, literally: permute each group so the gate's axes come last, multiply, permute
    back, and the channel LayerNorm with a division by sqrt. Our GHPA must compute the same function."""

    def layer_norm(norm, t):
        u = t.mean(1, keepdim=True)
        s = (t - u).pow(2).mean(1, keepdim=True)
        t = (t - u) / torch.sqrt(s + norm.eps)
        return norm.weight[:, None, None] * t + norm.bias[:, None, None]

    x = layer_norm(self.norm1, x)
    x1, x2, x3, x4 = torch.chunk(x, 4, dim=1)
    x1 = x1 * self.conv_xy(F.interpolate(self.params_xy, size=x1.shape[2:4], mode="bilinear", align_corners=True))
    x2 = x2.permute(0, 3, 1, 2)
    gate = F.interpolate(self.params_zx, size=x2.shape[2:4], mode="bilinear", align_corners=True).squeeze(0)
    x2 = (x2 * self.conv_zx(gate).unsqueeze(0)).permute(0, 2, 3, 1)
    x3 = x3.permute(0, 2, 1, 3)
    gate = F.interpolate(self.params_zy, size=x3.shape[2:4], mode="bilinear", align_corners=True).squeeze(0)
    x3 = (x3 * self.conv_zy(gate).unsqueeze(0)).permute(0, 2, 1, 3)
    x4 = self.dw(x4)
    return self.ldw(layer_norm(self.norm2, torch.cat([x1, x2, x3, x4], dim=1)))


def _randomize(net: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial values everywhere (the official init sets the gates to ones, which would hide axis mix-ups)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.dim() == 1 else 0.0))


def test_official_format_checkpoint_loads_strict_and_matches_paper_computation(tmp_path):
    """A bare state_dict with the official keys loads strictly and gives the paper's computation, to 1e-5."""
    src = create_model("egeunet")
    _randomize(src)
    bare = {k: v.clone() for k, v in src.state_dict().items()}
    assert set(bare) == set(official_keys())
    path = tmp_path / "official_best.pth"
    torch.save(bare, path)

    net, ckpt = load_model(path)
    reference = create_model("egeunet").eval()
    reference.load_state_dict(bare, strict=True)
    for m in reference.modules():
        if isinstance(m, GHPA):
            m.forward = types.MethodType(_paper_ghpa_forward, m)
    x = torch.rand(2, 3, 256, 256) * 255
    with torch.no_grad():
        ds, prob = net(x)
        ds_ref, prob_ref = reference(x)
    assert len(ds) == 5 and all(d.shape == (2, 1, 256, 256) for d in ds)
    torch.testing.assert_close(prob, prob_ref, atol=1e-5, rtol=0)
    for a, b in zip(ds, ds_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # the gates really act along different axes: swapping the two 1-D gate params changes the output
    with torch.no_grad():
        block = net.encoder4[0]
        block.params_zx.copy_(torch.randn_like(block.params_zx))
        assert not torch.allclose(net(x)[1], prob, atol=1e-4)
    assert ckpt["sha256"] and Path(ckpt["path"]).name == "official_best.pth"


@pytest.mark.parametrize("name", list_models())
def test_every_variant_trains_one_step(name):
    torch.manual_seed(0)
    net = create_model(name)
    x = torch.rand(2, 3, 64, 64) * 255
    ds, logits = net.forward_logits(x)
    assert logits.shape == (2, 1, 64, 64)
    assert len(ds) == (5 if net.gt_ds else 0)
    out = net(x)
    prob = out[1] if net.gt_ds else out
    assert prob.shape == (2, 1, 64, 64) and float(prob.detach().min()) >= 0 and float(prob.detach().max()) <= 1
    logits.mean().backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if not n.startswith("gt_conv"))


def test_gt_ds_false_drops_mask_channel_and_heads():
    net = create_model("egeunet", gt_ds=False)
    keys = net.state_dict().keys()
    assert not any(k.startswith("gt_conv") for k in keys)
    assert net.GAB1.g0[1].in_channels == 4  # dim_low 8 -> group 4, no +1 for the mask


def test_folded_gates_equal_unfolded_and_deploy_view_returns_probability_only(shipped):
    net, _ = shipped
    x = torch.rand(2, 3, 256, 256) * 255
    with torch.no_grad():
        reference = net(x)[1]
        deploy = DeployEGEUNet(copy.deepcopy(net))
        folded = deploy(x)
        # folding again for another size changes the constants (they really are size-specific)
        other = copy.deepcopy(net)
        fold_all_gates(other, (512, 512))
    assert folded.shape == (2, 1, 256, 256)
    assert all(m.folded_gates is not None for m in deploy.net.modules() if isinstance(m, GHPA))
    assert [tuple(g.shape[2:]) for g in other.encoder4[0].folded_gates] == [(64, 64), (64, 1), (1, 64)]
    assert net.encoder4[0].folded_gates is None  # the training model was not touched
    torch.testing.assert_close(folded, reference, atol=1e-5, rtol=0)


def test_wrong_input_shape_is_a_clear_error():
    net = create_model("egeunet")
    with pytest.raises(ValueError, match="divisible by 32.*256x224"):
        net.forward_logits(torch.zeros(1, 3, 250, 200))
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        net.forward_logits(torch.zeros(1, 1, 256, 256))


def test_weights_from_another_architecture_name_the_keys(tmp_path):
    other = create_model("egeunet", c_list=(8, 16, 24, 32, 48, 128))
    path = tmp_path / "wide.pt"
    torch.save(other.state_dict(), path)
    expected = r"shape mismatch: GAB5\.pre_project\.weight: file \(48, 128, 1, 1\) vs model \(48, 64, 1, 1\)"
    with pytest.raises(WeightsError, match=expected):
        load_model(path)
    nods = tmp_path / "nods.pt"
    torch.save(create_model("egeunet_nods").state_dict(), nods)
    with pytest.raises(WeightsError, match=r"missing keys: .*gt_conv1\.0\.bias"):
        load_model(nods)


def test_missing_and_corrupt_weights_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightsError, match="not a readable PyTorch weights file"):
        load_model(bad)
    pickled_code = tmp_path / "code.pt"  # a pickle that would import a module: refused, with no advice to allow it
    torch.save({"state_dict": {}, "hook": pytest.raises}, pickled_code)
    with pytest.raises(WeightsError, match=r"never runs code from the file\)$") as info:
        load_model(pickled_code)
    assert "weights_only=False" not in str(info.value) and "\n" not in str(info.value)


def test_weights_with_nan_or_a_folder_are_refused(shipped, tmp_path):
    state = {k: v.clone() for k, v in shipped[0].state_dict().items()}
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[key][0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(WeightsError, match=f"NaN or infinite values in {key}"):
        load_model(tmp_path / "nan.pt")
    with pytest.raises(WeightsError, match="is a folder"):
        load_model(tmp_path)


def test_atomic_write_never_commits_after_a_swallowed_ctrl_c(tmp_path):
    """A library that catches the KeyboardInterrupt (coremltools' bare excepts) must not let the write go through."""
    restore = remember_interrupts()
    try:
        atomic_write_bytes(tmp_path / "before.bin", b"ok")
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here
        except KeyboardInterrupt:
            pass  # swallowed, as a bare except would
        with pytest.raises(KeyboardInterrupt):
            atomic_write_bytes(tmp_path / "after.bin", b"late")
    finally:
        restore()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["before.bin"]  # no artifact, no temporary file
    remember_interrupts()()  # a new command starts with a clean slate
    atomic_write_bytes(tmp_path / "next.bin", b"ok")


def test_unknown_variant_lists_known_ones():
    with pytest.raises(ValueError, match="known: egeunet"):
        create_model("egeunet_xl")


def test_fused_channel_layernorm_equals_explicit_forward_and_backward(shipped):
    net, _ = shipped
    explicit = copy.deepcopy(net).train()
    fused = use_fused_norms(copy.deepcopy(net).to(memory_format=torch.channels_last)).train()
    assert all(m.fused for m in fused.modules() if isinstance(m, ChannelLayerNorm))
    x = torch.rand(2, 3, 128, 128) * 255
    out_e = explicit.forward_logits(x)[1]
    out_f = fused.forward_logits(x.contiguous(memory_format=torch.channels_last))[1]
    torch.testing.assert_close(out_f, out_e, atol=2e-4, rtol=1e-4)
    out_e.sum().backward()
    out_f.sum().backward()
    for (name, a), b in zip(explicit.named_parameters(), fused.parameters(), strict=True):
        relative = float((b.grad - a.grad).norm() / a.grad.norm().clamp_min(1e-12))
        assert relative < 1e-3, f"{name}: gradients differ by {relative:.2e} (relative L2)"


def test_training_fast_paths_equal_plain_model_forward_and_backward(shipped):
    """The trainer's fast paths (NCHW narrow GAB branches, 1x1 convs as GEMMs, matrix upsampling, in the model and in
    the loss) compute the plain channels_last model's function: same outputs, loss and gradients to float rounding."""
    net, _ = shipped
    plain = use_fused_norms(copy.deepcopy(net).to(memory_format=torch.channels_last)).train()
    fast = use_training_fast_paths(copy.deepcopy(net).to(memory_format=torch.channels_last)).train()
    assert fast.fast_resize and fast.GAB1.fast_resize
    assert "forward" in fast.final.__dict__ and "forward" in fast.GAB1.g1[1].__dict__  # 1x1, dilated overrides
    x = (torch.rand(2, 3, 256, 256) * 255).contiguous(memory_format=torch.channels_last)  # 256: GroupNorm + pool path
    y = (torch.rand(2, 1, 256, 256) > 0.6).float()
    ds_p, out_p = plain.forward_logits(x)
    ds_f, out_f = fast.forward_logits(x)
    torch.testing.assert_close(out_f, out_p, atol=1e-4, rtol=1e-5)
    for a, b in zip(ds_f, ds_p, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)
    loss_p = recipe_loss(ds_p, out_p, y, fast=False)
    loss_f = recipe_loss(ds_f, out_f, y, fast=True)
    torch.testing.assert_close(loss_f, loss_p, atol=1e-5, rtol=1e-5)
    loss_p.backward()
    loss_f.backward()
    for (name, a), b in zip(plain.named_parameters(), fast.parameters(), strict=True):
        relative = float((b.grad - a.grad).norm() / a.grad.norm().clamp_min(1e-12))
        assert relative < 1e-3, f"{name}: gradients differ by {relative:.2e} (relative L2)"
    # switching back restores the plain computation (no instance forward left behind)
    use_training_fast_paths(fast, False)
    assert not fast.fast_resize and "forward" not in fast.final.__dict__ and "forward" not in fast.GAB1.g1[1].__dict__
    assert not any(m.fused for m in fast.modules() if isinstance(m, ChannelLayerNorm))


def test_fast_resize_and_nchw_layernorm_match_reference_ops():
    x = torch.randn(3, 1, 16, 24)
    torch.testing.assert_close(resize_bilinear(x, (256, 96), fast=True),
                               F.interpolate(x, size=(256, 96), mode="bilinear", align_corners=True),
                               atol=1e-6, rtol=1e-6)
    xd = torch.randn(2, 5, 6, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: _NchwChannelLayerNorm.apply(*t, 1e-6), (xd, w, b))
    ref = F.layer_norm(xd.permute(0, 2, 3, 1), (5,), w, b, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(_NchwChannelLayerNorm.apply(xd, w, b, 1e-6), ref)


def test_group_norm_max_pool_equals_native_pair_including_ties():
    """The fused training GroupNorm + 2x2 max-pool: gradcheck, and the native pair's values and gradients on a map
    with flat regions (rotation padding makes exact ties), where the max-pool's first-index choice matters."""
    w = torch.randn(8, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, dtype=torch.float64, requires_grad=True)
    x = (torch.randn(2, 8, 6, 10, dtype=torch.float64) * 3 + 1).contiguous(memory_format=torch.channels_last)
    assert torch.autograd.gradcheck(lambda *t: _GroupNormMaxPool.apply(t[0], 4, t[1], t[2], 1e-5),
                                    (x.requires_grad_(), w, b))
    # the backward's wide (pixels / k, k * c) views: k = 4 (2 x 74 pixels) and 12 channels in 3 groups
    for shape, groups in (((1, 8, 2, 74), 4), ((2, 12, 4, 6), 3)):
        xk = (torch.randn(*shape, dtype=torch.float64) + 1).contiguous(memory_format=torch.channels_last)
        wk = torch.randn(shape[1], dtype=torch.float64, requires_grad=True)
        bk = torch.randn(shape[1], dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda *t, g=groups: _GroupNormMaxPool.apply(t[0], g, t[1], t[2], 1e-5),
                                        (xk.requires_grad_(), wk, bk))
    flat = torch.zeros(2, 8, 16, 16, dtype=torch.float64)
    flat[:, :, :9] = torch.randn(2, 8, 9, 16, dtype=torch.float64)
    flat = flat.contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(2, 8, 8, 8, dtype=torch.float64)
    fused = _GroupNormMaxPool.apply(flat, 4, w, b, 1e-5)
    native = F.max_pool2d(F.group_norm(flat, 4, w, b, 1e-5), 2, 2)
    torch.testing.assert_close(fused, native)
    for a, n in zip(torch.autograd.grad(fused, (flat, w, b), grad), torch.autograd.grad(native, (flat, w, b), grad),
                    strict=True):
        torch.testing.assert_close(a, n)
    # the switch: fused only for training on large channels_last maps, the module pair otherwise
    norm = nn.GroupNorm(4, 8)
    big = torch.randn(1, 8, 256, 256).contiguous(memory_format=torch.channels_last)
    assert type(group_norm_max_pool(norm, big, fast=True).grad_fn).__name__ == "_GroupNormMaxPoolBackward"
    assert "MaxPool" in type(group_norm_max_pool(norm, big, fast=False).grad_fn).__name__
    assert "MaxPool" in type(group_norm_max_pool(norm, big[:, :, :128, :128], fast=True).grad_fn).__name__
    with torch.no_grad():
        torch.testing.assert_close(group_norm_max_pool(norm, big, fast=True), F.max_pool2d(norm(big), 2, 2))


def test_multithread_layernorm_backward_equals_native_and_restores_threads():
    """The 2-thread training LayerNorm (weight/bias gradients on one thread) is F.layer_norm's function and gradient,
    and leaves the caller's thread count as it found it."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = (torch.randn(2, 6, 7, 9, dtype=torch.float64) * 3 + 1).requires_grad_()
        w = torch.randn(9, dtype=torch.float64, requires_grad=True)
        b = torch.randn(9, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda *t: _NhwcLayerNorm.apply(*t, 1e-6), (x, w, b))
        assert torch.get_num_threads() == 2
        torch.testing.assert_close(_NhwcLayerNorm.apply(x, w, b, 1e-6), F.layer_norm(x, (9,), w, b, 1e-6))
        grad = torch.randn(2, 6, 7, 9, dtype=torch.float64)
        ours = torch.autograd.grad(_NhwcLayerNorm.apply(x, w, b, 1e-6), (x, w, b), grad)
        native = torch.autograd.grad(F.layer_norm(x, (9,), w, b, 1e-6), (x, w, b), grad)
        for a, n in zip(ours, native, strict=True):
            torch.testing.assert_close(a, n)
        # the module takes this path only when it helps: with grad and more than one thread
        norm = ChannelLayerNorm(9)
        norm.fused = True
        xc = torch.randn(2, 9, 6, 7).contiguous(memory_format=torch.channels_last)

        def norm_node() -> str:
            return norm(xc).grad_fn.next_functions[0][0].name()  # under the NCHW permute

        assert norm_node() == "_NhwcLayerNormBackward"
        torch.set_num_threads(1)
        assert norm_node() == "NativeLayerNormBackward0"
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("dilation,size", [(2, (8, 6)), (3, (7, 8)), (5, (6, 11))])
def test_dilated_depthwise_backward_equals_native(dilation, size):
    """The phase-image weight gradient and flipped-kernel input gradient are the dilated convolution's gradients,
    also where the map is not a multiple of the dilation (zero-padded phases) or smaller than it."""
    x = torch.randn(2, 3, *size, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: _DilatedDepthwiseConv.apply(*t, dilation), (x, w, b))
    native = F.conv2d(x, w, b, 1, dilation, dilation, 3)
    torch.testing.assert_close(_DilatedDepthwiseConv.apply(x, w, b, dilation), native)


def test_training_fast_paths_cover_every_dilated_gab_conv():
    net = use_training_fast_paths(create_model("egeunet"))
    dilated = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.dilation[0] > 1]
    assert len(dilated) == 15  # 5 GABs x dilations 2, 5, 7
    assert all("forward" in m.__dict__ for m in dilated)
    use_training_fast_paths(net, False)
    assert not any("forward" in m.__dict__ for m in dilated)
