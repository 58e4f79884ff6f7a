"""``egeunet evaluate``: the paper's metrics of a weights file on a dataset split, and where its errors are.

Besides the headline figures (pooled, as the paper, and per-image means), every evaluation says where the errors
come from, because a single DSC cannot: the figures by lesion size (small / medium / large, ``metrics.SIZE_BINS``)
with the missed and the false lesion pixels, and the pooled DSC over a sweep of thresholds around the contract's.
Why the sweep: if another threshold scores clearly better on a user's data, the model's probabilities are shifted
on that data (on ISIC 2017 ``test`` the shipped weights miss 2.5x more lesion pixels than they invent), which is
worth knowing before shipping; the contract's threshold stays the one every artifact uses.
``--report DIR`` adds the per-image table (CSV) and pictures (evaluation_report.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .checkpoint import load_model
from .contract import CONTRACT, to_model_input
from .data import LoadedSet, load_split
from .ege_unet import DeployEGEUNet, EGEUNet
from .layers import use_fused_norms
from .metrics import SegmentationScores, dsc_iou_from_counts, strata_of_fractions, threshold_counts

# Thresholds of the sweep: 0.1 ... 0.9, always including the contract's.
SWEEP_THRESHOLDS = tuple(sorted({round(0.1 * k, 1) for k in range(1, 10)} | {CONTRACT.threshold}))


@torch.no_grad()
def predict_probs(net: EGEUNet | DeployEGEUNet, images_nhwc: np.ndarray, batch_size: int = 16,
                  progress: bool = False, desc: str = "predict") -> np.ndarray:
    """Contract uint8 images (N, H, W, 3) -> probabilities (N, H, W) float32 from the PyTorch model.

    Pass a :class:`DeployEGEUNet` (gates folded, 1.8x faster here) when the weights will not change meanwhile;
    a plain :class:`EGEUNet` is never modified, so the trainer can call this between steps.
    """
    net.eval()
    forward = net if isinstance(net, DeployEGEUNet) else (lambda x: torch.sigmoid(net.forward_logits(x)[1]))
    out = np.empty(images_nhwc.shape[:3], dtype=np.float32)
    steps = range(0, len(images_nhwc), batch_size)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc=desc, unit="batch", leave=False)
    for i in steps:
        x = to_model_input(images_nhwc[i : i + batch_size]).contiguous(memory_format=torch.channels_last)
        out[i : i + batch_size] = forward(x)[:, 0].numpy()
    return out


def upsample_prob(prob: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A model-resolution probability map -> (H, W) at an image's own size (bilinear on the probabilities)."""
    if prob.shape == hw:
        return prob
    return np.asarray(Image.fromarray(prob.astype(np.float32), mode="F").resize((hw[1], hw[0]),
                                                                              Image.Resampling.BILINEAR))


def _scoring_pairs(probs: np.ndarray, data: LoadedSet, native: bool):
    """(probability map, ground truth) per image, at model resolution or upsampled to each image's own size.

    A generator: at native resolution only one upsampled map is alive at a time (full-size ISIC images are 12 MP).
    """
    if not native:
        yield from zip(probs, data.masks, strict=True)
        return
    if data.native_masks is None:
        raise ValueError("native scoring needs the set loaded with keep_native=True")
    for p, m in zip(probs, data.native_masks, strict=True):
        yield upsample_prob(p, m.shape), m


def score(probs: np.ndarray, data: LoadedSet, native: bool = False) -> tuple[dict, dict]:
    """Metrics of probabilities against a loaded set, at model resolution or at each image's native size.

    Returns the result (headline metrics plus ``by_lesion_size`` and ``threshold_sweep``) and the per-image table
    (columns of equal length, in the set's order) that ``--report`` writes as CSV.
    """
    scores = SegmentationScores()
    counts = np.empty((len(probs), len(SWEEP_THRESHOLDS), 3), dtype=np.int64)
    pixels = np.empty(len(probs), dtype=np.int64)
    contract = SWEEP_THRESHOLDS.index(CONTRACT.threshold)  # threshold_counts applies binarize's rule, p >= t
    for i, (p, m) in enumerate(_scoring_pairs(probs, data, native)):
        counts[i] = threshold_counts(p, m, SWEEP_THRESHOLDS)
        pixels[i] = m.size
        scores.add_counts(*(int(v) for v in counts[i, contract]), int(m.size))
    at_contract = counts[:, contract]
    tp, fp, fn = at_contract.T
    table = {"name": list(data.names), "lesion_fraction": (tp + fn) / pixels, "predicted_fraction": (tp + fp) / pixels,
             "iou": np.asarray(scores.iou), "dsc": np.asarray(scores.dsc), "false_pixels": fp, "missed_pixels": fn}
    result = {**scores.result(), "resolution": "native" if native else "model",
              "by_lesion_size": by_lesion_size(at_contract, table["lesion_fraction"], table["dsc"]),
              "threshold_sweep": threshold_sweep(counts)}
    return result, table


