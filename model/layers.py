"""Building blocks of EGE-UNet: channel LayerNorm, GHPA and GAB.

The module and parameter names (``params_xy``, ``conv_xy``, ``norm1``, ``g0``, ``tail_conv``...) are the ones of the
official implementation (github.com/JCruan519/EGE-UNet), because they are the state_dict keys a checkpoint trained
there carries; ``tests/test_model.py`` checks them against ``official_state_dict_keys.tsv``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (ConvNeXt's ``channels_first`` LayerNorm).

    Two computations of the same function: the explicit one (mean / variance / rsqrt, the default) keeps the exported
    graphs free of layout transposes and shows a quantizer every statistic; the fused one (``fused=True``, see
    :func:`use_fused_norms`) runs ``F.layer_norm`` on the NHWC view of a channels_last tensor, one kernel instead of
    ten, which makes training 1.6x faster on a CPU.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            nhwc = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
            return nhwc.permute(0, 3, 1, 2)
        mean = x.mean(1, keepdim=True)
        centered = x - mean
        var = centered.pow(2).mean(1, keepdim=True)
        x = centered * torch.rsqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def use_fused_norms(net: nn.Module, fused: bool = True) -> nn.Module:
    """Switch every :class:`ChannelLayerNorm` in ``net`` to the fused (training, PyTorch inference) or the explicit
    (export) computation. Returns ``net``."""
    for m in net.modules():
        if isinstance(m, ChannelLayerNorm):
            m.fused = fused
    return net


def _gate_conv2d(channels: int) -> nn.Sequential:
    """Depthwise 3x3 -> GELU -> pointwise, applied to a learnable gate tensor (the paper's 'DW' on P)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels), nn.GELU(), nn.Conv2d(channels, channels, 1)
    )


def _gate_conv1d(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(channels, channels, 3, padding=1, groups=channels), nn.GELU(), nn.Conv1d(channels, channels, 1)
    )


