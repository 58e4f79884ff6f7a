"""An equivalent, export-friendly form of a trained EGE-UNet: layout-native, normalisations fused, gates folded.

Why a rewrite: :class:`~egeunet_deploy.model.ege_unet.DeployEGEUNet` is the training graph with the gates folded.
Converted as is, it is slow on a CPU (the TFLite graph kept 74 layout transposes, the ONNX graph spends a quarter
of its time in ReduceMean/Pow/Div chains of the channel LayerNorms) and it is hostile to int8 (every LayerNorm is
a mean / pow / sqrt / div chain a quantizer sees as separate ops). :class:`FastEGEUNet` computes the same function
(tests/test_export_rewrite.py: within 1e-5 of DeployEGEUNet on real images; exact in float64 with negated
GroupNorm gammas) with these rewrites (converted graphs are checked against this module before they are written:
litert-torch has miscompiled some equivalent forms without an error, see export/tflite.py):

- **Layout-native.** ``layout="NHWC"`` keeps every activation NHWC end to end: the only NCHW ops (convolution,
  pooling, resize) are wrapped in a permute pair the converter cancels against its own layout transposes, so the
  TFLite graph has no TRANSPOSE left. ``layout="NCHW"`` is the same graph for ONNX Runtime (its native layout).
- **GroupNorm split into statistics and a per-channel affine.** The statistics (per-channel spatial means of x and
  x^2, combined per group by (G, C) / (C, G) matrix products) are taken at full resolution; the affine is applied
  after the 2x2 max-pool, on a quarter of the pixels. Max-pool commutes with a per-channel affine only when its scale
  is positive, so the convolution that feeds the GroupNorm is negated channel-wise where gamma < 0 (exact).
- **encoder1 as a phase convolution** (:class:`_PhaseConv`): 3x3 conv + 2x2 max-pool at 256x256 with 8 channels
  become one 4x4 stride-2 conv giving the four pool phases as 32 channels at 128x128 (full SIMD width) and a max
  over the phases.
- **LayerNorm affines folded** into the op that follows when that op is linear and exact to fold into: GAB's tail
  1x1 convolution (which then takes the centred tensor and is scaled per pixel by rsqrt(var)); GHPA's first affine
  stays one multiply-add so that each gate is stored once.
- **The network's head folded into GAB1 and decoder5**: final(decoder5 + GAB1) is linear in both, so the final 1x1
  conv rides along with decoder5's mask conv (2 outputs) and with GAB1's tail conv (1 output instead of 8): four
  full-resolution passes fewer.
- **GAB's four per-branch LayerNorms by fixed 1x1 convolutions** of ``cat[h, l, mask]`` (branch selection, mask
  duplication and centring in one matrix; variance and its broadcast back in two more) for the narrow, high
  resolution GABs, by slicing + concatenation in branch order for the wide, low-resolution ones
  (:data:`REGROUP_MIN_CHANNELS`), whose matrices would be a fifth of the file.
- **ONNX (NCHW) 1x1 convolutions as MatMul** over the flattened pixels and channel means as ReduceMean: ONNX Runtime
  would otherwise move them into its blocked NCHWc layout and reorder back around every elementwise op.
- **GHPA gates** are folded for the input size (three small factors, as in the model).
- Every per-pixel normalisation keeps the centred form (x - mean) * rsqrt(var + eps): the form whose ranges survive
  int8 (no E[x^2] - E[x]^2 cancellation on a handful of channels); GroupNorm's statistics over whole feature maps
  may take either form (``int8_friendly``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from egeunet_deploy.model.contract import INPUT_HW, minmax_normalize
from egeunet_deploy.model.ege_unet import BLOCKS as MODEL_BLOCKS
from egeunet_deploy.model.ege_unet import DeployEGEUNet, EGEUNet
from egeunet_deploy.model.layers import GAB, GHPA, ChannelLayerNorm, activation

LAYOUTS = ("NCHW", "NHWC")


class _Layout:
    """The handful of layout-dependent operations, so one forward serves both layouts."""

    def __init__(self, layout: str, act: str = "gelu", align_corners: bool = True,
                 affine_as_conv: bool = False) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
        self.nhwc = layout == "NHWC"
        self.c = 3 if self.nhwc else 1
        self.act_kind, self.align_corners = act, align_corners
        self.affine_as_conv = affine_as_conv  # constant per-channel affines as 1x1 depthwise convs (the integer graph)

    def act(self, x: torch.Tensor) -> torch.Tensor:
        """The network's activation (erf GELU, or the integer variant's sigmoid form: ``ModelCfg.act``)."""
        return activation(x, self.act_kind)

    def vec(self, v: torch.Tensor) -> torch.Tensor:
        """A per-channel vector (C,) or a per-image one (N, C) as a tensor that broadcasts against activations."""
        if v.dim() == 1:
            v = v[None]
        return v[:, None, None, :] if self.nhwc else v[:, :, None, None]

    def affine(self, x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
        """``x * w + b`` for constant per-channel ``w`` (None: 1) and ``b``. With :attr:`affine_as_conv` (the integer
        graph) as one 1x1 depthwise convolution, the same function: Vela estimates an Ethos-U55 MUL or ADD of a
        broadcast (1, 1, 1, C) constant at ~13 cycles per element (GAB1's LayerNorm bias alone: 8.4 ms of a 44.5 ms
        graph) and the depthwise form at a fraction of it. The float graphs keep the elementwise form (XNNPACK fuses
        it)."""
        if not self.affine_as_conv:
            return (x if w is None else x * self.vec(w)) + self.vec(b)
        w = torch.ones_like(b) if w is None else w
        return self.conv(x, w.reshape(-1, 1, 1, 1), b, groups=b.numel())

    def spatial(self, g: torch.Tensor) -> torch.Tensor:
        """A constant (1, C, h, w) NCHW map (GHPA gate factors) in this layout."""
        return g.permute(0, 2, 3, 1).contiguous() if self.nhwc else g.contiguous()

    def _nchw(self, fn, x: torch.Tensor) -> torch.Tensor:
        if not self.nhwc:
            return fn(x)
        return fn(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def conv(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, padding: int = 0, dilation: int = 1,
             groups: int = 1, stride: int = 1) -> torch.Tensor:
        if not self.nhwc and groups == 1 and w.shape[2:] == (1, 1) and stride == 1:
            # NCHW 1x1 convolution as a matrix product over the flattened pixels: ONNX Runtime would otherwise move
            # it into its blocked NCHWc layout and reorder back to NCHW for the elementwise op that follows
            n, c, h, wd = x.shape
            y = torch.matmul(w[:, :, 0, 0], x.reshape(n, c, h * wd)).reshape(n, w.shape[0], h, wd)
            return y if b is None else y + b[:, None, None]
        return self._nchw(lambda t: F.conv2d(t, w, b, stride, padding, dilation, groups), x)

    def pool2(self, x: torch.Tensor) -> torch.Tensor:
        return self._nchw(lambda t: F.max_pool2d(t, 2, 2), x)

    def phase_max(self, x: torch.Tensor, phases: int) -> torch.Tensor:
        """Max over ``phases`` consecutive channel blocks (block-major channels): the 2x2 max-pool of a
        :class:`_PhaseConv`. NHWC: a (1, phases) max-pool over the pixels-by-phases view (no copy, one pooling
        kernel); NCHW: element-wise maxima of the phase blocks."""
        if self.nhwc:
            n, h, w, c = x.shape
            v = x.reshape(n, h * w, phases, c // phases)
            return self._nchw(lambda t: F.max_pool2d(t, (1, phases), (1, phases)), v).reshape(n, h, w, c // phases)
        blocks = torch.split(x, x.shape[1] // phases, dim=1)
        out = blocks[0]
        for b in blocks[1:]:  # element-wise Max: ORT's ReduceMax over a 5-D view ran 1.3 ms, 7% of the graph
            out = torch.maximum(out, b)
        return out

    def resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(self.hw(x)) == tuple(size):
            return x  # align_corners=True to the same size is the identity
        ac = self.align_corners
        return self._nchw(lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=ac), x)

    def hw(self, x: torch.Tensor) -> tuple[int, int]:
        return (x.shape[1], x.shape[2]) if self.nhwc else (x.shape[2], x.shape[3])

    def cat(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, dim=self.c)

    def split(self, x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
        return list(torch.split(x, sizes, dim=self.c))

    def smean(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial mean per image and channel, as (N, C)."""
        return x.mean(dim=(1, 2) if self.nhwc else (2, 3))


