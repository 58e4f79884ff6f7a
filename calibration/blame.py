"""The int8 blame ranking: quantize one block at a time, rank the blocks by the Dice they cost.

Why: a mixed-precision recipe has to say which blocks stay float, and that choice must come from measurement,
not taste. For each block of the rewritten network (``export.rewrite.BLOCKS``) an artifact is built with only that
block quantized (the recipe's op set, the same calibration ranges), run on images with ground truth, and compared
with the float artifact it was quantized from: the pooled Dice it loses (``dsc_delta``, negative = worse) and the
Dice between its masks and the float masks (``agreement``). Blocks are ranked by ``dsc_delta`` (worst first, ties
broken by agreement).

Where it is stored (read it with ``runtimes.drift.read_blame``):

- inside the int8 artifact's metadata: key ``int8_blame`` (list of ``{"block", "dsc_delta", "agreement", "dsc",
  "quantized_in_artifact"}``, worst first) and ``int8_blame_info`` (images, reference, recipe);
- beside the artifact: ``<artifact>.blame.json`` (the same two entries), for tools that do not parse artifacts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from egeunet_deploy.model.checkpoint import atomic_write_bytes

DEFAULT_FLOAT_BLOCKS = ("preprocess", "encoder1", "encoder2", "decoder4", "decoder5", "GAB2", "GAB1", "final")
"""Blocks both default int8 recipes keep float, and why (measured on 120 isic2017 val images, interim weights):

- ``preprocess`` and ``encoder1`` head the blame ranking of the all-ops LiteRT recipe: quantized alone they cost
  0.029 and 0.055 of mask agreement (every other block 0.003-0.014): the stretched 0..255 input and the first
  full-resolution 3->8 convolution with its GroupNorm statistics are where 8 bits lose the most.
- the other full- and half-resolution blocks (``encoder2``, ``decoder4``, ``decoder5``, ``GAB2``, ``GAB1``,
  ``final``) carry 1-20 channels at 64x64 to 256x256: int8 kernels gain nothing on so few channels (XNNPACK and
  MLAS pad them to 16-32 lanes) while the quantize/dequantize around them cost full-resolution passes. Keeping
  them float took ONNX Runtime int8 from 1.48x to 1.03x the fp32 latency and LiteRT int8 from ~1.3x to ~1.0x,
  at equal or better agreement (0.993 ORT, 0.988 LiteRT).
"""

FLOAT_BLOCKS_CHOICE = (
    "the default recipes keep preprocess, encoder1, encoder2, decoder4, decoder5, GAB2, GAB1 and final float. "
    "That choice was made once, on 120 ISIC 2017 validation images with interim weights: preprocess and encoder1 "
    "because they cost the most mask agreement when quantized alone in the all-ops LiteRT recipe; the other six "
    "because int8 kernels gain no speed on their 1-20 channels at 64x64 to 256x256. The ranking shown here is "
    "re-measured on other images with the shipped weights, so it can disagree with that choice.")
"""How :data:`DEFAULT_FLOAT_BLOCKS` were chosen, in one paragraph (the drift report prints it beside the ranking)."""

BLAME_KEY = "int8_blame"
BLAME_INFO_KEY = "int8_blame_info"
SIDE_SUFFIX = ".blame.json"


@dataclass
class BlameSet:
    """Images (uint8 NHWC contract images) with their ground-truth masks (N, H, W) {0,1}, and where they came from."""

    images: np.ndarray
    masks: np.ndarray
    source: str
    blocks: tuple[str, ...] | None = None  # None: every block of model.ege_unet.BLOCKS

    def blocks_for(self, baked: bool) -> list[str]:
        from egeunet_deploy.model.ege_unet import BLOCKS

        return [b for b in (self.blocks or BLOCKS) if baked or b != "preprocess"]


def pooled_dice(probs: np.ndarray, masks: np.ndarray, threshold: float = 0.5) -> float:
    """Pooled Dice over all pixels of all images (the drift report's definition)."""
    from egeunet_deploy.model.metrics import Confusion

    c = Confusion()
    c.add(probs >= threshold, masks > 0)
    return float(c.summary()["dsc"])


def mask_agreement(a: np.ndarray, b: np.ndarray, threshold: float = 0.5) -> float:
    from egeunet_deploy.model.metrics import dice

    return float(dice(a >= threshold, b >= threshold))


def rank_blocks(blocks: Iterable[str], build_only: Callable[[str], object], run: Callable[[object], np.ndarray],
                float_probs: np.ndarray, data: BlameSet, quantized: Iterable[str] = (),
                progress: Callable[[str], None] | None = None) -> list[dict]:
    """The ranking. ``build_only(block)`` returns an artifact with only ``block`` quantized (bytes or a model),
    ``run(artifact)`` its probabilities (N, H, W) on ``data.images``; ``float_probs`` are the float artifact's."""
    base = pooled_dice(float_probs, data.masks)
    quantized = set(quantized)
    rows = []
    for block in blocks:
        if progress:
            progress(block)
        probs = run(build_only(block))
        dsc = pooled_dice(probs, data.masks)
        rows.append({"block": block, "dsc_delta": round(dsc - base, 5),
                     "agreement": round(mask_agreement(probs, float_probs), 5), "dsc": round(dsc, 5),
                     "quantized_in_artifact": block in quantized})
    return sorted(rows, key=lambda r: (r["dsc_delta"], r["agreement"]))


def blame_record(rows: list[dict], data: BlameSet, recipe: dict, float_dsc: float, **extra) -> dict:
    """The two metadata entries an int8 artifact carries."""
    return {BLAME_KEY: rows,
            BLAME_INFO_KEY: {"images": int(len(data.images)), "source": data.source, "float_dsc": round(float_dsc, 5),
                             **extra,
                             "reference": "the float artifact this one was quantized from (same graph, same I/O)",
                             "recipe": recipe.get("name"),
                             "method": "one block quantized at a time with the recipe's op set and the artifact's "
                                       "calibration ranges; rows sorted worst dsc_delta first"}}


def write_sidecar(artifact: Path | str, record: dict) -> Path:
    path = Path(str(artifact) + SIDE_SUFFIX)
    atomic_write_bytes(path, (json.dumps(record, indent=2) + "\n").encode())
    return path



def default_blame_set(limit: int | None = None) -> BlameSet:
    """The bundled sample's 32 ISIC 2017 test pairs: small enough for export time, with ground truth."""
    from egeunet_deploy.model.bundled import SAMPLE_DATA
    from egeunet_deploy.model.data import load_split

    ds = load_split(SAMPLE_DATA, "test", limit=limit, progress=False)
    return BlameSet(ds.images, ds.masks, f"bundled sample test ({len(ds.images)} ISIC 2017 test pairs)")


def load_blame_set(data: Path | str, split: str | None = "val", limit: int | None = None) -> BlameSet:
    from egeunet_deploy.model.data import load_split

    ds = load_split(data, split, limit=limit, progress=False)
    return BlameSet(ds.images, ds.masks, f"{data} [{split}] ({len(ds.images)} pairs)")
