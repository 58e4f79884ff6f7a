"""The paper's figures computed from our own code: parameter count and MACs, plus the I/O contract."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .checkpoint import load_model
from .contract import CONTRACT, INPUT_HW
from .ege_unet import EGEUNet


def count_macs(net: EGEUNet, hw: tuple[int, int] = INPUT_HW) -> int:
    """Multiply-accumulates of every convolution for one 3 x H x W image (the paper's "GFLOPs" are these MACs).

    Counted with forward hooks on the real modules (so the GHPA gate convolutions are included), which is how
    thop/ptflops count convolutions; normalisation, activations and interpolation are not counted.
    """
    total = 0

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kernel = 1
        for k in module.kernel_size:
            kernel *= k
        total += output.numel() * (module.in_channels // module.groups) * kernel

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    try:
        with torch.no_grad():
            net.eval().forward_logits(torch.zeros(1, net.cfg.input_channels, *hw))
    finally:
        for h in handles:
            h.remove()
    return total


def model_info(weights: Path | str | None = None) -> dict:
    net, ckpt = load_model(weights)
    return {
        "model": "egeunet" if net.cfg.is_paper else "egeunet_int",
        "params": sum(p.numel() for p in net.parameters()),
        "macs": count_macs(net),
        "input_hw": list(INPUT_HW),
        "weights": ckpt["path"],
        "weights_sha256": ckpt["sha256"],
        "model_cfg": {**net.cfg.__dict__, "c_list": list(net.cfg.c_list)},
        "metrics": ckpt.get("metrics", {}),
        "contract": CONTRACT.to_dict(),
        "contract_sha256": CONTRACT.fingerprint(),
        "io": {"input": {"name": "image", "dtype": "float32", "shape": [1, 3, *INPUT_HW], "layout": "NCHW",
                         "range": "0..255 after per-image min-max (bare network)"},
               "output": {"name": "prob", "dtype": "float32", "shape": [1, 1, *INPUT_HW]}},
    }