class GHPA(nn.Module):
    """Group multi-axis Hadamard Product Attention (paper, Algorithm 1).

    The input is split into four channel groups: the first three are multiplied by learnable gates over the
    (H, W), (C, W) and (C, H) axes, the fourth goes through a depthwise branch. The gates depend only on the
    parameters and the feature-map size, never on the input, which is what :meth:`fold_gates` exploits.
    """

    def __init__(self, dim_in: int, dim_out: int, gate_h: int = 8, gate_w: int = 8) -> None:
        super().__init__()
        if dim_in % 4:
            raise ValueError(f"GHPA needs dim_in divisible by 4, got {dim_in}")
        group = dim_in // 4
        self.params_xy = nn.Parameter(torch.ones(1, group, gate_h, gate_w))
        self.conv_xy = _gate_conv2d(group)
        self.params_zx = nn.Parameter(torch.ones(1, 1, group, gate_h))
        self.conv_zx = _gate_conv1d(group)
        self.params_zy = nn.Parameter(torch.ones(1, 1, group, gate_w))
        self.conv_zy = _gate_conv1d(group)
        self.dw = nn.Sequential(
            nn.Conv2d(group, group, 1), nn.GELU(), nn.Conv2d(group, group, 3, padding=1, groups=group)
        )
        self.norm1 = ChannelLayerNorm(dim_in)
        self.norm2 = ChannelLayerNorm(dim_in)
        self.ldw = nn.Sequential(
            nn.Conv2d(dim_in, dim_in, 3, padding=1, groups=dim_in), nn.GELU(), nn.Conv2d(dim_in, dim_out, 1)
        )
        # Gates folded for a fixed (H, W) by fold_gates(); None while the block is trainable.
        for name in ("gate_xy", "gate_zx", "gate_zy"):
            self.register_buffer(name, None, persistent=False)

    def gates(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three Hadamard gates for a feature map of (height, width), each broadcastable to (1, C/4, H, W).

        Same arithmetic as the official code: the (C, W) gate is interpolated as a 1 x C x W image and convolved
        along W with C as channels; the official permute/multiply/permute-back is a broadcast multiply.
        """
        group = self.params_xy.shape[1]
        g_xy = self.conv_xy(F.interpolate(self.params_xy, size=(height, width), mode="bilinear", align_corners=True))
        # params_zx: (1, 1, C, a) -> (1, 1, C, H); conv along H with C as channels -> (1, C, H) -> (1, C, H, 1)
        zx = F.interpolate(self.params_zx, size=(group, height), mode="bilinear", align_corners=True).squeeze(0)
        g_zx = self.conv_zx(zx).unsqueeze(3)
        # params_zy: (1, 1, C, b) -> (1, 1, C, W) -> (1, C, W) -> (1, C, 1, W)
        zy = F.interpolate(self.params_zy, size=(group, width), mode="bilinear", align_corners=True).squeeze(0)
        g_zy = self.conv_zy(zy).unsqueeze(2)
        return g_xy, g_zx, g_zy

    @torch.no_grad()
    def fold_gates(self, height: int, width: int) -> None:
        """Compute the input-independent gates once and keep them as constants (deployment only).

        They stay three factors, (1, C/4, H, W), (1, C/4, H, 1) and (1, C/4, 1, W), rather than one expanded
        tensor: the two axis gates broadcast, so an artifact stores H + W values per channel for them, not H x W.
        """
        self.gate_xy, self.gate_zx, self.gate_zy = (g.contiguous() for g in self.gates(height, width))

    @property
    def folded_gates(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        return None if self.gate_xy is None else (self.gate_xy, self.gate_zx, self.gate_zy)

    def unfold_gates(self) -> None:
        self.gate_xy = self.gate_zx = self.gate_zy = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        group = x.shape[1] // 4
        height, width = x.shape[2], x.shape[3]
        gates = self.folded_gates
        if gates is None or gates[0].shape[2:] != (height, width):
            gates = self.gates(height, width)
        x1, x2, x3, x4 = x.split(group, dim=1)
        x = torch.cat([x1 * gates[0], x2 * gates[1], x3 * gates[2], self.dw(x4)], dim=1)
        return self.ldw(self.norm2(x))


class GAB(nn.Module):
    """Group Aggregation Bridge (paper, Fig. 3).

    Fuses the high-level features (projected, upsampled), the low-level skip features and, when deep supervision
    is on, the decoder's mask logits, in four groups with dilations (1, 2, 5, 7). ``with_mask=False`` is the
    paper's 'w/o mask information' variant, used when ``gt_ds=False`` (the official code crashes there).
    """

    def __init__(self, dim_high: int, dim_low: int, with_mask: bool = True, dilations=(1, 2, 5, 7)) -> None:
        super().__init__()
        self.with_mask = with_mask
        self.pre_project = nn.Conv2d(dim_high, dim_low, 1)
        group = dim_low // 2 + int(with_mask)
        for i, d in enumerate(dilations):
            conv = nn.Conv2d(group, group, 3, padding=d, dilation=d, groups=group)
            self.add_module(f"g{i}", nn.Sequential(ChannelLayerNorm(group), conv))
        self.tail_conv = nn.Sequential(ChannelLayerNorm(4 * group), nn.Conv2d(4 * group, dim_low, 1))

    def forward(self, x_high: torch.Tensor, x_low: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.with_mask and mask is None:
            raise ValueError("this GAB was built with_mask=True and needs the decoder's mask")
        x_high = self.pre_project(x_high)
        x_high = F.interpolate(x_high, size=x_low.shape[2:], mode="bilinear", align_corners=True)
        highs, lows = x_high.chunk(4, dim=1), x_low.chunk(4, dim=1)
        branches = (self.g0, self.g1, self.g2, self.g3)
        extra = [mask] if self.with_mask else []
        fused = [g(torch.cat([h, low, *extra], dim=1)) for g, h, low in zip(branches, highs, lows, strict=True)]
        return self.tail_conv(torch.cat(fused, dim=1))