def by_lesion_size(counts: np.ndarray, lesion_fraction: np.ndarray, per_image_dsc: np.ndarray) -> list[dict]:
    """Pooled and per-image figures, and missed / false lesion pixels, per ground-truth lesion-size stratum.

    ``counts`` is (N, 3) TP, FP, FN per image at the contract's threshold. ``share_of_wrong_pixels`` is the stratum's
    share of all the split's wrong pixels (missed + false), so the strata's shares add up to 1.
    """
    wrong = max(int(counts[:, 1:].sum()), 1)
    rows = []
    for name, (lo, hi), idx in strata_of_fractions(lesion_fraction):
        tp, fp, fn = (int(v) for v in counts[idx].sum(axis=0))
        dsc, iou = dsc_iou_from_counts(tp, fp, fn)
        rows.append({"name": name, "area_fraction": [lo, hi], "n": int(idx.size),
                     "pooled": {"dsc": float(dsc), "miou": float(iou)} if idx.size else None,
                     "per_image_dsc": float(per_image_dsc[idx].mean()) if idx.size else None,
                     "found_pixels": tp, "missed_pixels": fn, "false_pixels": fp,
                     "share_of_wrong_pixels": (fn + fp) / wrong})
    return rows


def restratified_dsc(rows: list[dict], mix: dict[str, int]) -> float | None:
    """The pooled DSC that :func:`by_lesion_size` ``rows`` would give with ``mix[name]`` images in each stratum.

    Each stratum's counts are scaled from its own images to ``mix``'s number (its per-image average kept). Why: two
    splits can differ in score because one holds more of the sizes the model finds hard, or because every size is
    harder in it; scoring one split's strata at the other's size mix tells which. None when a stratum that ``mix``
    asks for has no images here.
    """
    tp = fp = fn = 0.0
    for r in rows:
        want = mix.get(r["name"], 0)
        if want and not r["n"]:
            return None
        if want:
            scale = want / r["n"]
            tp, fp, fn = tp + scale * r["found_pixels"], fp + scale * r["false_pixels"], fn + scale * r["missed_pixels"]
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def threshold_sweep(counts: np.ndarray) -> dict:
    """Pooled DSC and mIoU at each of ``SWEEP_THRESHOLDS`` from (N, T, 3) per-image counts."""
    tp, fp, fn = counts.sum(axis=0).T
    dsc, iou = dsc_iou_from_counts(tp, fp, fn)
    best = int(np.argmax(dsc))
    return {"thresholds": list(SWEEP_THRESHOLDS), "pooled_dsc": dsc.tolist(), "pooled_miou": iou.tolist(),
            "contract_threshold": CONTRACT.threshold,
            "best": {"threshold": SWEEP_THRESHOLDS[best], "pooled_dsc": float(dsc[best])}}


def _no_masks(data_root: Path | str, split: str) -> str:
    """What to say when the images have no masks: a flat images/ folder has no splits, so none is named."""
    from .data import resolve_layout

    images, _ = resolve_layout(data_root, split)
    if Path(images) == Path(data_root) / "images":
        return (f"{data_root}: no masks to evaluate against ({images} has no masks/ folder beside it; the flat "
                f"layout has no splits, so --split does not apply)")
    return f"{data_root} [{split}] has no masks to evaluate against ({images} has no matching masks folder)"


def evaluate(weights: Path | str | None, data_root: Path | str, split: str = "test", native: bool = False,
             skip_bad: bool = False, progress: bool = True, report: Path | str | None = None) -> dict:
    """The metrics of ``weights`` on a split; with ``report``, also the per-image CSV and the pictures there."""
    if report is not None and Path(report).exists() and not Path(report).is_dir():
        raise ValueError(f"--report {report} is a file; give a folder for the report")
    net, ckpt = load_model(weights)
    data = load_split(data_root, split, skip_bad=skip_bad, keep_native=native, progress=progress)
    if data.masks is None:
        raise ValueError(_no_masks(data_root, split))
    probs = predict_probs(DeployEGEUNet(use_fused_norms(net)), data.images, progress=progress,
                          desc=f"evaluate {split}")
    result, table = score(probs, data, native)
    result.update({"weights": ckpt["path"], "weights_sha256": ckpt["sha256"], "data": str(Path(data_root).resolve()),
                   "split": split, "skipped": [f"{s.path}: {s.reason}" for s in data.skipped]})
    if report is not None:
        from .evaluation_report import write_evaluation_report

        result["report"] = write_evaluation_report(Path(report), result, table, data, probs)
    return result
