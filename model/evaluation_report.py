"""``egeunet evaluate --report DIR``: the evaluation as a folder to look at, beside the JSON machines read.

What it writes (each file atomically, so an interrupted run never leaves half a PNG or CSV):

- ``evaluation.json``: the same result ``--json`` writes, plus the list of these files;
- ``per_image.csv``: one row per image (lesion and predicted area, IoU, DSC, missed and false lesion pixels), in the
  split's order, for a spreadsheet or pandas;
- ``scores.png``: the per-image DSC histogram, DSC against lesion size, where the wrong pixels are by lesion size,
  and the pooled DSC over the threshold sweep with the contract's threshold marked;
- ``worst.png``: the images with the lowest DSC: ground truth, prediction, and the difference (red: false lesion,
  blue: missed lesion), at model resolution.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from .checkpoint import atomic_write_bytes
from .contract import binarize
from .data import LoadedSet
from .figures import GT_RGB, PRED_RGB, difference_map, image_grid, plt, save_png
from .imageio import overlay  # not from .predict: predict imports evaluate, which imports this module

N_WORST = 8
CSV_COLUMNS = ("name", "lesion_fraction", "predicted_fraction", "iou", "dsc", "missed_pixels", "false_pixels")


def write_evaluation_report(out: Path, result: dict, table: dict, data: LoadedSet, probs: np.ndarray,
                            n_worst: int = N_WORST) -> dict:
    """Write the report folder; returns ``{"folder": ..., "files": [...]}`` (also recorded in evaluation.json)."""
    out.mkdir(parents=True, exist_ok=True)
    files = [_write_csv(out / "per_image.csv", table), scores_figure(result, table, out / "scores.png")]
    worst = worst_indices(table, n_worst)
    if worst.size:
        files.append(worst_figure(data, probs, table, worst, out / "worst.png", result["resolution"]))
    record = {"folder": str(out.resolve()), "files": [*files, "evaluation.json"]}
    atomic_write_bytes(out / "evaluation.json", json.dumps({**result, "report": record}, indent=2).encode())
    return record


def worst_indices(table: dict, n: int) -> np.ndarray:
    """The ``n`` images with the lowest DSC; among equal DSC, the one with more wrong pixels first."""
    wrong = np.asarray(table["missed_pixels"]) + np.asarray(table["false_pixels"])
    return np.lexsort((-wrong, np.asarray(table["dsc"])))[:n]


def _write_csv(path: Path, table: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in zip(*(table[c] for c in CSV_COLUMNS), strict=True):
        writer.writerow([f"{v:.6f}" if isinstance(v, float | np.floating) else v for v in row])
    atomic_write_bytes(path, buf.getvalue().encode())
    return path.name


def scores_figure(result: dict, table: dict, path: Path) -> str:
    dsc, frac = np.asarray(table["dsc"]), np.asarray(table["lesion_fraction"])
    pooled, per_image = result["pooled"]["dsc"], result["per_image"]["dsc"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax = axes[0][0]
    ax.hist(dsc, bins=np.linspace(0, 1, 21), color="#57606a")
    ax.axvline(per_image, color="#cf222e", label=f"per-image mean {per_image:.4f}")
    ax.axvline(pooled, color="#1a7f37", ls="--", label=f"pooled {pooled:.4f}")
    ax.set_xlabel("per-image DSC")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    ax.set_title(f"{result['n_images']} images, {result['resolution']} resolution", fontsize=10)

    ax = axes[0][1]
    ax.scatter(frac, dsc, s=8, alpha=0.6, color="#0969da")
    for row in result["by_lesion_size"][1:]:
        ax.axvline(row["area_fraction"][0], color="#57606a", lw=0.8, ls=":")
    ax.set_xlabel("lesion share of the image (ground truth)")
    ax.set_ylabel("per-image DSC")
    ax.set_title("DSC against lesion size (dotted: strata bounds)", fontsize=10)

    ax = axes[1][0]
    rows = result["by_lesion_size"]
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["missed_pixels"] for r in rows], 0.4, label="missed lesion pixels", color="#0969da")
    ax.bar(x + 0.2, [r["false_pixels"] for r in rows], 0.4, label="false lesion pixels", color="#cf222e")
    labels = [f"{r['name']} (n={r['n']})\nDSC {r['pooled']['dsc']:.3f}" if r["pooled"] else f"{r['name']} (n=0)"
              for r in rows]
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("pixels")
    ax.legend(fontsize=8)
    ax.set_title("Where the wrong pixels are, by lesion size (pooled DSC below)", fontsize=10)

    ax = axes[1][1]
    sweep = result["threshold_sweep"]
    ax.plot(sweep["thresholds"], sweep["pooled_dsc"], "o-", label="pooled DSC")
    ax.plot(sweep["thresholds"], sweep["pooled_miou"], "s-", label="pooled mIoU")
    contract = sweep["contract_threshold"]
    ax.axvline(contract, color="k", lw=0.8, label=f"contract threshold {contract}")
    ax.set_xlabel("threshold on the probability")
    ax.legend(fontsize=8)
    best = sweep["best"]
    ax.set_title(f"Threshold sweep (best pooled DSC {best['pooled_dsc']:.4f} at {best['threshold']})", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def worst_figure(data: LoadedSet, probs: np.ndarray, table: dict, worst: np.ndarray, path: Path,
                 resolution: str) -> str:
    rows, subtitles = [], []
    for i in worst:
        img, gt, pred = data.images[i], data.masks[i], binarize(probs[i])
        rows.append((overlay(img, gt, color=GT_RGB), overlay(img, pred, color=PRED_RGB), difference_map(img, pred, gt)))
        subtitles.append((str(table["name"][i]), f"DSC {table['dsc'][i]:.3f} ({resolution} res.)",
                          f"missed {int(table['missed_pixels'][i])} px, false {int(table['false_pixels'][i])} px"))
    fig = image_grid(rows, subtitles, ("ground truth", "prediction", "difference (red: false, blue: missed)"))
    return save_png(fig, path, dpi=90)  # 8 rows of photos: 1.1 MB, not 1.6 at 110 dpi (ISIC test)
