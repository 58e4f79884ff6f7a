"""Maintainer tool: turn a training run's best checkpoint into the shipped weights and their model card.

    python -m egeunet_deploy.model.ship runs/isic2017_e300 --data ../shared/data/isic2017
    python -m egeunet_deploy.model.ship --card-only --data ../shared/data/isic2017

Evaluates the run's ``best.pt`` on ``val`` and ``test`` (pooled and per-image, model resolution and native), then
writes ``model/assets/egeunet_isic2017.pt`` (weights, architecture, contract, metrics, provenance; no optimizer
state) and ``model/assets/MODEL_CARD.md``, both atomically. The card also says where the errors are (by lesion size,
over a threshold sweep, and how lesion sizes differ between the splits), from the same evaluations.
``--card-only`` rewrites only the card of the weights already shipped, leaving the weights file byte for byte as
it is (its sha256 is in every exported artifact and in the Android golden vectors).
"""

from __future__ import annotations

import argparse
import io
import json
import textwrap
from pathlib import Path

import numpy as np
import torch

from .bundled import DEFAULT_WEIGHTS, MODEL_CARD
from .checkpoint import atomic_write_bytes, read_checkpoint
from .contract import CONTRACT
from .data import load_split
from .evaluate import evaluate, restratified_dsc
from .metrics import SIZE_BINS, area_fractions
from .train import init_provenance

SPLITS = ("val", "test")  # selected on val, reported on test
CARD_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)  # the sweep's columns the card shows (all of them are in the JSON)


def ship(run_dir: Path, data: Path, out: Path = DEFAULT_WEIGHTS, card: Path = MODEL_CARD,
         progress: bool = False) -> dict:
    best = read_checkpoint(run_dir / "best.pt")
    last = read_checkpoint(run_dir / "last.pt")
    train_cfg = last["train_cfg"]
    evaluations = {split: evaluate(run_dir / "best.pt", data, split, progress=progress) for split in SPLITS}
    metrics = {}
    for split, model_res in evaluations.items():
        native = evaluate(run_dir / "best.pt", data, split, native=True, progress=progress)
        metrics[split] = {"n_images": model_res["n_images"],
                          "pooled": {k: model_res["pooled"][k] for k in ("miou", "dsc", "accuracy", "sensitivity",
                                                                        "specificity")},
                          "per_image": model_res["per_image"],
                          "native_pooled": {k: native["pooled"][k] for k in ("miou", "dsc")},
                          "native_per_image": native["per_image"]}
    # Runs made before init_provenance hold no record of their start: read it now (the parent may have moved on).
    started_from = last.get("started_from") or (init_provenance(train_cfg["init_weights"])
                                                if train_cfg.get("init_weights") else None)
    record = {
        "format": "egeunet-deploy weights",
        "state_dict": best["state_dict"],
        "model_cfg": best["model_cfg"],
        "contract": CONTRACT.to_dict(),
        "metrics": metrics,
        "training": {"epoch": best["epoch"], "epochs_run": last["epoch"], "epochs_planned": train_cfg["epochs"],
                     "seed": train_cfg["seed"], "batch_size": train_cfg["batch_size"], "lr": train_cfg["lr"],
                     "weight_decay": train_cfg["weight_decay"], "t_max": train_cfg["t_max"],
                     "eta_min": train_cfg["eta_min"], "data": "ISIC 2017 train (1,999 pairs), selected on val (149)",
                     "augment": train_cfg.get("augment", "paper"), "started_from": started_from},
    }
    buf = io.BytesIO()
    torch.save(record, buf)
    atomic_write_bytes(out, buf.getvalue())
    atomic_write_bytes(card, model_card(record, error_analysis(evaluations, data, progress)).encode())
    return metrics


def write_card(data: Path, weights: Path = DEFAULT_WEIGHTS, card: Path = MODEL_CARD, progress: bool = False) -> dict:
    """Rewrite only the model card of shipped weights, from their own record and a fresh evaluation on ``data``.

    Refuses when the fresh pooled figures differ from the ones recorded at shipping: the card would then describe
    other data than the weights' metrics do.
    """
    record = read_checkpoint(weights)
    evaluations = {split: evaluate(weights, data, split, progress=progress) for split in SPLITS}
    for split, result in evaluations.items():
        recorded, fresh = record["metrics"][split]["pooled"]["dsc"], result["pooled"]["dsc"]
        if abs(recorded - fresh) > 1e-4:  # not 0: another thread count may flip a few pixels near 0.5
            raise ValueError(f"{data} [{split}]: pooled DSC {fresh:.6f} here, {recorded:.6f} recorded in {weights}; "
                             "is this the data the weights were shipped with?")
    analysis = error_analysis(evaluations, data, progress)
    atomic_write_bytes(card, model_card(record, analysis).encode())
    return analysis


