"""``egeunet predict``: binary masks at each input's own resolution, plus overlays to look at."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .checkpoint import atomic_write_bytes, load_model
from .contract import binarize, resize_rgb
from .ege_unet import DeployEGEUNet
from .evaluate import predict_probs, upsample_prob
from .imageio import IMAGE_EXTENSIONS, OVERLAY_RGB, ImageReadError, overlay, read_rgb  # noqa: F401  (re-exported)
from .layers import use_fused_norms


def _png_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def collect_images(inputs: list[Path]) -> list[Path]:
    """The image files named or inside the given folders; refuses two that would write the same output names."""
    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such image or folder: {p}")
    if not files:
        raise ValueError(f"no images found in {', '.join(map(str, inputs))}")
    by_stem: dict[str, list[Path]] = {}
    for f in files:
        by_stem.setdefault(f.stem, []).append(f)
    clashes = [paths for paths in by_stem.values() if len(paths) > 1]
    if clashes:  # one would silently overwrite the other's <stem>_mask.png
        shown = "; ".join(" and ".join(map(str, paths)) for paths in clashes[:5])
        raise ValueError(f"{len(clashes)} name(s) would write the same <stem>_mask.png: {shown}; predict them into "
                         "separate --out folders")
    return files


@dataclass
class Prediction:
    written: list[Path]  # the mask files, one per image predicted
    skipped: list[ImageReadError]  # unreadable images passed over with ``skip_bad``


def predict(weights: Path | str | None, inputs: list[Path], out_dir: Path | str, progress: bool = True,
            skip_bad: bool = False) -> Prediction:
    """Write ``<stem>_mask.png`` (0/255 at the input's size) and ``<stem>_overlay.png`` for every image.

    An unreadable image stops the run with an error naming it and how many masks were already written (each of
    those is complete: files are written atomically), or with ``skip_bad`` is passed over and listed.
    """
    files = collect_images(inputs)
    net = DeployEGEUNet(use_fused_norms(load_model(weights)[0]))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = Prediction([], [])
    iterator = files
    if progress:
        from tqdm import tqdm

        iterator = tqdm(files, desc="predict", unit="img", leave=False)
    for f in iterator:
        try:
            image = read_rgb(f)
        except ImageReadError as e:
            if skip_bad:
                result.skipped.append(e)
                continue
            raise ImageReadError(f, f"{e.reason}; {len(result.written)} of {len(files)} masks were written to "
                                    f"{out_dir} before it; --skip-bad passes over unreadable images") from None
        prob = predict_probs(net, resize_rgb(image)[None])[0]
        mask = binarize(upsample_prob(prob, (image.height, image.width)))
        atomic_write_bytes(out_dir / f"{f.stem}_mask.png", _png_bytes(mask * 255))
        atomic_write_bytes(out_dir / f"{f.stem}_overlay.png", _png_bytes(overlay(np.asarray(image), mask)))
        result.written.append(out_dir / f"{f.stem}_mask.png")
    return result
