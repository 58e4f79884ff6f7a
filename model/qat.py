"""Quantization-aware training: fake int8 on every activation and weight of EGE-UNet's forward, op by op.

Why not a generic QAT tool: the full-integer artifact quantizes *every* op of the exported graph (convolutions, but
also the LayerNorm statistics, rsqrt, the GroupNorm statistics, the sigmoid-GELU's LOGISTIC and MUL, resizes,
concatenations, additions), and PT2E / NNCF quantizers annotate only the ops their backends fuse, leaving the
normalisations float in the simulation while the shipped graph has them in int8, exactly where this network loses
its accuracy (post-training: mask agreement 0.85). So the simulation is written here, over the network's own forward:

- :class:`FakeQuantMode` is a ``TorchFunctionMode``: every torch function whose inputs descend from the image gets
  its float output fake-quantized to int8 (per-tensor, asymmetric, ranges from an exponential moving average of
  each batch's min/max, as the calibration of the exported graph takes a moving average of per-image min/max), and
  every convolution / linear weight applied to such a tensor is fake-quantized per output channel (symmetric int8,
  as the exporter's recipe). Ops that only move values (views, slices, max-pooling) keep their input's grid.
- GroupNorm is decomposed into the statistics the exported graph computes (spatial means, the centred square,
  group means, rsqrt, a per-channel scale and shift), each fake-quantized.
- Gradients pass straight through the rounding inside the range (``torch.fake_quantize_per_tensor_affine``).
- Activation ranges (``RANGE_MODES``): by default the ones the export will ship, i.e. the float network's extremes
  over the calibration images (:meth:`QATNet.calibrate`, :func:`range_images`), recomputed after each epoch and
  frozen while it trains, so the weights learn under the grids the artifact really has. The first QAT run used a
  moving average of fake-quantized batch ranges (``ema``), which the export's extremes differ from.

Observers are addressed by the order of the quantized ops in a forward pass, which is fixed for a network (it does
not depend on the batch size: only tensors that descend from the input count). Their state is a plain dict saved
in the checkpoint, so a resumed QAT run continues exactly.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

QMIN, QMAX = -128, 127
EMA = 0.01
"""Moving-average factor of the activation ranges (per batch of training images), ``ranges="ema"``."""
RANGE_MODES = ("extremes", "ema")
"""How a QAT run sets its activation ranges. ``extremes`` (default): what the int8-full export ships, the min of
per-image minima and max of maxima of the *float* network over the export's default calibration images
(:func:`range_images`), recomputed after every epoch's training (and before the first) and frozen within the epoch.
``ema``: a moving average of each training batch's min/max under fake quantization (the first QAT runs)."""

_VALUE_PRESERVING = {
    "view", "reshape", "permute", "contiguous", "chunk", "split", "__getitem__", "squeeze", "unsqueeze", "flatten",
    "transpose", "clone", "detach", "to", "max_pool2d", "max_pool2d_with_indices", "size", "dim", "float",
    "split_with_sizes", "expand", "expand_as", "unbind", "narrow",
}
"""Functions whose output takes its values from the input unchanged: the int8 graph keeps the input's scale."""
_WEIGHTED = {"conv2d", "conv1d", "linear"}
_MARK = "_egeunet_act"


def _name(func) -> str:
    return getattr(func, "__name__", str(func))


def _is_act(t) -> bool:
    return isinstance(t, torch.Tensor) and getattr(t, _MARK, False)


def _any_act(args, kwargs) -> bool:
    for a in (*args, *kwargs.values()):
        if _is_act(a) or (isinstance(a, (list, tuple)) and any(_is_act(t) for t in a)):
            return True
    return False


def _mark(out):
    if isinstance(out, torch.Tensor):
        setattr(out, _MARK, True)
    elif isinstance(out, (list, tuple)):
        for t in out:
            _mark(t)
    return out


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 (what the exporter's CHANNELWISE recipe stores)."""
    scale = (w.detach().abs().flatten(1).amax(dim=1) / 127.0).clamp_min(1e-12)
    zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, scale.float(), zero, 0, -127, 127)