def error_analysis(evaluations: dict[str, dict], data: Path, progress: bool = False) -> dict:
    """What the card says about where the errors are: the evaluations' by-size and sweep figures, how lesion sizes
    are distributed in each split, and each of ``SPLITS`` scored at the other's size mix (does `test` score lower
    because it holds more of the sizes the model finds hard, or because each size is harder there?)."""
    shares = {}
    for split in ("train", *SPLITS):
        masks = load_split(data, split, progress=progress).masks
        if masks is None:
            continue
        frac = area_fractions(masks)
        shares[split] = {"n": int(frac.size), "median": float(np.median(frac)),
                         **{name: float(np.mean((frac >= lo) & (frac < hi))) for name, lo, hi in SIZE_BINS}}
    mix = {split: {r["name"]: r["n"] for r in evaluations[split]["by_lesion_size"]} for split in SPLITS}
    other = dict(zip(SPLITS, reversed(SPLITS), strict=True))
    return {"lesion_share": shares,
            **{split: {"by_lesion_size": r["by_lesion_size"], "threshold_sweep": r["threshold_sweep"],
                       "pooled_dsc": r["pooled"]["dsc"], "other_split": other[split],
                       "pooled_dsc_at_other_size_mix": restratified_dsc(r["by_lesion_size"], mix[other[split]])}
               for split, r in evaluations.items()}}


def _recipe(t: dict) -> str:
    """The model card's recipe paragraph: the paper's, or the paper's followed by this toolkit's fine-tuning."""
    paper = ("BCE+Dice on the output and five deep-supervision maps (1, 0.5, 0.4, 0.3, 0.2, 0.1), AdamW, weight decay "
             f"{t['weight_decay']}, cosine learning rate down to {t['eta_min']}, batch {t['batch_size']}, 256x256, "
             f"seed {t['seed']}.")
    start = t.get("started_from")
    if not start:
        text = (f"The paper's: {paper} Learning rate {t['lr']}, CosineAnnealingLR T_max {t['t_max']}; random flips "
                f"and a per-sample random rotation.\nBest epoch: {t['epoch']} of {t['epochs_run']} run so far "
                f"({t['epochs_planned']} planned).")
    else:
        # Records made before init_provenance name the file relative to runs/ and carry no sha256.
        file = start["file"] if "sha256" in start else f"runs/{start['file']}"
        sha = f", sha256 {start['sha256'][:12]}" if "sha256" in start else ""
        if "augment" not in start:  # e.g. an official-repository state_dict: no recipe travels with it
            stage1 = f"Weights made outside this toolkit (`{file}`{sha}); no recipe recorded with them."
        else:
            first = ("the paper's recipe (learning rate {lr}, T_max {t_max}, flips and per-sample rotation)"
                     if start["augment"] == "paper" else
                     "`--augment {augment}`, learning rate {lr}, T_max {t_max}").format(**start)
            stage1 = (f"{first[0].upper()}{first[1:]}: epoch {start['epoch']} (`{file}`{sha}), the best by "
                      f"validation DSC of the {start['epochs_run']} epochs that run had reached.")
        text = (f"Two stages, same loss and optimiser: {paper}\n1. {stage1}\n"
                "2. Fine-tuned from it with `egeunet train --init-weights ... --augment "
                f"{t['augment']}`" + (" (not in the paper: adds a per-channel colour cast, gamma, saturation, zoom "
                                      "and shift)" if t["augment"] == "strong" else "")
                + f", learning rate {t['lr']}, T_max {t['t_max']}: best epoch {t['epoch']} of {t['epochs_run']} "
                f"({t['epochs_planned']} planned)."
                + (" Why: the paper-recipe run over-fits after its first learning-rate minimum (training loss "
                   "falls, validation DSC drops)." if start.get("augment") == "paper" else ""))
    return "\n".join(textwrap.fill(line, width=118, subsequent_indent="   " if line[:1].isdigit() else "",
                                    break_long_words=False, break_on_hyphens=False)  # paths stay whole
                     for line in text.split("\n"))


