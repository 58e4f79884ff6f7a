"""The preprocessing contract: the one definition of what the network is fed and how its output is read.

Training, evaluation, calibration, every exporter (which bakes it into the graph), the runtimes and the Android app
(through golden vectors written from this module) all use these functions; nothing else may re-implement them.

Why per-image min-max: the official pipeline z-scores each image with dataset statistics and then stretches it to
[0, 255] with its own min and max. A z-score is an increasing affine map, and min-max normalisation is invariant
under any increasing affine map, so the dataset statistics cancel: the effective input is the per-image min-max of
the RGB pixels (``tests/test_contract.py`` proves it numerically on real images). Defining it without the
statistics makes the contract dataset-free and lets an app implement it with two reductions and one multiply.

Order of operations (deployment-friendly, and the same in training):
1. decode, apply EXIF orientation, convert to 8-bit RGB;
2. resize to 256 x 256 with PIL's bilinear filter (antialiased when shrinking) -> uint8 H x W x 3, the model input
   an app hands to an exported artifact;
3. inside the model (or in Python for the bare network): x = (x - min) * 255 / max(max - min, 1), min and max over
   all pixels and channels of the image; a constant image becomes all zeros instead of the official NaN;
4. output: sigmoid probability; lesion where probability >= 0.5.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

CONTRACT_VERSION = 1


@dataclass(frozen=True)
class PreprocessContract:
    """Everything an artifact or an app must agree on, in one serialisable record."""

    version: int = CONTRACT_VERSION
    input_height: int = 256
    input_width: int = 256
    channel_order: str = "RGB"
    input_dtype: str = "uint8"
    resize: str = "PIL bilinear (triangle filter, antialiased when shrinking), uint8 output"
    normalization: str = "per_image_minmax"
    normalization_formula: str = "x = (x - min(x)) * 255 / max(max(x) - min(x), 1), over all pixels and channels"
    value_range: tuple[float, float] = (0.0, 255.0)
    output: str = "sigmoid probability, 1 channel, input resolution"
    threshold: float = 0.5
    threshold_rule: str = "lesion if probability >= threshold"
    mask_binarize_above: int = 127

    def to_dict(self) -> dict:
        d = asdict(self)
        d["value_range"] = list(self.value_range)
        return d

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON: two parts agree on preprocessing iff their fingerprints are equal."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


CONTRACT = PreprocessContract()
INPUT_HW = (CONTRACT.input_height, CONTRACT.input_width)


def resize_rgb(image: Image.Image, hw: tuple[int, int] = INPUT_HW) -> np.ndarray:
    """Step 2: an RGB PIL image -> uint8 array (H, W, 3) at the model's input size."""
    if image.mode != "RGB":
        raise ValueError(f"resize_rgb expects an RGB image, got mode {image.mode}; decode with model.imageio first")
    h, w = hw
    if image.size != (w, h):
        image = image.resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def resize_mask(mask: np.ndarray, hw: tuple[int, int] = INPUT_HW) -> np.ndarray:
    """A binary (0/1) mask at any size -> binary uint8 mask at ``hw``, resampled like the image then re-thresholded."""
    h, w = hw
    if mask.shape == (h, w):
        return mask.astype(np.uint8)
    im = Image.fromarray((mask > 0).astype(np.uint8) * 255)
    return (np.asarray(im.resize((w, h), Image.Resampling.BILINEAR)) > CONTRACT.mask_binarize_above).astype(np.uint8)


def minmax_normalize(x: torch.Tensor) -> torch.Tensor:
    """Step 3 on a float or uint8 batch (N, C, H, W) or (N, H, W, C): per-image stretch to [0, 255], float32."""
    x = x.float()
    flat = x.reshape(x.shape[0], -1)
    lo = flat.amin(dim=1).view(-1, *([1] * (x.dim() - 1)))
    hi = flat.amax(dim=1).view(-1, *([1] * (x.dim() - 1)))
    return (x - lo) * (255.0 / torch.clamp(hi - lo, min=1.0))


def to_model_input(images_nhwc_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) contract images -> normalised float NCHW tensor for the bare network."""
    x = images_nhwc_uint8
    if not isinstance(x, torch.Tensor):
        x = np.asarray(x)
        if not x.flags.writeable:  # e.g. np.asarray of a PIL image: torch must not alias read-only memory
            x = x.copy()
        x = torch.from_numpy(x)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 images shaped (N, H, W, 3), got {tuple(x.shape)}")
    return minmax_normalize(x.permute(0, 3, 1, 2).contiguous())


def binarize(prob: np.ndarray | torch.Tensor, threshold: float = CONTRACT.threshold):
    """Step 4: probability -> {0, 1} uint8 mask (``>=`` as the official evaluation does)."""
    if isinstance(prob, torch.Tensor):
        return (prob >= threshold).to(torch.uint8)
    return (np.asarray(prob) >= threshold).astype(np.uint8)


def binarize_mask_pixels(mask_gray: np.ndarray) -> np.ndarray:
    """Ground-truth masks (JPEG in ISIC 2017, so not strictly 0/255) -> {0, 1}: lesion where value > 127."""
    return (mask_gray > CONTRACT.mask_binarize_above).astype(np.uint8)
