"""The torch modules every exporter converts: the deployable network with its I/O contract built in.

Why wrappers instead of exporting :class:`DeployEGEUNet` as is: an app should hand the artifact the contract's
uint8 RGB image and get a probability map back, with nothing to re-implement (the per-image min-max is easy to get
subtly wrong on a phone). :class:`BakedEGEUNet` therefore runs ``contract.minmax_normalize`` itself, the one
definition of the preprocessing, so the exported graph and the Python contract cannot drift apart.
:class:`RawEGEUNet` is the ``--raw`` variant for people who preprocess themselves (float input 0..255).

Both take the layout the artifact exposes (``NCHW`` or ``NHWC``) and return the probability in that same layout.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from egeunet_deploy.model.contract import INPUT_HW, minmax_normalize
from egeunet_deploy.model.ege_unet import DeployEGEUNet, EGEUNet

LAYOUTS = ("NCHW", "NHWC")
INPUT_NAME = "image"
OUTPUT_NAME = "prob"
BATCH_AXIS = "batch"


@dataclass(frozen=True)
class IOSpec:
    """What an exported graph takes and returns; the exporters and the metadata read it from here."""

    layout: str
    baked: bool
    dynamic_batch: bool = False
    hw: tuple[int, int] = INPUT_HW

    @property
    def input_dtype(self) -> str:
        return "uint8" if self.baked else "float32"

    @property
    def batch(self) -> int | str:
        """1, or the name of the dynamic batch axis (as the ONNX graph and the metadata spell it)."""
        return BATCH_AXIS if self.dynamic_batch else 1

    @property
    def input_shape(self) -> list:
        h, w = self.hw
        return [self.batch, 3, h, w] if self.layout == "NCHW" else [self.batch, h, w, 3]

    @property
    def output_shape(self) -> list:
        h, w = self.hw
        return [self.batch, 1, h, w] if self.layout == "NCHW" else [self.batch, h, w, 1]

    def feed(self, images_nhwc_uint8: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) contract images -> exactly what this graph takes (calibration, checks, tests)."""
        x = torch.as_tensor(np.asarray(images_nhwc_uint8))
        if not self.baked:
            x = minmax_normalize(x)
        if self.layout == "NCHW":
            x = x.permute(0, 3, 1, 2)
        return np.ascontiguousarray(x.numpy())

    def example(self) -> torch.Tensor:
        """A deterministic, non-constant example input (tracing needs real min/max spreads, not zeros)."""
        g = torch.Generator().manual_seed(0)
        h, w = self.hw
        x = torch.randint(0, 256, (1, h, w, 3), generator=g, dtype=torch.uint8).numpy()
        return torch.from_numpy(self.feed(x))


def _to_nchw(x: torch.Tensor, layout: str) -> torch.Tensor:
    return x.permute(0, 3, 1, 2) if layout == "NHWC" else x


def _from_nchw(y: torch.Tensor, layout: str) -> torch.Tensor:
    return y.permute(0, 2, 3, 1) if layout == "NHWC" else y


class RawEGEUNet(nn.Module):
    """The bare network: float input already normalised per the contract (0..255) -> probability.

    ``out_layout`` defaults to the input's; Core ML image inputs arrive as NCHW inside the graph while the app
    sees an HWC image, so that exporter asks for an NHWC output of an NCHW graph input."""

    def __init__(self, deploy: DeployEGEUNet, layout: str = "NCHW", out_layout: str | None = None) -> None:
        super().__init__()
        self.deploy, self.layout, self.out_layout = deploy.eval(), layout, out_layout or layout
        _check_layout(self.layout)
        _check_layout(self.out_layout)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return _from_nchw(self.deploy(_to_nchw(image, self.layout)), self.out_layout)


class BakedEGEUNet(RawEGEUNet):
    """uint8 RGB image (contract step 2 output) -> float -> per-image min-max -> network -> probability."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # min-max over all pixels and channels is layout-independent, so normalise before any transpose
        return super().forward(minmax_normalize(image))


class NamedOutput(nn.Module):
    """Returns ``{OUTPUT_NAME: y}``: litert-torch names signature outputs after dict keys (else ``output_0``)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {OUTPUT_NAME: self.module(image)}


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


def deploy_module(net: EGEUNet, spec: IOSpec, graph_layout: str | None = None) -> nn.Module:
    """The module to convert for ``spec``: a copy of ``net`` with its GHPA gates folded, wrapped for the I/O.

    The copy leaves the caller's network unfolded (folding mutates the GHPA blocks). ``graph_layout`` overrides the
    layout the graph's input tensor has (Core ML image inputs); the output keeps ``spec.layout``."""
    deploy = DeployEGEUNet(copy.deepcopy(net).eval(), input_hw=spec.hw)
    wrapper = BakedEGEUNet if spec.baked else RawEGEUNet
    return wrapper(deploy, graph_layout or spec.layout, spec.layout).eval()