def model_card(record: dict, analysis: dict) -> str:
    """The card's text from the weights' record and :func:`error_analysis` of the same weights."""
    m, t = record["metrics"], record["training"]

    def row(split: str) -> str:
        s = m[split]
        return (f"| {split} | {s['n_images']} | {100 * s['pooled']['miou']:.2f} | {100 * s['pooled']['dsc']:.2f} | "
                f"{100 * s['per_image']['miou']:.2f} | {100 * s['per_image']['dsc']:.2f} | "
                f"{100 * s['native_pooled']['dsc']:.2f} |")

    return f"""# Model card: EGE-UNet, ISIC 2017 (egeunet_isic2017.pt)

The default weights of every `egeunet` command. The official EGE-UNet code released no weights; these were trained
with this toolkit's `egeunet train` (the recipe below says where it departs from the paper's).

## Model
EGE-UNet (Ruan et al., MICCAI 2023), c_list 8,16,24,32,48,64, GAB bridges and deep supervision on: 53,374
parameters, 72,096,256 MACs at 1x3x256x256. State_dict layout identical to the official code.

## Data
ISIC 2017 Challenge Part 1, downsized copy (256x192), official splits: trained on `train` (1,999 pairs), best epoch
selected by pooled DSC on `val` (149 pairs), reported on `test` (589 pairs, never seen in training or selection).
The paper reports a random 7:3 split (mIoU 79.81 / DSC 88.77); the official test split is harder.
Data licence: ISIC Archive images under the ISIC 2017 challenge terms (research use); cite Codella et al.,
arXiv:1710.05006.

## Recipe
{_recipe(t)}

## Preprocessing contract
{json.dumps(record['contract'], indent=1)}

## Metrics (percent; pooled = one confusion matrix over all pixels, the paper's definition)
| split | images | pooled mIoU | pooled DSC | per-image mIoU | per-image DSC | pooled DSC, native res. |
|---|---|---|---|---|---|---|
{row('val')}
{row('test')}

Model resolution = 256x256 (paper-comparable); native = masks scored at each image's own size.

{_errors_section(analysis)}

## Intended use and limits
Research and deployment engineering of lesion segmentation; not a medical device, not for diagnosis. Trained on
dermoscopy images only; other imaging (clinical photos, other skin types under-represented in ISIC) is out of
distribution.
"""


def _errors_section(a: dict) -> str:
    """Where the errors are: lesion sizes per split, figures by lesion size, the threshold sweep (all generated)."""
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    names = [name for name, _, _ in SIZE_BINS]
    bins = ", ".join(f"{n} {pct(lo)}-{pct(min(hi, 1.0))}%" for n, lo, hi in SIZE_BINS)
    lines = ["## Where the errors are (model resolution, the contract's threshold)",
             "Lesion share of the image (ground-truth lesion pixels / all pixels;",
             f"{bins}):", "",
             "| split | images | median lesion share | " + " | ".join(f"images with {n} lesions" for n in names) + " |",
             "|---" * (3 + len(names)) + "|"]
    lines += [f"| {split} | {s['n']} | {pct(s['median'])}% | " + " | ".join(f"{pct(s[n])}%" for n in names) + " |"
              for split, s in a["lesion_share"].items()]
    lines += ["", "| split | lesion size | images | pooled DSC | per-image DSC | missed lesion px | false lesion px | "
              "share of wrong px |", "|---" * 8 + "|"]
    for split in SPLITS:
        for r in a[split]["by_lesion_size"]:
            if r["n"]:
                lines.append(f"| {split} | {r['name']} | {r['n']} | {pct(r['pooled']['dsc'])} | "
                             f"{pct(r['per_image_dsc'])} | {r['missed_pixels']:,} | {r['false_pixels']:,} | "
                             f"{pct(r['share_of_wrong_pixels'])}% |")
    lines += ["", "Pooled DSC (percent) over thresholds; every artifact uses the contract's "
              f"{CONTRACT.threshold}, chosen with the weights on `val`:", "",
              "| split | " + " | ".join(f"{th}" for th in CARD_THRESHOLDS) + " | best of 0.1-0.9 |",
              "|---" * (2 + len(CARD_THRESHOLDS)) + "|"]
    for split in SPLITS:
        sweep = a[split]["threshold_sweep"]
        dsc = dict(zip(sweep["thresholds"], sweep["pooled_dsc"], strict=True))
        lines.append(f"| {split} | " + " | ".join(pct(dsc[th]) for th in CARD_THRESHOLDS)
                     + f" | {pct(sweep['best']['pooled_dsc'])} at {sweep['best']['threshold']} |")
    mixed = [(s, a[s]["other_split"], a[s]["pooled_dsc_at_other_size_mix"]) for s in SPLITS]
    lines += ["", "Pooled DSC with each split's size strata weighted to the other split's lesion-size mix (per-image",
              "averages kept): " + "; ".join(f"{s} at {o}'s mix {pct(v) if v is not None else '-'} "
                                            f"(as it is {pct(a[s]['pooled_dsc'])})" for s, o, v in mixed) + "."]
    missed = {s: sum(r["missed_pixels"] for r in a[s]["by_lesion_size"]) for s in SPLITS}
    false = {s: sum(r["false_pixels"] for r in a[s]["by_lesion_size"]) for s in SPLITS}
    lines += ["", "Missed / false lesion pixels: " + "; ".join(
        f"{s} {missed[s]:,} / {false[s]:,} ({missed[s] / max(false[s], 1):.1f}x)" for s in SPLITS) + "."]
    return "\n".join(lines)


def main() -> None:  # pragma: no cover - maintainer tool
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, nargs="?", help="the run whose best.pt to ship (not with --card-only)")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--card-only", action="store_true", help="rewrite only the card of the shipped weights")
    args = ap.parse_args()
    if args.card_only == (args.run_dir is not None):
        ap.error("give a run folder, or --card-only without one")
    result = (write_card(args.data, progress=True) if args.card_only
              else ship(args.run_dir, args.data, progress=True))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":  # pragma: no cover
    main()
