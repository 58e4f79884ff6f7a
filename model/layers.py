"""Building blocks of EGE-UNet: channel LayerNorm, GHPA and GAB.

The module and parameter names (``params_xy``, ``conv_xy``, ``norm1``, ``g0``, ``tail_conv``...) are the ones of the
official implementation (github.com/JCruan519/EGE-UNet), because they are the state_dict keys a checkpoint trained
there carries; ``tests/test_model.py`` checks them against ``official_state_dict_keys.tsv``.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

from .threads import single_thread

ACTIVATIONS = ("gelu", "sigmoid_gelu")
"""``gelu``: the paper's erf GELU. ``sigmoid_gelu``: ``x * sigmoid(1.702 x)``, the form every integer runtime has
kernels for (TFLite Micro has no GELU; LOGISTIC and MUL exist on every NPU and MCU target): the full-integer
artifact's network is trained with it (quantization-aware fine-tune), so the function that ships is the one trained."""


def activation(x: torch.Tensor, kind: str = "gelu") -> torch.Tensor:
    if kind == "gelu":
        return F.gelu(x)
    if kind == "sigmoid_gelu":
        return x * torch.sigmoid(1.702 * x)
    raise ValueError(f"unknown activation {kind!r}; known: {', '.join(ACTIVATIONS)}")


class Activation(nn.Module):
    """:func:`activation` as a module (no parameters: swapping it for ``nn.GELU`` keeps state_dict keys)."""

    def __init__(self, kind: str = "gelu") -> None:
        super().__init__()
        if kind not in ACTIVATIONS:
            raise ValueError(f"unknown activation {kind!r}; known: {', '.join(ACTIVATIONS)}")
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return activation(x, self.kind)

    def extra_repr(self) -> str:
        return self.kind


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
        self.small_nchw = False  # training fast path for <= 8 channels in NCHW, see use_training_fast_paths

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            if self.small_nchw and x.shape[1] <= _NCHW_LN_MAX_CHANNELS and x.is_contiguous():
                return _NchwChannelLayerNorm.apply(x, self.weight, self.bias, self.eps)
            nhwc = x.permute(0, 2, 3, 1)
            if torch.is_grad_enabled() and torch.get_num_threads() > 1:
                nhwc = _NhwcLayerNorm.apply(nhwc, self.weight, self.bias, self.eps)
            else:
                nhwc = F.layer_norm(nhwc, (x.shape[1],), self.weight, self.bias, self.eps)
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


