"""What every picture of the toolkit shares: the PNG writer (atomic) and the mask colours of overlays.

One place, so the training curves, the evaluation report and the drift report look alike and a half-written PNG
never replaces a good one. matplotlib runs headless (Agg): reports are made on servers and in CI.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .checkpoint import atomic_write_bytes  # noqa: E402

GT_RGB, PRED_RGB = (40, 200, 80), (255, 64, 32)
ONLY_FIRST_RGB, ONLY_SECOND_RGB = (255, 40, 40), (60, 120, 255)


def save_png(fig, path: Path, dpi: int = 110) -> str:
    """Write a figure as PNG atomically, close it, and return the file name (for HTML beside it)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path).name


def difference_map(image: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The image darkened, red where only ``first`` marks lesion, blue where only ``second`` does."""
    a, b = first.astype(bool), second.astype(bool)
    out = (image * 0.35).astype(np.uint8)
    out[a & ~b] = ONLY_FIRST_RGB
    out[b & ~a] = ONLY_SECOND_RGB
    return out


def image_grid(rows: list[tuple[np.ndarray, ...]], subtitles: list[tuple[str, ...]], titles: tuple[str, ...]):
    """A figure of image panels, one row per image; column titles on the first row, a subtitle under each panel."""
    fig, axes = plt.subplots(len(rows), len(titles), figsize=(2.75 * len(titles), 2.7 * len(rows)), squeeze=False)
    for r, (panels, subs) in enumerate(zip(rows, subtitles, strict=True)):
        for c, (panel, sub) in enumerate(zip(panels, subs, strict=True)):
            ax = axes[r][c]
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{titles[c]}\n{sub}" if r == 0 else sub, fontsize=8)
    fig.tight_layout()
    return fig
