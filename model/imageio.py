"""Decoding images and masks of any common kind into the contract's 8-bit RGB / binary form.

Real data arrives as RGB, RGBA, grayscale, palette and 16-bit files, some with EXIF orientation, some truncated.
Transparency is composited on neutral grey (128, 128, 128), and said once. Every failure becomes an
:class:`ImageReadError` that names the file, never a silent half-decoded image.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .contract import binarize_mask_pixels

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """An image or mask file that cannot be used (undecodable, or a mask of another size than its image); ``path``
    names it."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path}: {reason}")


def _open(path: Path | str) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()  # force the full decode here so truncated files fail now, not later
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image (unrecognised format or corrupt header)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(path, f"unreadable or truncated image ({e})") from None
    try:
        return ImageOps.exif_transpose(im)
    except Exception as e:  # malformed EXIF must not pass silently either
        raise ImageReadError(path, f"bad EXIF orientation data ({e})") from None


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer / float grayscale -> 8-bit by scaling, not clipping (PIL's convert clips)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray(np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8), mode="L")
    return im


ALPHA_BACKGROUND = (128, 128, 128)
"""Transparent pixels are composited on this neutral grey (the Android app uses the same). Why not black, PIL's
``convert("RGB")`` default: a transparent border became a dark ring, and dark, low-contrast regions are what this
model reads as lesion."""

_alpha_noted = False


def note_alpha(path: Path | str) -> None:
    """Say once per process, on stderr, what is done with transparency (the first file that has it is named)."""
    global _alpha_noted
    if _alpha_noted:
        return
    _alpha_noted = True
    print(f"note: {Path(path).name} has transparent pixels: they are composited on neutral grey "
          f"{ALPHA_BACKGROUND} before the model sees them (said once; other files with transparency get the same)",
          file=sys.stderr, flush=True)


def composite_alpha(im: Image.Image) -> Image.Image:
    """An image with an alpha channel (RGBA, LA, PA or a palette with a transparent index) -> RGBA over the opaque
    :data:`ALPHA_BACKGROUND` (PIL's ``alpha_composite``: out = a * colour + (1 - a) * grey, rounded)."""
    im = im.convert("RGBA")
    background = Image.new("RGBA", im.size, (*ALPHA_BACKGROUND, 255))
    return Image.alpha_composite(background, im)


def has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)


def read_rgb(path: Path | str) -> Image.Image:
    """Any supported image file -> an RGB PIL image, EXIF-oriented. Transparent and half-transparent pixels are
    composited on neutral grey (:data:`ALPHA_BACKGROUND`), and the first such file is named once on stderr
    (:func:`note_alpha`); a file whose alpha is fully opaque everywhere is read as it is, silently."""
    im = _to_8bit(_open(path))
    if has_alpha(im):
        im = im.convert("RGBA")
        if im.getchannel("A").getextrema()[0] < 255:
            note_alpha(path)
        im = composite_alpha(im)
    if im.mode == "RGB":
        return im
    try:
        return im.convert("RGB")
    except Exception as e:
        raise ImageReadError(path, f"cannot convert mode {im.mode} to RGB ({e})") from None


def read_mask(path: Path | str) -> np.ndarray:
    """Any supported mask file -> uint8 (H, W) in {0, 1}; lesion where the brightest channel is above 127.

    Taking the brightest channel (not luminance) keeps coloured masks (a red lesion on black, a palette PNG)
    right: pure red has a luminance of 76 and would otherwise vanish.
    """
    im = _to_8bit(_open(path))
    if im.mode == "L":
        return binarize_mask_pixels(np.asarray(im))
    if im.mode == "1":
        return np.asarray(im, dtype=np.uint8)
    return binarize_mask_pixels(np.asarray(im.convert("RGB")).max(axis=2))


OVERLAY_RGB = (255, 64, 32)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45, color=OVERLAY_RGB) -> np.ndarray:
    """RGB uint8 image with the mask tinted and its outline drawn (the same look the Android demo uses)."""
    out = image.astype(np.float32)
    m = mask.astype(bool)
    out[m] = (1 - alpha) * out[m] + alpha * np.asarray(color, np.float32)
    edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
    out[edge] = color
    return out.astype(np.uint8)