class _NhwcLayerNorm(torch.autograd.Function):
    """``F.layer_norm`` over the last (channel) dimension, whose weight and bias gradients run on one thread.

    PyTorch's CPU LayerNorm backward accumulates the weight and bias gradients in one row of ``channels`` floats per
    thread; with EGE-UNet's 9-36 channels those rows are shorter than a cache line (false sharing is the likely
    cause). Measured at 8x128x128x20: that part took 14.5 ms at 2 threads against 4.8 ms at 1, the whole backward
    14.7 against 6.7 ms; it was the only op of a training step that got slower with a second thread (43 vs 20 ms per
    step). The input gradient still uses every thread (4.2 -> 1.8 ms). Both halves are the native kernel, so results
    are those of ``F.layer_norm``'s backward.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        shape = [x.shape[-1]]
        out, mean, rstd = torch.ops.aten.native_layer_norm(x, shape, weight, bias, eps)
        ctx.save_for_backward(x, mean, rstd, weight, bias)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, mean, rstd, weight, bias = ctx.saved_tensors
        shape = [x.shape[-1]]
        layer_norm_backward = torch.ops.aten.native_layer_norm_backward
        grad_x = layer_norm_backward(grad, x, shape, mean, rstd, weight, bias, [True, False, False])[0]
        grad_weight = grad_bias = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            with single_thread():
                _, grad_weight, grad_bias = layer_norm_backward(grad, x, shape, mean, rstd, weight, bias,
                                                                [False, True, True])
        return grad_x, grad_weight, grad_bias, None


# Up to this many channels a channel LayerNorm is faster on an NCHW tensor (GAB1's 5-channel branches: 6 vs 24 ms
# forward+backward at 8x5x128x128 than F.layer_norm on the NHWC view; from 9 channels on the native one is as fast).
_NCHW_LN_MAX_CHANNELS = 8


class _NchwChannelLayerNorm(torch.autograd.Function):
    """Channel LayerNorm of a contiguous NCHW tensor, returned channels_last, with a hand-written backward.

    ``F.layer_norm`` over a 5-wide last dimension of an NHWC view runs one short scalar row at a time; reducing over
    dim 1 of an NCHW tensor runs vectorised along W instead. The result is written straight into channels_last
    memory for the depthwise conv that follows (saves a layout copy). The backward is the textbook LayerNorm
    gradient with the two weighted channel sums as matrix products, ~1.5x faster than the straightforward form.
    (``torch.var_mean`` over dim 1 measured 50x slower than mean + square here.) Same function as the explicit
    form: biased variance, eps inside the rsqrt.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        centered = x - x.mean(1, keepdim=True)
        rstd = torch.rsqrt((centered * centered).mean(1, keepdim=True).add_(eps))
        xhat = centered.mul_(rstd)
        ctx.save_for_backward(xhat, rstd, weight)
        out = torch.empty_like(x, memory_format=torch.channels_last)
        return torch.addcmul(bias[:, None, None], xhat, weight[:, None, None], out=out)

    @staticmethod
    def backward(ctx, grad):
        xhat, rstd, weight = ctx.saved_tensors
        n, channels, h, w = xhat.shape
        grad = grad.contiguous()  # one layout copy; mixed-layout element-wise ops are 3x slower
        grad_xhat = grad * xhat
        grad_weight = grad_xhat.sum((0, 2, 3)) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None
        # dx = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat)),  g = grad * weight; the weighted channel means as
        # (1 x C) @ (C x HW) products per image (tensordot would copy to put C first)
        mean_g = torch.matmul(weight / channels, grad.view(n, channels, h * w)).view(n, 1, h, w)
        mean_gx = torch.matmul(weight / channels, grad_xhat.view(n, channels, h * w)).view(n, 1, h, w)
        grad_x = torch.addcmul(-mean_g, grad, weight[:, None, None])
        grad_x.addcmul_(xhat, mean_gx, value=-1).mul_(rstd)
        return grad_x, grad_weight, grad_bias, None


class _ToNchw(torch.autograd.Function):
    """``x.contiguous()`` whose gradient goes back channels_last, like the rest of the training graph.

    With a plain ``.contiguous()`` the gradient reaches the upstream GELU / max-pool backward in NCHW while their
    saved inputs are channels_last, and PyTorch's mixed-layout kernels and copies there cost more than this whole
    fast path saves (measured: GELU backward 4x slower plus two 8x8x256x256 copies).
    """

    @staticmethod
    def forward(ctx, x):
        return x.contiguous()

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=torch.channels_last)


# From this many pixels per channel on (EGE-UNet's first stage: 8 x 8 x 256 x 256) a hand-written GroupNorm backward
# beats the native channels_last one (20 vs 27-50 ms); at 128 x 128 they tie.
_GN_FAST_MIN_PIXELS = 256 * 256


def _group_norm_backward_coefficients(sum_g: torch.Tensor, sum_gx: torch.Tensor, weight: torch.Tensor,
                                      mean: torch.Tensor, rstd: torch.Tensor, groups: int, pixels: int):
    """GroupNorm's input gradient as ``dx = dy * coef_g + x * coef_x + const`` (each (n, c)), and the weight and
    bias gradients, from the per-(image, channel) sums of ``dy`` and ``dy * x``. ``mean``, ``rstd``: (n, groups).

    dx = rstd * (g - mean_grp(g) - xhat * mean_grp(g * xhat)), with g = dy * weight, xhat = (x - mean) * rstd.
    The weight gradient, ``sum(dy * (x - mean)) * rstd``, is formed as ``sum(dy * x) - mean * sum(dy)`` and can lose
    a few digits more than the native one (~1e-5 relative) when |mean| >> std.
    """
    n, c = sum_g.shape
    per_group = c // groups
    count = pixels * per_group
    mean_c, rstd_c = mean.repeat_interleave(per_group, 1), rstd.repeat_interleave(per_group, 1)
    sum_g_centered = sum_gx - mean_c * sum_g
    grad_weight = (rstd_c * sum_g_centered).sum(0)
    grad_bias = sum_g.sum(0)
    mean_grp_g = (sum_g * weight).view(n, groups, per_group).sum(2) / count
    mean_grp_gx = rstd * (sum_g_centered * weight).view(n, groups, per_group).sum(2) / count
    coef_x = -(rstd * rstd * mean_grp_gx)
    const = (-coef_x * mean - rstd * mean_grp_g).repeat_interleave(per_group, 1)
    return rstd_c * weight, coef_x.repeat_interleave(per_group, 1), const, grad_weight, grad_bias