class FakeQuantMode(TorchFunctionMode):
    """Fake int8 on the forward pass it wraps. ``observers``: {op index: tensor([min, max])}, updated in place
    while ``update`` is True (training), read only otherwise (validation, export checks)."""

    def __init__(self, observers: dict, update: bool, enabled: bool = True, observe_only: bool = False) -> None:
        super().__init__()
        self.observers, self.update, self.enabled = observers, update, enabled
        self.observe_only = observe_only  # the float network: record each op's extremes, quantize nothing
        self.index = 0
        self.last_scale = 1e-8

    def quantize(self, t: torch.Tensor) -> torch.Tensor:
        if not (isinstance(t, torch.Tensor) and t.is_floating_point()):
            return t
        i = self.index
        self.index += 1
        lo, hi = t.detach().min(), t.detach().max()
        obs = self.observers.get(i)
        if self.observe_only:
            seen = torch.stack([lo, hi]).float()
            if obs is None:
                self.observers[i] = seen
            else:
                obs[0] = torch.minimum(obs[0], seen[0])
                obs[1] = torch.maximum(obs[1], seen[1])
            return _mark(t)
        if obs is None:
            obs = torch.stack([lo, hi]).float()
            self.observers[i] = obs
        elif self.update:
            obs.mul_(1 - EMA).add_(torch.stack([lo, hi]).float(), alpha=EMA)
        mn, mx = float(min(obs[0], 0.0)), float(max(obs[1], 0.0))  # zero must be exact (padding, ReLU-like tails)
        scale = max((mx - mn) / (QMAX - QMIN), 1e-8)
        self.last_scale = scale
        zero = int(round(QMIN - mn / scale))
        zero = min(max(zero, QMIN), QMAX)
        return _mark(torch.fake_quantize_per_tensor_affine(t, scale, zero, QMIN, QMAX))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.enabled or not _any_act(args, kwargs):
            return func(*args, **kwargs)
        name = _name(func)
        if name == "group_norm":
            return self._group_norm(*args, **kwargs)
        if name == "rsqrt" and not self.observe_only:
            # an int8 variance that rounds to 0 meets the kernel's largest output, never infinity
            args = (self.positive(args[0]), *args[1:])
        if name in _WEIGHTED and not self.observe_only and len(args) > 1 and isinstance(args[1], torch.Tensor):
            args = (args[0], fake_quant_weight(args[1]), *args[2:])
        out = func(*args, **kwargs)
        if name in _VALUE_PRESERVING or not isinstance(out, torch.Tensor):
            return _mark(out)
        return self.quantize(out)

    def positive(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (just quantized) with its zeros lifted to half a quantization step: rsqrt stays finite, and so do
        its gradients."""
        return t.clamp_min(max(self.last_scale / 2, 1e-12))

    def _group_norm(self, x, num_groups, weight=None, bias=None, eps=1e-5):
        """GroupNorm as the exported graph computes it (centred statistics), every intermediate fake-quantized.
        Runs inside :meth:`__torch_function__`, where the mode is off, so each step is quantized explicitly."""
        q = self.quantize
        n, c, h, w = x.shape
        g, k = num_groups, c // num_groups
        m1 = q(x.mean(dim=(2, 3), keepdim=True))  # per-channel spatial mean
        xc = q(x - m1)
        var_c = q(q(xc * xc).mean(dim=(2, 3), keepdim=True))
        mean_g = q(m1.reshape(n, g, k).mean(dim=2, keepdim=True))
        spread = q(m1.reshape(n, g, k) - mean_g)
        var_g = q(q(var_c.reshape(n, g, k) + q(spread * spread)).mean(dim=2, keepdim=True) + eps)
        rstd = q(torch.rsqrt(var_g if self.observe_only else self.positive(var_g)))
        scale = q(rstd.expand(n, g, k).reshape(n, c, 1, 1) * weight.reshape(1, c, 1, 1))
        shift = q(bias.reshape(1, c, 1, 1) - q(mean_g * rstd).expand(n, g, k).reshape(n, c, 1, 1)
                  * weight.reshape(1, c, 1, 1))
        return q(q(x * scale) + shift)


class QATNet(torch.nn.Module):
    """``net`` (an EGEUNet) whose ``forward_logits`` runs under :class:`FakeQuantMode`. ``ranges="ema"``: training
    updates the activation ranges, eval mode freezes them. ``ranges="extremes"``: the ranges are set only by
    :meth:`calibrate` (the float network's extremes, as the export calibrates) and frozen in training too.
    ``observers`` is the state a checkpoint keeps."""

    def __init__(self, net: torch.nn.Module, observers: dict | None = None, ranges: str = "ema") -> None:
        super().__init__()
        if ranges not in RANGE_MODES:
            raise ValueError(f"QAT ranges {ranges!r} is unknown; choose {', '.join(RANGE_MODES)}")
        self.net = net
        self.observers: dict = {} if observers is None else observers
        self.ranges = ranges
        self.cfg = net.cfg

    def forward_logits(self, x: torch.Tensor):
        mode = FakeQuantMode(self.observers, update=self.training and self.ranges == "ema")
        x = mode.quantize(_mark(x))  # the image as the graph's int8 input (outside the mode: not an op of the net)
        with mode:
            return self.net.forward_logits(x)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, batch_size: int = 16) -> dict:
        """Set every observer to the extremes of the float network (no fake quantization anywhere) over ``x``
        (normalised NCHW images): the elementwise min of per-image minima and max of maxima, as the exporter's
        ``calibrate_extremes`` does on the float graph. The per-op minima over a batch are the minima of the
        per-image minima (no op mixes images), so batches give the same ranges as single images. Returns the
        observers (the same dict, updated in place)."""
        was_training = self.net.training
        self.net.eval()
        fresh: dict = {}
        try:
            for i in range(0, len(x), batch_size):
                mode = FakeQuantMode(fresh, update=True, observe_only=True)
                xb = mode.quantize(_mark(x[i : i + batch_size]))
                with mode:
                    self.net.forward_logits(xb)
        finally:
            self.net.train(was_training)
        self.observers.clear()
        self.observers.update(fresh)
        return self.observers

    def forward(self, x: torch.Tensor):
        return self.forward_logits(x)

    def observer_state(self) -> dict:
        return {int(k): v.clone() for k, v in self.observers.items()}


def range_images() -> torch.Tensor:
    """The images the ``extremes`` ranges are computed on, as uint8 NHWC: the int8-full export's default calibration
    set, i.e. the bundled sample's 64 ISIC 2017 train images (every 31st of the 1,999 train pairs; an export given no
    ``--calib`` calibrates on exactly these, ``calibration/build.py``'s ``bundled_calibration_set``), decoded at
    model resolution as the calibration set decodes them. Training images of ISIC 2017, never val or test."""
    from .bundled import SAMPLE_DATA
    from .data import load_split

    return torch.from_numpy(load_split(SAMPLE_DATA, "train").images)


def distillation_logits(teacher: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The fp32 reference's output logits for ``x``: their sigmoid is the probability map the integer network is
    trained to reproduce (and the optional logit term matches them directly)."""
    with torch.no_grad():
        return teacher.forward_logits(x)[1]


__all__ = ["RANGE_MODES", "FakeQuantMode", "QATNet", "distillation_logits", "fake_quant_weight", "range_images"]
