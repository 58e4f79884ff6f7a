"""Batched training augmentation on in-memory uint8 tensors (the paper's flips and random rotation).

The official pipeline augments one sample at a time in Python and draws a single rotation angle for the whole run
(``myRandomRotation`` samples its angle in ``__init__``). Here each sample gets its own flips and its own angle,
and the whole batch is warped with one ``grid_sample`` call, which is what makes the data side free on a CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .contract import minmax_normalize


def augment_batch(
    images: torch.Tensor, masks: torch.Tensor, gen: torch.Generator, p_flip: float = 0.5, p_rotate: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, H, W, 3) and {0,1} masks (N, H, W) -> normalised float NCHW images, float N1HW masks.

    Normalisation happens before the geometric transforms, as in the official code, so the zero fill of a rotation
    is the image's darkest value. Rotation uses nearest-neighbour sampling, torchvision's default there.
    """
    n = images.shape[0]
    x = minmax_normalize(images).permute(0, 3, 1, 2)  # on NHWC: no layout copy for the per-image min/max
    y = masks.unsqueeze(1).float()
    draws = torch.rand(n, 4, generator=gen)
    hflip, vflip, rotate = draws[:, 0] < p_flip, draws[:, 1] < p_flip, draws[:, 2] < p_rotate
    angle = torch.where(rotate, draws[:, 3] * 2 * math.pi, torch.zeros(n))
    cos, sin = torch.cos(angle), torch.sin(angle)
    sx = torch.where(hflip, -1.0, 1.0)
    sy = torch.where(vflip, -1.0, 1.0)
    # Output -> input sampling matrix: flips then rotation, in normalised coordinates (square images).
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sx, -sin * sy
    theta[:, 1, 0], theta[:, 1, 1] = sin * sx, cos * sy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    both = torch.cat([x, y], dim=1)
    out = F.grid_sample(both, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out[:, :3].contiguous(memory_format=torch.channels_last), out[:, 3:]