class _GroupNormMaxPool(torch.autograd.Function):
    """``F.max_pool2d(group_norm(x), 2, 2)`` of a channels_last tensor with one backward for both.

    The max-pool's gradient is non-zero only at each window's maximum, so the GroupNorm backward's per-(image,
    channel) sums of ``dy`` and ``dy * x`` are sums over the pooled map (a quarter of the pixels, ``x`` gathered at
    the maxima in the forward), and ``dx = x * b + c`` everywhere plus ``dy * a`` scattered to the maxima. Natively
    the max-pool backward first zero-fills a full-size gradient, scatters into it, and the GroupNorm backward reads
    it back whole. The normalised map is not kept for the backward either (8 x 8 x 256 x 256: 16 MB less per step).
    Same indices as the native max-pool (ties included), gradients equal to float rounding
    (``tests/test_model.py``).
    """

    @staticmethod
    def forward(ctx, x, groups, weight, bias, eps):
        n, c, h, w = x.shape
        normed, mean, rstd = torch.native_group_norm(x, weight, bias, n, c, h * w, groups, eps)
        pooled, indices = torch.ops.aten.max_pool2d_with_indices(normed, [2, 2], [2, 2])
        index_rows = indices.permute(0, 2, 3, 1).reshape(n, -1, c)  # per image: (pooled pixel, channel) -> pixel
        x_at_max = x.permute(0, 2, 3, 1).reshape(n, h * w, c).gather(1, index_rows)
        ctx.save_for_backward(x, index_rows, x_at_max, weight, mean, rstd)
        ctx.groups = groups
        return pooled

    @staticmethod
    def backward(ctx, grad):
        x, index_rows, x_at_max, weight, mean, rstd = ctx.saved_tensors  # mean, rstd: (n, groups)
        n, c, h, w = x.shape
        g_rows = grad.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(n, -1, c)
        coef_g, coef_x, const, grad_weight, grad_bias = _group_norm_backward_coefficients(
            g_rows.sum(1), (g_rows * x_at_max).sum(1), weight, mean, rstd, ctx.groups, h * w)
        # The per-channel coefficients broadcast along the pixels. With only c (8) values in the innermost dimension
        # the element-wise kernels barely vectorise (4x slower), so view the rows as (pixels / k, k * c) and tile
        # the coefficients k times: the same products, a long contiguous inner dimension.
        k = _tile_pixels(h * w, c)
        grad_x = torch.addcmul(const.repeat(1, k)[:, None], x.permute(0, 2, 3, 1).reshape(n, h * w // k, k * c),
                               coef_x.repeat(1, k)[:, None])
        grad_x.view(n, h * w, c).scatter_add_(1, index_rows, g_rows * coef_g[:, None])
        return grad_x.view(n, h, w, c).permute(0, 3, 1, 2), None, grad_weight, grad_bias, None


def group_norm_max_pool(norm: nn.GroupNorm, x: torch.Tensor, fast: bool = False) -> torch.Tensor:
    """``F.max_pool2d(norm(x), 2, 2)`` (an EGE-UNet encoder stage); ``fast`` (training) uses
    :class:`_GroupNormMaxPool` on large channels_last maps while gradients are recorded."""
    h, w = x.shape[2:]
    if (fast and torch.is_grad_enabled() and norm.affine and h % 2 == 0 and w % 2 == 0
            and h * w >= _GN_FAST_MIN_PIXELS and x.is_contiguous(memory_format=torch.channels_last)):
        return _GroupNormMaxPool.apply(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
    return F.max_pool2d(norm(x), 2, 2)


def _phase_images(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """(n, c, h, w) channels_last -> its ``dilation**2`` phase sub-images ``x[..., i::d, j::d]`` as a channels_last
    batch (n * d * d, c, ceil(h / d), ceil(w / d)), zero-padded at the bottom and right where h or w is not a
    multiple of d. A 3x3 convolution with dilation d and padding d is a plain 3x3 convolution (padding 1) of each
    phase image, and the zeros stand exactly where the dilated one reads its own zero padding."""
    n, c, h, w = x.shape
    hp, wp = -(-h // dilation), -(-w // dilation)
    nhwc = x.permute(0, 2, 3, 1)
    if (hp * dilation, wp * dilation) != (h, w):
        nhwc = F.pad(nhwc, (0, 0, 0, wp * dilation - w, 0, hp * dilation - h))
    phases = nhwc.reshape(n, hp, dilation, wp, dilation, c).permute(0, 2, 4, 1, 3, 5)
    return phases.reshape(n * dilation * dilation, hp, wp, c).permute(0, 3, 1, 2)


class _DilatedDepthwiseConv(torch.autograd.Function):
    """A 3x3 depthwise convolution with dilation d > 1 and 'same' padding d (GAB's branches), with a faster backward.

    oneDNN's forward of these convolutions is fast, its backward is not (8x5x128x128, d = 2: forward 0.8 ms, backward
    6.5-10 ms, against 2.6 ms for d = 1). The input gradient of a stride-1 'same' convolution is the forward
    convolution of the gradient with the flipped kernel (0.7-1.1 ms there, vs 1.7-3.7 ms); the weight and bias
    gradients are those of the undilated convolution over the d*d phase images of input and gradient
    (:func:`_phase_images`), where oneDNN's fast kernel applies (two copies + 1.5 ms, vs ~5 ms). Same sums in another
    order: gradients agree to ~1e-5 relative.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, dilation):
        ctx.save_for_backward(x, weight)
        ctx.dilation = dilation
        return F.conv2d(x, weight, bias, 1, dilation, dilation, x.shape[1])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        d, channels = ctx.dilation, x.shape[1]
        grad = grad.contiguous(memory_format=torch.channels_last)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad, weight.flip(-1, -2), None, 1, d, d, channels)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                _phase_images(grad, d), _phase_images(x, d), weight, [channels], [1, 1], [1, 1], [1, 1], False,
                [0, 0], channels, [False, True, ctx.needs_input_grad[2]])
        return grad_x, grad_weight, grad_bias, None


def _dilated_depthwise_fast(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """:class:`_DilatedDepthwiseConv` for a channels_last input while gradients are recorded, the module otherwise."""
    if torch.is_grad_enabled() and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return _DilatedDepthwiseConv.apply(x, conv.weight, conv.bias, conv.dilation[0])
    return nn.Conv2d.forward(conv, x)


def _is_dilated_depthwise_same(conv: nn.Conv2d) -> bool:
    d = conv.dilation[0]
    return (conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.dilation == (d, d) and d > 1
            and conv.padding == (d, d) and conv.groups == conv.in_channels == conv.out_channels
            and conv.padding_mode == "zeros")


def _tile_pixels(pixels: int, channels: int, width: int = 256) -> int:
    """Largest k dividing ``pixels`` with k * channels <= max(width, channels): pixels per row of a wide view."""
    k = max(1, width // channels)
    while pixels % k:
        k -= 1
    return k


_RESIZE_MATRICES: dict[tuple, torch.Tensor] = {}


def _resize_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device,
                   align_corners: bool = True) -> torch.Tensor:
    """(n_out, n_in) matrix of 1-D bilinear resampling, taken from ``F.interpolate`` itself (by resampling the
    identity), so its weights are the native kernel's to the last bit."""
    key = (n_in, n_out, dtype, device, align_corners)
    if key not in _RESIZE_MATRICES:
        eye = torch.eye(n_in, dtype=dtype, device=device)[None, :, :, None]
        cols = F.interpolate(eye, size=(n_out, 1), mode="bilinear", align_corners=align_corners)[0, :, :, 0]
        _RESIZE_MATRICES[key] = cols.t().contiguous()
    return _RESIZE_MATRICES[key]


def resize_bilinear(x: torch.Tensor, size, fast: bool = False, align_corners: bool = True) -> torch.Tensor:
    """Bilinear resampling with align_corners=True, the official model's everywhere (``align_corners=False``: the
    half-pixel form an NPU resizes in hardware, used by the full-integer variant).

    ``fast=True`` (training) computes single-channel and contiguous NCHW maps plane by plane as
    ``A_h @ (X @ A_w^T)``: the native kernel's backward scatters one output pixel at a time (8.5 ms per
    8x1x256x256 map, the deep-supervision maps and the final logits were 10% of a step), two matrix products take
    0.7-3 ms forward+backward. Results agree to float rounding (~5e-7). Multi-channel channels_last maps keep the
    native kernel, which is as fast there as the matrices plus two layout changes.
    """
    size = (int(size[0]), int(size[1]))
    if not fast or not x.is_contiguous():  # a 1-channel channels_last tensor is contiguous too
        return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)
    n, c, h, w = x.shape
    a_h = _resize_matrix(h, size[0], x.dtype, x.device, align_corners)
    a_w = _resize_matrix(w, size[1], x.dtype, x.device, align_corners)
    planes = x.reshape(n * c, h, w)
    return torch.matmul(a_h, torch.matmul(planes, a_w.t())).view(n, c, *size)


def _pointwise_as_linear(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution as ``F.linear`` on the NHWC view of a channels_last tensor (no copy either way).

    At one thread PyTorch sends 1x1 convolutions with a batch under 16 to ``_slow_conv2d`` (im2col + GEMM, plus
    layout copies for channels_last), 1.1-1.8x slower than this GEMM. Identical results (exact on this CPU).
    """
    if x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last):
        return nn.Conv2d.forward(conv, x)
    out = F.linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1), conv.bias)
    return out.permute(0, 3, 1, 2)


def use_training_fast_paths(net: nn.Module, fast: bool = True) -> nn.Module:
    """Switch ``net`` (channels_last) to its training computation, or back (``fast=False``). Returns ``net``.

    Every switch computes the same function to float rounding (``tests/test_model.py`` compares outputs and
    gradients with the plain model): fused channel LayerNorms (:func:`use_fused_norms`), GAB branches of at most 8
    channels normalised in NCHW (:class:`GAB`), 1x1 convolutions as GEMMs, a faster backward for GAB's dilated
    depthwise convolutions, single-channel upsampling as matrix products and the first stage's GroupNorm + max-pool
    with one backward (both for modules with a ``fast_resize`` attribute:
    :class:`~egeunet_deploy.model.ege_unet.EGEUNet`, :class:`GAB`). Parameters and state_dict keys are
    untouched, so checkpoints and the export path never see the difference. Measured per-switch effect:
    ``bench/train_speed.py``'s docstring.
    """
    use_fused_norms(net, fast)
    for m in net.modules():
        if isinstance(m, ChannelLayerNorm):
            m.small_nchw = fast
        if hasattr(m, "fast_resize"):
            m.fast_resize = fast
        override = (_pointwise_as_linear if isinstance(m, nn.Conv2d) and _is_pointwise(m)
                    else _dilated_depthwise_fast if isinstance(m, nn.Conv2d) and _is_dilated_depthwise_same(m)
                    else None)
        if override is not None:
            if fast:
                m.forward = types.MethodType(override, m)
            elif "forward" in m.__dict__:
                del m.forward
    return net


def _is_pointwise(conv: nn.Conv2d) -> bool:
    return (conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding in ((0, 0), "valid")
            and conv.groups == 1 and conv.padding_mode == "zeros")


def _gate_conv2d(channels: int, act: str = "gelu") -> nn.Sequential:
    """Depthwise 3x3 -> GELU -> pointwise, applied to a learnable gate tensor (the paper's 'DW' on P)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels), Activation(act), nn.Conv2d(channels, channels, 1)
    )


def _gate_conv1d(channels: int, act: str = "gelu") -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(channels, channels, 3, padding=1, groups=channels), Activation(act), nn.Conv1d(channels, channels, 1)
    )


class GHPA(nn.Module):
    """Group multi-axis Hadamard Product Attention (paper, Algorithm 1).

    The input is split into four channel groups: the first three are multiplied by learnable gates over the
    (H, W), (C, W) and (C, H) axes, the fourth goes through a depthwise branch. The gates depend only on the
    parameters and the feature-map size, never on the input, which is what :meth:`fold_gates` exploits.
    """

    def __init__(self, dim_in: int, dim_out: int, gate_h: int = 8, gate_w: int = 8, act: str = "gelu") -> None:
        super().__init__()
        if dim_in % 4:
            raise ValueError(f"GHPA needs dim_in divisible by 4, got {dim_in}")
        group = dim_in // 4
        self.params_xy = nn.Parameter(torch.ones(1, group, gate_h, gate_w))
        self.conv_xy = _gate_conv2d(group, act)
        self.params_zx = nn.Parameter(torch.ones(1, 1, group, gate_h))
        self.conv_zx = _gate_conv1d(group, act)
        self.params_zy = nn.Parameter(torch.ones(1, 1, group, gate_w))
        self.conv_zy = _gate_conv1d(group, act)
        self.dw = nn.Sequential(
            nn.Conv2d(group, group, 1), Activation(act), nn.Conv2d(group, group, 3, padding=1, groups=group)
        )
        self.norm1 = ChannelLayerNorm(dim_in)
        self.norm2 = ChannelLayerNorm(dim_in)
        self.ldw = nn.Sequential(
            nn.Conv2d(dim_in, dim_in, 3, padding=1, groups=dim_in), Activation(act), nn.Conv2d(dim_in, dim_out, 1)
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

    def __init__(self, dim_high: int, dim_low: int, with_mask: bool = True, dilations=(1, 2, 5, 7),
                 align_corners: bool = True) -> None:
        super().__init__()
        self.with_mask = with_mask
        self.align_corners = align_corners
        self.pre_project = nn.Conv2d(dim_high, dim_low, 1)
        group = dim_low // 2 + int(with_mask)
        for i, d in enumerate(dilations):
            conv = nn.Conv2d(group, group, 3, padding=d, dilation=d, groups=group)
            self.add_module(f"g{i}", nn.Sequential(ChannelLayerNorm(group), conv))
        self.tail_conv = nn.Sequential(ChannelLayerNorm(4 * group), nn.Conv2d(4 * group, dim_low, 1))
        self.fast_resize = False  # training fast paths on (use_training_fast_paths); the name is shared with EGEUNet

    def forward(self, x_high: torch.Tensor, x_low: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.with_mask and mask is None:
            raise ValueError("this GAB was built with_mask=True and needs the decoder's mask")
        x_high = self.pre_project(x_high)
        extra = [mask] if self.with_mask else []
        if self.fast_resize and (x_high.shape[1] + x_low.shape[1]) // 4 + len(extra) <= _NCHW_LN_MAX_CHANNELS:
            return self.tail_conv(torch.cat(self._narrow_branches(x_high, x_low, extra), dim=1))
        x_high = F.interpolate(x_high, size=x_low.shape[2:], mode="bilinear", align_corners=self.align_corners)
        highs, lows = x_high.chunk(4, dim=1), x_low.chunk(4, dim=1)
        branches = (self.g0, self.g1, self.g2, self.g3)
        fused = [g(torch.cat([h, low, *extra], dim=1)) for g, h, low in zip(branches, highs, lows, strict=True)]
        return self.tail_conv(torch.cat(fused, dim=1))

    def _narrow_branches(self, x_high: torch.Tensor, x_low: torch.Tensor, extra: list) -> list[torch.Tensor]:
        """Training fast path for GAB1 (5-channel branches at full skip resolution): concatenate and normalise in
        NCHW, where chunks are contiguous planes and the LayerNorm vectorises (see :class:`_NchwChannelLayerNorm`),
        then hand each branch to its depthwise conv in channels_last, where that conv is 3-6x faster. Measured
        ~40 ms of a 420 ms step saved; the same arithmetic as :meth:`forward` (``x_high`` not yet upsampled)."""
        # NCHW: by matrices, 2.5x faster
        x_high = resize_bilinear(_ToNchw.apply(x_high), x_low.shape[2:], fast=True, align_corners=self.align_corners)
        highs, lows = x_high.chunk(4, dim=1), _ToNchw.apply(x_low).chunk(4, dim=1)
        extra = [e.contiguous() for e in extra]
        out = []
        for g, h, low in zip((self.g0, self.g1, self.g2, self.g3), highs, lows, strict=True):
            normed = g[0](torch.cat([h, low, *extra], dim=1))  # NCHW in, channels_last out
            out.append(g[1](normed))
        return out