class _ChannelNorm(nn.Module):
    """Channel LayerNorm without its affine (folded elsewhere), in the centred form, with both channel means as
    fixed 1x1 convolutions (the second with eps as its bias): no broadcast reductions, no separate eps add, and
    int8 kernels accumulate the means in int32."""

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.register_buffer("avg_w", torch.full((1, channels, 1, 1), 1.0 / channels))
        self.register_buffer("eps_b", torch.tensor([float(eps)]))

    def forward(self, lay: _Layout, x: torch.Tensor) -> torch.Tensor:
        xc = x - self.mean(lay, x)
        return xc * torch.rsqrt(self.mean(lay, xc * xc, self.eps_b))

    def mean(self, lay: _Layout, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Channel mean (+ bias). NHWC: a 1x1 convolution (a GEMM for XNNPACK, int32 sums in int8). NCHW: a
        ReduceMean, because ONNX Runtime would re-layout a 1-channel convolution into its blocked NCHWc format and
        back around every such op."""
        if lay.nhwc:
            return lay.conv(x, self.avg_w, bias)
        m = x.mean(dim=1, keepdim=True)
        return m if bias is None else m + bias


class _GroupNormStats(nn.Module):
    """GroupNorm as statistics + a per-channel affine ``y = x' * a + b`` that may be applied after max-pooling.

    ``sign`` (+-1 per channel) says which channels of the producing convolution were negated (x' = sign * x); the
    statistics of the original x are recovered through ``mix_mean``. The returned scale ``a`` is >= 0 wherever the
    producer was sign-folded, so ``maxpool(x') * a + b == maxpool(GroupNorm(x))``.

    Two equivalent ways to the variance: ``centered=False`` takes E[x^2] - E[x]^2 from the channel means of x and
    x^2 (one full-resolution pass fewer: the float graphs), ``centered=True`` takes each channel's variance around
    its own mean and adds the spread of the channel means (no cancellation between two large numbers: the form
    whose full-resolution tensors survive int8). The per-image vector arithmetic lives in the ``vec`` submodule,
    which int8 recipes keep in float.
    """

    def __init__(self, gn: nn.GroupNorm, sign: torch.Tensor, centered: bool = False, phases: int = 1) -> None:
        super().__init__()
        self.centered = centered
        self.vec = _GroupNormVec(gn, sign, centered, phases)

    def forward(self, lay: _Layout, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m1 = lay.smean(x)
        if self.centered:
            xc = x - lay.vec(m1)
            a, b = self.vec(m1, lay.smean(xc * xc))
        else:
            a, b = self.vec(m1, lay.smean(x * x))
        return lay.vec(a), lay.vec(b)


class _GroupNormVec(nn.Module):
    """(N, C) channel statistics -> (N, C) scale and shift of the GroupNorm (see :class:`_GroupNormStats`).

    The arithmetic runs per group: two (G, C) matrices reduce the channel statistics to group ones, two (C, G)
    matrices (gamma folded in) broadcast the group rstd and mean back. C x C "same group" matrices would do the same in
    fewer ops but store C^2 numbers per norm (a tenth of the float file)."""

    def __init__(self, gn: nn.GroupNorm, sign: torch.Tensor, centered: bool, phases: int = 1) -> None:
        super().__init__()
        c, g = gn.num_channels, gn.num_groups
        k = c // g
        member = torch.zeros(g, c)
        for j in range(g):
            member[j, j * k:(j + 1) * k] = 1.0
        gamma, beta = gn.weight.detach(), gn.bias.detach()
        # statistics may come per pool phase (a _PhaseConv's phases * C channels, equally many pixels each): a group
        # then averages over its channels in every phase
        member_p, sign_p = member.repeat(1, phases), sign.repeat(phases)
        self.centered = centered
        self.register_buffer("sign", sign_p.clone())
        self.register_buffer("red_mean", member_p / (k * phases) * sign_p[None, :])  # (G, P*C): mean_g of x from x'
        self.register_buffer("red_sq", member_p / (k * phases))  # (G, P*C): group average of per-channel quantities
        self.register_buffer("eps_g", torch.full((g,), float(gn.eps)))
        self.register_buffer("up", member_p.t().contiguous())  # (P*C, G): a group's value to each of its channels
        self.register_buffer("up_scale", member.t() * (gamma * sign)[:, None])  # rstd -> scale seen by x' (>= 0)
        self.register_buffer("up_shift", member.t() * -gamma[:, None])  # mean * rstd -> shift (with beta as bias)
        self.register_buffer("beta", beta.clone())

    def forward(self, m1: torch.Tensor, m2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = F.linear(m1, self.red_mean)  # (N, G)
        if self.centered:  # m2 = per-channel variance of x'; var_g = avg_g(var_c + (mean_c - mean_g)^2)
            spread = m1 * self.sign - F.linear(mean, self.up)
            rstd = torch.rsqrt(F.linear(m2 + spread * spread, self.red_sq, self.eps_g))
        else:  # m2 = per-channel mean of x'^2
            rstd = torch.rsqrt(F.linear(m2, self.red_sq, self.eps_g) - mean * mean)
        return F.linear(rstd, self.up_scale), F.linear(mean * rstd, self.up_shift, self.beta)


class _FastGHPA(nn.Module):
    """GHPA with folded gates (each stored once) and both LayerNorms as centred channel norms.

    LayerNorm1's affine is one per-channel multiply-add on the whole (small, <= 32x32) tensor before the gates: folding
    it into the gates (gate * w, gate * b) saves that pass but stores every gate twice, and the gates are the largest
    constants of the network (51 KB of float per copy)."""

    def __init__(self, m: GHPA, out_sign: torch.Tensor | None = None) -> None:
        super().__init__()
        gates = m.folded_gates
        if gates is None:
            raise ValueError("fold the GHPA gates first (DeployEGEUNet folds them)")
        c = m.norm1.weight.numel()
        self.group = c // 4
        self.norm1, self.norm2 = _ChannelNorm(c, m.norm1.eps), _ChannelNorm(c, m.norm2.eps)
        self.register_buffer("n1_w", m.norm1.weight.detach().clone())
        self.register_buffer("n1_b", m.norm1.bias.detach().clone())
        for i, gate in enumerate(gates):
            self.register_buffer(f"gate{i}", gate.detach().clone())
        pw, act, dw = m.dw
        self.register_buffer("dw_pw_w", pw.weight.detach().clone())
        self.register_buffer("dw_pw_b", pw.bias.detach().clone())
        self.register_buffer("dw_dw_w", dw.weight.detach().clone())
        self.register_buffer("dw_dw_b", dw.bias.detach().clone())
        self.register_buffer("n2_w", m.norm2.weight.detach().clone())
        self.register_buffer("n2_b", m.norm2.bias.detach().clone())
        ldw_dw, _, ldw_pw = m.ldw
        self.register_buffer("ldw_dw_w", ldw_dw.weight.detach().clone())
        self.register_buffer("ldw_dw_b", ldw_dw.bias.detach().clone())
        s = torch.ones(ldw_pw.out_channels) if out_sign is None else out_sign
        self.register_buffer("ldw_pw_w", ldw_pw.weight.detach() * s.view(-1, 1, 1, 1))
        self.register_buffer("ldw_pw_b", ldw_pw.bias.detach() * s)

    def prepare(self, lay: _Layout) -> None:
        for i in range(3):
            setattr(self, f"gate{i}", lay.spatial(getattr(self, f"gate{i}")))

    def forward(self, lay: _Layout, x: torch.Tensor) -> torch.Tensor:
        g = self.group
        n = lay.affine(self.norm1(lay, x), self.n1_w, self.n1_b)
        x1, x2, x3, x4 = lay.split(n, [g] * 4)
        y4 = lay.conv(lay.act(lay.conv(x4, self.dw_pw_w, self.dw_pw_b)), self.dw_dw_w, self.dw_dw_b, padding=1,
                      groups=g)
        y = lay.cat([x1 * self.gate0, x2 * self.gate1, x3 * self.gate2, y4])
        y = lay.affine(self.norm2(lay, y), self.n2_w, self.n2_b)
        c = y.shape[lay.c]
        y = lay.act(lay.conv(y, self.ldw_dw_w, self.ldw_dw_b, padding=1, groups=c))
        return lay.conv(y, self.ldw_pw_w, self.ldw_pw_b)


REGROUP_MIN_CHANNELS = 24
"""GABs with at least this many low-level channels (GAB3-5: 32x32 and coarser) build their branch inputs by slicing
h and l and concatenating the 12 pieces in branch order, then centre them with two 4-row matrices; the others use
one fixed centring matrix. The matrix grows as ~4 C^2 (GAB5's alone was 39 KB of float, GAB3-5's 66 KB) while the
slices store nothing; at 32x32 and below the concatenation costs ~0.05 ms in all (measured per block, TFLite 1
thread), at 128x128 (GAB1) it was the slowest op of the first rewrite. (A channel gather would be shorter, but
litert-torch lowers index_select to GATHER_ND between transposes and the converted network came out wrong: max abs
probability error 0.04-0.99 on real images, each block alone correct.)"""


class _FastGAB(nn.Module):
    """GAB with its four branch LayerNorms done by channel-mixing ops and its tail LayerNorm fused into the tail conv.

    The branch inputs [h_i, l_i, mask] share the mask channel and would need a 12-way concatenation of 1-2 channel
    slices (the slowest op of the original graph). Instead ``s = cat[h, l, mask]`` (17 channels for GAB1) is brought
    into branch order with the mask duplicated and centred per branch (centring is linear):

    - ``regroup=False``: one 1x1 convolution whose fixed weights pick, duplicate and centre in one GEMM;
    - ``regroup=True``: h and l are sliced into quarters and concatenated with the mask in branch order, then the
      branch means (a 4W -> 4 conv) are broadcast back and subtracted (see :data:`REGROUP_MIN_CHANNELS`).

    The per-branch variance is another fixed 1x1 convolution of the squares, and its rsqrt is broadcast back (times
    the LayerNorm weight) by a third one. The tail LayerNorm's affine folds into the tail 1x1 convolution, which then
    runs on the centred tensor and is scaled per pixel by rsqrt(var).

    ``head`` (GAB1 only): the network's final 1x1 convolution, which reads ``decoder5 + GAB1``; its GAB1 half is
    folded into the tail convolution (C_low -> 1 output instead of C_low), so this block returns GAB1's contribution
    to the final logits, without the constant ``head_w @ tail_b`` (:attr:`head_bias`, which the caller adds to the
    decoder half's bias). The centring of the tail LayerNorm folds into the same weights (``v . (t - mean t) =
    (v - mean v) . t``), so one 2-output convolution gives both the logit term and the channel mean.
    """

    def __init__(self, m: GAB, regroup: bool = False, head: nn.Conv2d | None = None) -> None:
        super().__init__()
        self.with_mask = m.with_mask
        self.regroup = regroup
        self.register_buffer("pre_w", m.pre_project.weight.detach().clone())
        self.register_buffer("pre_b", m.pre_project.bias.detach().clone())
        branches = [m.g0, m.g1, m.g2, m.g3]
        norms = [b[0] for b in branches]
        convs = [b[1] for b in branches]
        if len({n.eps for n in norms}) != 1:
            raise ValueError("GAB branch LayerNorms with different eps cannot be fused")
        width = norms[0].weight.numel()  # channels per branch: 2 * (C_low / 4) + mask
        c_low = m.pre_project.out_channels
        q = c_low // 4
        n_in = 2 * c_low + int(self.with_mask)  # cat[h, l, mask]
        src = []  # branch order [h_i, l_i, mask]: the channel of cat[h, l, mask] each branch channel comes from
        for i in range(4):
            src += [i * q + j for j in range(q)] + [c_low + i * q + j for j in range(q)]
            src += [2 * c_low] if self.with_mask else []
        group_avg = torch.block_diag(*[torch.full((1, width), 1.0 / width)] * 4)  # (4, 4W)
        self.quarter = q
        if regroup:
            self.register_buffer("bcast_w", torch.block_diag(*[torch.ones(width, 1)] * 4)[:, :, None, None])
        else:
            pick = torch.zeros(4 * width, n_in)
            pick[torch.arange(4 * width), torch.tensor(src)] = 1.0
            avg = torch.block_diag(*[torch.full((width, width), 1.0 / width)] * 4)  # (4W, 4W) branch mean
            self.register_buffer("center_w", ((torch.eye(4 * width) - avg) @ pick)[:, :, None, None])
        self.register_buffer("var_w", group_avg[:, :, None, None])  # branch mean (+ eps as bias for the variance)
        self.register_buffer("var_b", torch.full((4,), float(norms[0].eps)))
        w = torch.cat([n.weight.detach() for n in norms])
        expand = torch.block_diag(*[torch.ones(width, 1)] * 4) * w[:, None]  # (4W, 4): rsqrt_g * weight_c
        self.register_buffer("expand_w", expand[:, :, None, None])
        self.register_buffer("bn_b", torch.cat([n.bias.detach() for n in norms]))
        self.width = width
        self.dilations = [c.dilation[0] for c in convs]
        for i, c in enumerate(convs):
            self.register_buffer(f"dw{i}_w", c.weight.detach().clone())
            self.register_buffer(f"dw{i}_b", c.bias.detach().clone())
        tail_norm, tail_conv = m.tail_conv
        self.tail_norm = _ChannelNorm(4 * width, tail_norm.eps)
        tw = tail_conv.weight.detach()[:, :, 0, 0]  # (C_low, 4 * width)
        tail_w = tw * tail_norm.weight.detach()[None, :]
        tail_b = tail_conv.bias.detach() + tw @ tail_norm.bias.detach()
        self.head = head is not None
        if head is None:
            self.register_buffer("tail_w", tail_w[:, :, None, None])
            self.register_buffer("tail_b", tail_b)
            self.head_bias = None
        else:
            hw = head.weight.detach()[:, :, 0, 0]  # (1, C_low)
            v = hw @ tail_w  # (1, 4W): the final conv through the tail conv
            mean_row = torch.full((1, 4 * width), 1.0 / (4 * width))
            self.register_buffer("head_w", torch.cat([v - v.mean(dim=1, keepdim=True), mean_row])[:, :, None, None])
            self.head_bias = hw @ tail_b  # (1,)

    def branch_inputs(self, lay: _Layout, h: torch.Tensor, x_low: torch.Tensor, mask: torch.Tensor | None):
        """h, l, mask -> the four branch inputs [h_i, l_i, mask] in branch order, each centred over its branch."""
        extra = [mask] if self.with_mask else []
        if not self.regroup:
            return lay.conv(lay.cat([h, x_low, *extra]), self.center_w, None)
        hs, ls = lay.split(h, [self.quarter] * 4), lay.split(x_low, [self.quarter] * 4)
        z = lay.cat([t for i in range(4) for t in (hs[i], ls[i], *extra)])
        return z - lay.conv(lay.conv(z, self.var_w, None), self.bcast_w, None)

    def forward(self, lay: _Layout, x_high: torch.Tensor, x_low: torch.Tensor, mask: torch.Tensor | None):
        h = lay.resize(lay.conv(x_high, self.pre_w, self.pre_b), lay.hw(x_low))
        zc = self.branch_inputs(lay, h, x_low, mask)
        r = torch.rsqrt(lay.conv(zc * zc, self.var_w, self.var_b))
        z = lay.affine(zc * lay.conv(r, self.expand_w, None), None, self.bn_b)
        fused = []
        for i, (zi, d) in enumerate(zip(lay.split(z, [self.width] * 4), self.dilations, strict=True)):
            fused.append(lay.conv(zi, getattr(self, f"dw{i}_w"), getattr(self, f"dw{i}_b"), padding=d, dilation=d,
                                  groups=self.width))
        t = lay.cat(fused)
        if self.head:
            logit, mean = lay.split(lay.conv(t, self.head_w, None), [1, 1])
            tc = t - mean
            return logit * torch.rsqrt(self.tail_norm.mean(lay, tc * tc, self.tail_norm.eps_b))
        tc = t - self.tail_norm.mean(lay, t)
        r = torch.rsqrt(self.tail_norm.mean(lay, tc * tc, self.tail_norm.eps_b))
        return lay.affine(lay.conv(tc, self.tail_w, None) * r, None, self.tail_b)


class _EncoderStage(nn.Module):
    """conv or GHPA -> GroupNorm -> 2x2 max-pool -> GELU, with the GroupNorm affine applied after the pool.

    ``phases=True`` (encoder1): conv + max-pool as a :class:`_PhaseConv`; the GroupNorm statistics are taken over
    its four phase blocks (together, exactly the full-resolution feature map) and the pool is a max over them."""

    def __init__(self, block: nn.Module, gn: nn.GroupNorm | None, centered: bool, phases: bool = False) -> None:
        super().__init__()
        sign = None if gn is None else torch.where(gn.weight.detach() < 0, -1.0, 1.0)
        self.phases = 4 if phases else 1
        if phases:
            self.block = _PhaseConv(block, sign)
        else:
            self.block = _FastGHPA(block, out_sign=sign) if isinstance(block, GHPA) else _ConvHolder(block, sign)
        self.gn = None if gn is None else _GroupNormStats(gn, sign, centered, self.phases)

    def forward(self, lay: _Layout, x: torch.Tensor) -> torch.Tensor:
        y = self.block(lay, x)
        if self.gn is None:  # encoder6: no norm, no pool
            return lay.act(y)
        a, b = self.gn(lay, y)
        pooled = lay.pool2(y) if self.phases == 1 else lay.phase_max(y, self.phases)
        return lay.act(pooled * a + b)


class _PhaseConv(nn.Module):
    """A 3x3 convolution (padding 1) whose output is 2x2 max-pooled, computed as one 4x4 stride-2 convolution
    whose 4 * C_out channels are the four pool phases (block-major: phase (py, px) = channels (2 py + px) * C_out ...).

    Why: encoder1's 3 -> 8 convolution at 256x256 fills 8 of a 16-lane AVX-512 tile (XNNPACK pads the output
    channels); the phase form fills 32 lanes at 128x128 for 1.8x the MACs, and the max-pool over 256x256x8 becomes
    a max over four channel blocks at 128x128. Exact: each phase's kernel is the 3x3 kernel placed at offset
    (py, px) in a zero 4x4 kernel. Output channels may be negated (``sign``, see :class:`_GroupNormStats`)."""

    def __init__(self, conv: nn.Conv2d, sign: torch.Tensor | None) -> None:
        super().__init__()
        if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1) or conv.groups != 1 \
                or conv.dilation != (1, 1):
            raise ValueError("_PhaseConv rewrites a plain 3x3, padding-1 convolution")
        s = torch.ones(conv.out_channels) if sign is None else sign
        w, b = conv.weight.detach() * s.view(-1, 1, 1, 1), conv.bias.detach() * s
        c_out, c_in = w.shape[:2]
        w4 = torch.zeros(4, c_out, c_in, 4, 4)
        for py in range(2):
            for px in range(2):
                w4[2 * py + px, :, :, py:py + 3, px:px + 3] = w
        self.register_buffer("w", w4.reshape(4 * c_out, c_in, 4, 4))
        self.register_buffer("b", b.repeat(4))

    def forward(self, lay: _Layout, x: torch.Tensor) -> torch.Tensor:
        return lay.conv(x, self.w, self.b, padding=1, stride=2)


class _DecoderStage(nn.Module):
    """GHPA or conv -> GroupNorm -> (2x bilinear up) -> GELU, plus the deep-supervision 1x1 conv GAB reads as mask.

    The GroupNorm affine runs before the upsampling (a per-channel affine commutes with bilinear resizing). ``head``
    (decoder5): the final 1x1 convolution's decoder half rides along as a second output channel of the mask conv
    (one pass over the full-resolution features instead of two), with ``head_bias`` (the folded constants of the
    network's head) as its bias; the stage then returns (features, mask, logit term)."""

    def __init__(self, block: nn.Module, gn: nn.GroupNorm, gt_conv: nn.Conv2d, up: bool, centered: bool,
                 head: nn.Conv2d | None = None, head_bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.block = _FastGHPA(block) if isinstance(block, GHPA) else _ConvHolder(block, None)
        self.gn = _GroupNormStats(gn, torch.ones(gn.num_channels), centered)
        self.gt = _ConvHolder(gt_conv, None)
        self.head = head is not None
        if head is not None:
            self.gt.w = torch.cat([self.gt.w, head.weight.detach()])
            self.gt.b = torch.cat([self.gt.b, head.bias.detach() + (0 if head_bias is None else head_bias)])
        self.up = up

    def forward(self, lay: _Layout, x: torch.Tensor):
        y = self.block(lay, x)
        a, b = self.gn(lay, y)
        y = y * a + b
        if self.up:
            h, w = lay.hw(y)
            y = lay.resize(y, (2 * h, 2 * w))
        y = lay.act(y)
        if self.head:
            mask, logit = lay.split(self.gt(lay, y), [1, 1])
            return y, mask, logit
        return y, self.gt(lay, y)


class _Head(nn.Module):
    """Final logits (at the last decoder's resolution; the final 1x1 conv is folded into decoder5 and GAB1) ->
    bilinear up to the input size -> sigmoid."""

    def __init__(self, input_hw: tuple[int, int]) -> None:
        super().__init__()
        self.input_hw = tuple(input_hw)

    def forward(self, lay: _Layout, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(lay.resize(logits, self.input_hw))


BLOCKS = MODEL_BLOCKS
"""The rewritten network's blocks in execution order (``model.ege_unet.BLOCKS``); each is a submodule of
:class:`FastEGEUNet` under this name, so converter-generated op and tensor names carry it."""


class FastEGEUNet(nn.Module):
    """Same function as ``DeployEGEUNet(net, input_hw)`` (normalised float image in, probability out), in
    ``layout`` for both input and output, built for exactly ``input_hw``. ``int8_friendly`` picks the centred
    GroupNorm statistics (see :class:`_GroupNormStats`): same function, one more pass, ranges that survive int8 when
    the statistics ops themselves are quantized. The default E[x^2] - E[x]^2 form is what the exporters convert:
    measured on 120 isic2017 val images, its TFLite graph stays within 1.9e-5 of PyTorch where the centred one
    drifted to 5.3e-4, and the default int8 recipes keep the statistics ops float, so they do not need it."""

    def __init__(self, net: EGEUNet, input_hw: tuple[int, int] = INPUT_HW, layout: str = "NHWC",
                 int8_friendly: bool = False, phase_encoder1: bool = True,
                 layout_ops: type[_Layout] = _Layout) -> None:
        super().__init__()
        src = DeployEGEUNet(copy.deepcopy(net).eval(), input_hw=input_hw).net
        self.lay = layout_ops(layout, src.act, src.align_corners, affine_as_conv=int8_friendly)
        self.layout = layout
        if not (src.bridge and src.gt_ds):
            raise ValueError("FastEGEUNet supports the full EGE-UNet (bridge=True, gt_ds=True); export other variants "
                             "through DeployEGEUNet")
        for mod in src.modules():
            if isinstance(mod, ChannelLayerNorm) and mod.eps <= 0:
                raise ValueError("channel LayerNorm with eps <= 0 is not supported")
        for i in range(1, 7):
            gn = getattr(src, f"ebn{i}") if i < 6 else None
            setattr(self, f"encoder{i}", _EncoderStage(getattr(src, f"encoder{i}")[0], gn, int8_friendly,
                                                       phases=phase_encoder1 and i == 1))
        head = src.final
        if head.out_channels != 1 or head.kernel_size != (1, 1):
            raise ValueError("FastEGEUNet folds a 1x1, one-class final convolution")
        for i in range(1, 6):  # GAB{i} is the bridge at stage i (GAB1: full resolution, folded with the head)
            gab = getattr(src, f"GAB{i}")
            setattr(self, f"GAB{i}", _FastGAB(gab, regroup=gab.pre_project.out_channels >= REGROUP_MIN_CHANNELS,
                                              head=head if i == 1 else None))
        for i in range(1, 6):
            last = i == 5
            setattr(self, f"decoder{i}", _DecoderStage(getattr(src, f"decoder{i}")[0], getattr(src, f"dbn{i}"),
                                                       getattr(src, f"gt_conv{i}")[0], i > 1, int8_friendly,
                                                       head=head if last else None,
                                                       head_bias=self.GAB1.head_bias if last else None))
        self.final = _Head(input_hw)
        for m in self.modules():
            if isinstance(m, _FastGHPA):
                m.prepare(self.lay)
        for m in self.modules():
            # every constant contiguous: litert-torch 0.9+ serialises a strided constant (e.g. a transposed matrix
            # product) in memory order, silently (google-ai-edge/litert-torch#1238); measured here: 0.02-0.99 off
            for name, b in list(m._buffers.items()):
                if b is not None:
                    m._buffers[name] = b.contiguous()
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lay = self.lay
        skips = []
        out = x
        for i in range(1, 6):
            out = getattr(self, f"encoder{i}")(lay, out)
            skips.append(out)
        out = self.encoder6(lay, out)
        high = out
        for i in range(1, 5):
            out, mask = getattr(self, f"decoder{i}")(lay, out)
            stage = 6 - i  # GAB5 (coarsest) ... GAB2
            high = getattr(self, f"GAB{stage}")(lay, high, skips[stage - 1], mask)
            out = out + high
        # last stage: final(decoder5 + GAB1) with the final 1x1 conv folded into both halves
        out, mask, logits = self.decoder5(lay, out)
        return self.final(lay, logits + self.GAB1(lay, high, skips[0], mask))


class _ConvHolder(nn.Module):
    """A plain convolution's weights (optionally negated per output channel) applied in the module's layout."""

    def __init__(self, conv: nn.Conv2d, sign: torch.Tensor | None) -> None:
        super().__init__()
        s = torch.ones(conv.out_channels) if sign is None else sign
        self.register_buffer("w", conv.weight.detach() * s.view(-1, 1, 1, 1))
        self.register_buffer("b", conv.bias.detach() * s)
        self.padding, self.dilation, self.groups = conv.padding[0], conv.dilation[0], conv.groups

    def forward(self, lay: _Layout, x: torch.Tensor) -> torch.Tensor:
        return lay.conv(x, self.w, self.b, padding=self.padding, dilation=self.dilation, groups=self.groups)


class _Preprocess(nn.Module):
    """The contract's per-image min-max stretch (``contract.minmax_normalize``, the one definition), as a named
    block so that int8 recipes and the blame ranking can address it."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return minmax_normalize(image)


class FastDeployModule(nn.Module):
    """What the converters see: uint8 image (baked) or normalised float image (raw) in ``layout`` -> probability
    in the same layout. No permutes at the edges: the network itself runs in ``layout``."""

    def __init__(self, fast: FastEGEUNet, baked: bool) -> None:
        super().__init__()
        self.fast = fast
        self.preprocess = _Preprocess() if baked else None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fast(image if self.preprocess is None else self.preprocess(image))


def fast_module(net: EGEUNet, layout: str, baked: bool, input_hw: tuple[int, int] = INPUT_HW,
                int8_friendly: bool = False, layout_ops: type[_Layout] = _Layout) -> FastDeployModule:
    """The rewritten deployable module for an I/O spec; the caller's network is left untouched. ``layout_ops``: a
    :class:`_Layout` subclass with other forms of the same layout operations (a converter's preferred ones)."""
    return FastDeployModule(FastEGEUNet(net, input_hw, layout, int8_friendly, layout_ops=layout_ops), baked).eval()
