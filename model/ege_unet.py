"""EGE-UNet: An Efficient Group Enhanced UNet for Skin Lesion Segmentation (Ruan et al., MICCAI 2023).

Paper: https://arxiv.org/abs/2307.08473; official code: https://github.com/JCruan519/EGE-UNet (Apache-2.0).
This is an independent implementation that keeps the official state_dict layout, so a checkpoint trained with the
official code loads with ``strict=True`` and gives the same outputs. Differences, all opt-in or bug fixes:

- ``gt_ds=False`` works (the official code crashes): the bridges are then built without the mask channel.
- ``bridge=False`` uses plain additive skips (the official code crashes there too).
- :meth:`EGEUNet.forward_logits` returns pre-sigmoid maps, so the trainer can use the numerically stable BCE.
- :class:`DeployEGEUNet` is the inference view: final probability map only, GHPA gates folded to constants.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ACTIVATIONS, GAB, GHPA, activation, group_norm_max_pool, resize_bilinear

__all__ = ["EGEUNet", "DeployEGEUNet", "ModelCfg", "create_model", "list_models"]

DS_WEIGHTS = (1.0, 0.5, 0.4, 0.3, 0.2, 0.1)
"""Loss weights of the paper (Eq. 2): final output, then the deep-supervision maps from fine to coarse."""


@dataclass(frozen=True)
class ModelCfg:
    """Architecture hyper-parameters of one EGE-UNet variant."""

    num_classes: int = 1
    input_channels: int = 3
    c_list: tuple[int, ...] = (8, 16, 24, 32, 48, 64)
    bridge: bool = True
    gt_ds: bool = True
    act: str = "gelu"  # "sigmoid_gelu": the full-integer variant (layers.ACTIVATIONS)
    align_corners: bool = True  # False: half-pixel 2x upsampling, which NPUs resize in hardware (Ethos-U: only 2x)

    @property
    def is_paper(self) -> bool:
        """The paper's function (erf GELU, align-corners upsampling); the other settings are the integer variant."""
        return self.act == "gelu" and self.align_corners


