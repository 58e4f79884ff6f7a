"""Segmentation metrics, defined once for training, evaluation and the drift report.

Pooled metrics follow the official EGE-UNet evaluation exactly: one confusion matrix over every pixel of the split
(prediction ``prob >= 0.5``, ground truth binary), then mIoU = TP / (TP + FP + FN) and DSC = 2TP / (2TP + FP + FN).
The paper's "mIoU" is therefore the lesion-class IoU of the pooled confusion matrix, not a per-image mean.
Per-image metrics are reported beside them because they weigh small lesions fairly; an image where both the
prediction and the ground truth are empty scores 1 (perfect agreement), as is customary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Lesion area as a fraction of the image, the strata of every by-size breakdown (evaluation and drift). On ISIC 2017
# test these bins hold 222/181/186 images.
SIZE_BINS = (("small", 0.0, 0.10), ("medium", 0.10, 0.30), ("large", 0.30, 1.0 + 1e-9))


@dataclass
class Confusion:
    """Pixel confusion counts (int64: a split of 600 images at 256x256 is 39M pixels)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        pred, gt = pred.astype(bool), gt.astype(bool)
        tp = int(np.count_nonzero(pred & gt))
        npred, ngt = int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
        self.tp += tp
        self.fp += npred - tp
        self.fn += ngt - tp
        self.tn += pred.size - npred - ngt + tp

    def __iadd__(self, other: Confusion) -> Confusion:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.tn += other.tn
        return self

    def summary(self) -> dict:
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        return {
            "miou": _ratio(tp, tp + fp + fn),
            "dsc": _ratio(2 * tp, 2 * tp + fp + fn),
            "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
            "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp),
            "confusion": asdict(self),
        }


def _ratio(num: int, den: int) -> float:
    return float(num) / float(den) if den else 0.0


def per_image_scores(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and Dice of each image in a batch of binary masks (N, H, W); empty vs empty scores 1."""
    p = pred.reshape(pred.shape[0], -1).astype(bool)
    g = gt.reshape(gt.shape[0], -1).astype(bool)
    tp = np.count_nonzero(p & g, axis=1)
    dsc, iou = dsc_iou_from_counts(tp, np.count_nonzero(p, axis=1) - tp, np.count_nonzero(g, axis=1) - tp)
    return iou, dsc


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks of any shape, pooled over all pixels (mask agreement between two models)."""
    a, b = a.astype(bool), b.astype(bool)
    s = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if s == 0 else 2.0 * int(np.count_nonzero(a & b)) / s


@dataclass
class SegmentationScores:
    """Running pooled confusion plus per-image scores over a dataset."""

    def __post_init__(self) -> None:
        self.confusion = Confusion()
        self.iou: list[float] = []
        self.dsc: list[float] = []

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add a batch of binary predictions and ground truths, (N, H, W) or a list of (H, W) of varying size."""
        for p, g in zip(pred, gt, strict=True):
            image = Confusion()
            image.add(p, g)
            self.add_counts(image.tp, image.fp, image.fn, p.size)

    def add_counts(self, tp: int, fp: int, fn: int, pixels: int) -> None:
        """Add one image whose TP/FP/FN are already counted (evaluate's threshold sweep counts them once)."""
        self.confusion += Confusion(tp, fp, fn, pixels - tp - fp - fn)
        dsc, iou = dsc_iou_from_counts(tp, fp, fn)
        self.iou.append(float(iou))
        self.dsc.append(float(dsc))

    def result(self) -> dict:
        return {
            "pooled": self.confusion.summary(),
            "per_image": {"miou": float(np.mean(self.iou)) if self.iou else 0.0,
                          "dsc": float(np.mean(self.dsc)) if self.dsc else 0.0},
            "n_images": len(self.iou),
        }


def area_fractions(masks) -> np.ndarray:
    """Share of each binary mask's pixels that are lesion; masks (N, H, W) or a list of (H, W) of varying size."""
    return np.array([float(np.count_nonzero(m)) / max(m.size, 1) for m in masks], dtype=np.float64)


def size_strata(masks) -> list[tuple[str, tuple[float, float], np.ndarray]]:
    """(name, (lo, hi), image indices) for small / medium / large lesions by ground-truth area fraction."""
    return strata_of_fractions(area_fractions(masks))


def strata_of_fractions(frac: np.ndarray) -> list[tuple[str, tuple[float, float], np.ndarray]]:
    """:func:`size_strata` from lesion area fractions already measured."""
    return [(name, (lo, min(hi, 1.0)), np.flatnonzero((frac >= lo) & (frac < hi))) for name, lo, hi in SIZE_BINS]


def threshold_counts(prob: np.ndarray, gt: np.ndarray, thresholds) -> np.ndarray:
    """(T, 3) int64: TP, FP and FN of one probability map against its ground truth at each threshold (prob >= t).

    Why per image and per threshold: pooled, per-image and by-size figures at any threshold are sums of these rows,
    so an evaluation scans the pixels once per threshold and never holds more than one image's probabilities.
    """
    g = gt.astype(bool).reshape(-1)
    p = prob.reshape(-1)
    n_gt = np.count_nonzero(g)
    out = np.empty((len(thresholds), 3), dtype=np.int64)
    for k, t in enumerate(thresholds):
        pred = p >= t
        tp = np.count_nonzero(pred & g)
        out[k] = tp, np.count_nonzero(pred) - tp, n_gt - tp
    return out


def dsc_iou_from_counts(tp, fp, fn) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU from TP/FP/FN (scalars or arrays); nothing predicted and nothing to find scores 1."""
    tp, fp, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn))
    empty = (tp + fp + fn) == 0
    dsc = np.where(empty, 1.0, 2 * tp / np.maximum(2 * tp + fp + fn, 1))
    iou = np.where(empty, 1.0, tp / np.maximum(tp + fp + fn, 1))
    return dsc, iou