class EGEUNet(nn.Module):
    """Six-stage U-shaped network: three plain conv stages, three GHPA stages, GAB bridges, deep supervision.

    ``forward`` returns what the official model returns: with ``gt_ds`` a tuple ``(ds_probs, prob)`` where
    ``ds_probs`` are the five deep-supervision probability maps upsampled to the input size (coarse to fine),
    without it just ``prob``. Inputs are NCHW float in the preprocessing contract's range (0..255).
    """

    def __init__(
        self,
        num_classes: int = 1,
        input_channels: int = 3,
        c_list: tuple[int, ...] | list[int] = (8, 16, 24, 32, 48, 64),
        bridge: bool = True,
        gt_ds: bool = True,
        act: str = "gelu",
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        c = list(c_list)
        if len(c) != 6:
            raise ValueError(f"c_list needs 6 stage widths, got {len(c)}")
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; known: {', '.join(ACTIVATIONS)}")
        self.cfg = ModelCfg(num_classes, input_channels, tuple(c), bridge, gt_ds, act, bool(align_corners))
        self.act, self.align_corners = act, bool(align_corners)
        self.bridge, self.gt_ds = bridge, gt_ds
        self.fast_resize = False  # training fast path, see layers.use_training_fast_paths

        def conv3(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1))

        self.encoder1 = conv3(input_channels, c[0])
        self.encoder2 = conv3(c[0], c[1])
        self.encoder3 = conv3(c[1], c[2])
        self.encoder4 = nn.Sequential(GHPA(c[2], c[3], act=act))
        self.encoder5 = nn.Sequential(GHPA(c[3], c[4], act=act))
        self.encoder6 = nn.Sequential(GHPA(c[4], c[5], act=act))
        if bridge:
            for i in range(5):  # GAB1 bridges stage 1 (finest) ... GAB5 stage 5
                self.add_module(f"GAB{i + 1}", GAB(c[i + 1], c[i], with_mask=gt_ds, align_corners=align_corners))
        if gt_ds:
            for i in range(5):  # gt_conv1 reads the coarsest decoder stage (c4) ... gt_conv5 the finest (c0)
                self.add_module(f"gt_conv{i + 1}", nn.Sequential(nn.Conv2d(c[4 - i], 1, 1)))
        self.decoder1 = nn.Sequential(GHPA(c[5], c[4], act=act))
        self.decoder2 = nn.Sequential(GHPA(c[4], c[3], act=act))
        self.decoder3 = nn.Sequential(GHPA(c[3], c[2], act=act))
        self.decoder4 = conv3(c[2], c[1])
        self.decoder5 = conv3(c[1], c[0])
        for i in range(5):
            self.add_module(f"ebn{i + 1}", nn.GroupNorm(4, c[i]))
            self.add_module(f"dbn{i + 1}", nn.GroupNorm(4, c[4 - i]))
        self.final = nn.Conv2d(c[0], num_classes, 1)
        self.apply(_init_weights)

    def forward_logits(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Pre-sigmoid outputs: the deep-supervision logits at their own resolution (coarse to fine) and the final
        logits at input resolution. The deep-supervision list is empty when ``gt_ds=False``."""
        check_input_shape(x, self.cfg.input_channels)
        skips = []
        out = x
        for i in range(5):
            encoder, norm = getattr(self, f"encoder{i + 1}"), getattr(self, f"ebn{i + 1}")
            out = activation(group_norm_max_pool(norm, encoder(out), fast=self.fast_resize), self.act)
            skips.append(out)
        out = activation(self.encoder6(out), self.act)
        high = out  # the bridge's high-level input: t6, then the fused t5, t4...
        ds_logits: list[torch.Tensor] = []
        for i in range(5):
            stage = 5 - i  # skip index 5 (coarsest) ... 1
            decoder, norm = getattr(self, f"decoder{i + 1}"), getattr(self, f"dbn{i + 1}")
            out = norm(decoder(out))
            if i > 0:
                out = _up2(out, self.align_corners)
            out = activation(out, self.act)
            mask = None
            if self.gt_ds:
                mask = getattr(self, f"gt_conv{i + 1}")(out)
                ds_logits.append(mask)
            skip = skips[stage - 1]
            if self.bridge:
                skip = getattr(self, f"GAB{stage}")(high, skip, mask)
            high = skip
            out = out + skip
        logits = self.final(out)
        if self.fast_resize:
            logits = resize_bilinear(logits, (2 * logits.shape[2], 2 * logits.shape[3]), fast=True,
                                     align_corners=self.align_corners)
        else:
            logits = _up2(logits, self.align_corners)
        return ds_logits, logits

    def forward(self, x: torch.Tensor):
        ds_logits, logits = self.forward_logits(x)
        prob = torch.sigmoid(logits)
        if not self.gt_ds:
            return prob
        size = logits.shape[2:]
        ds_probs = tuple(torch.sigmoid(upsample_to(d, size, self.align_corners)) for d in ds_logits)
        return ds_probs, prob


class DeployEGEUNet(nn.Module):
    """Inference view: the final probability map only, GHPA gates folded for one input size.

    The deep-supervision heads stay in the graph where GAB reads them as its mask input; only their upsampling
    and sigmoid, which exist for the training loss, are dropped.
    """

    def __init__(self, net: EGEUNet, input_hw: tuple[int, int] | None = (256, 256)) -> None:
        super().__init__()
        self.net = net.eval()
        if input_hw is not None:
            fold_all_gates(self.net, input_hw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net.forward_logits(x)[1])


def fold_all_gates(net: EGEUNet, input_hw: tuple[int, int]) -> None:
    """Fold every GHPA's gates for an input of ``input_hw``; the stage a GHPA sits at fixes its feature size."""
    h, w = input_hw
    for name, module in net.named_modules():
        if isinstance(module, GHPA):
            stage_scale = _GHPA_SCALE[name.split(".")[0]]
            module.fold_gates(h // stage_scale, w // stage_scale)


# Down-sampling factor of the feature map each GHPA stage sees (encoder4 runs after three 2x poolings).
_GHPA_SCALE = {"encoder4": 8, "encoder5": 16, "encoder6": 32, "decoder1": 32, "decoder2": 32, "decoder3": 16}


def check_input_shape(x: torch.Tensor, channels: int) -> None:
    """Five 2x poolings and bilinear skips need H and W divisible by 32; say which size would work."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"expected an N x {channels} x H x W tensor, got shape {tuple(x.shape)}")
    h, w = x.shape[2], x.shape[3]
    if h % 32 or w % 32:
        ok_h, ok_w = -(-h // 32) * 32, -(-w // 32) * 32
        raise ValueError(f"input H and W must be divisible by 32, got {h}x{w}; resize or pad to {ok_h}x{ok_w}")


def _up2(x: torch.Tensor, align_corners: bool = True) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=align_corners)


def upsample_to(x: torch.Tensor, size, align_corners: bool = True) -> torch.Tensor:
    """Bilinear, align_corners=True: the resampling the official model uses everywhere (False: the integer
    variant's half-pixel form)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


def _init_weights(m: nn.Module) -> None:
    """The official initialisation (He-normal on fan-out for convolutions), kept for recipe fidelity."""
    if isinstance(m, nn.Conv1d):
        m.weight.data.normal_(0, math.sqrt(2.0 / (m.kernel_size[0] * m.out_channels)))
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            m.bias.data.zero_()


BLOCKS = ("preprocess", *(f"encoder{i}" for i in range(1, 7)),
          *(b for i in range(1, 6) for b in (f"decoder{i}", f"GAB{6 - i}")), "final")
"""The network's blocks in execution order, under the names of its submodules (plus the contract's preprocessing and
the head): the export rewrite keeps them as its submodule names, so converter-generated op and tensor names carry them,
and the per-block int8 recipes (calibration/) and the int8 blame ranking address blocks by them."""


# --- registry (timm style: variants are data) ---------------------------------------------------------------------

_MODELS: dict[str, ModelCfg] = {
    "egeunet": ModelCfg(),
    "egeunet_nods": ModelCfg(gt_ds=False),
    "egeunet_nobridge": ModelCfg(bridge=False),
    "egeunet_int": ModelCfg(act="sigmoid_gelu", align_corners=False),
}


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str = "egeunet", **overrides) -> EGEUNet:
    """The one entry point to build a variant by name; keyword overrides change single fields."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    cfg = {**asdict(_MODELS[name]), **overrides}
    return EGEUNet(**cfg)


def model_from_cfg(cfg: dict) -> EGEUNet:
    return EGEUNet(**{k: (tuple(v) if k == "c_list" else v) for k, v in cfg.items()})

