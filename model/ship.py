"""Maintainer tool: turn a training run's best checkpoint into the shipped weights and their model card.

    python -m egeunet_deploy.model.ship runs/isic2017_e300 --data ../shared/data/isic2017

Evaluates the run's ``best.pt`` on ``val`` and ``test`` (pooled and per-image, model resolution and native), then
writes ``model/assets/egeunet_isic2017.pt`` (weights, architecture, contract, metrics, provenance; no optimizer
state) and ``model/assets/MODEL_CARD.md``, both atomically.
"""

from __future__ import annotations

import argparse
import io
import json
import textwrap
from pathlib import Path

import torch

from .bundled import DEFAULT_WEIGHTS, MODEL_CARD
from .checkpoint import atomic_write_bytes, read_checkpoint
from .contract import CONTRACT
from .evaluate import evaluate


def ship(run_dir: Path, data: Path, out: Path = DEFAULT_WEIGHTS, card: Path = MODEL_CARD) -> dict:
    best = read_checkpoint(run_dir / "best.pt")
    last = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    train_cfg = last["train_cfg"]
    metrics = {}
    for split in ("val", "test"):
        model_res = evaluate(run_dir / "best.pt", data, split, progress=False)
        native = evaluate(run_dir / "best.pt", data, split, native=True, progress=False)
        metrics[split] = {"n_images": model_res["n_images"],
                          "pooled": {k: model_res["pooled"][k] for k in ("miou", "dsc", "accuracy", "sensitivity",
                                                                        "specificity")},
                          "per_image": model_res["per_image"],
                          "native_pooled": {k: native["pooled"][k] for k in ("miou", "dsc")},
                          "native_per_image": native["per_image"]}
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
                     "augment": train_cfg.get("augment", "paper"), "started_from": _started_from(train_cfg)},
    }
    buf = io.BytesIO()
    torch.save(record, buf)
    atomic_write_bytes(out, buf.getvalue())
    atomic_write_bytes(card, model_card(record).encode())
    return metrics


def _started_from(train_cfg: dict) -> dict | None:
    """Provenance of a fine-tuned run's starting weights (their epoch and recipe), or None for a fresh run.

    A ``best.pt`` carries no recipe, so it is read from the ``last.pt`` of the same run folder.
    """
    if not train_cfg.get("init_weights"):
        return None
    path = Path(train_cfg["init_weights"])
    init = read_checkpoint(path)
    run = init if "train_cfg" in init else torch.load(path.parent / "last.pt", map_location="cpu", weights_only=True)
    cfg = run["train_cfg"]
    return {"file": f"{path.parent.name}/{path.name}", "epoch": init.get("epoch"),
            "augment": cfg.get("augment", "paper"), "lr": cfg["lr"], "t_max": cfg["t_max"],
            "epochs_run": run.get("epoch")}


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
        text = (f"Two stages, same loss and optimiser: {paper}\n1. The paper's recipe (learning rate {start['lr']}, "
                f"T_max {start['t_max']}, flips and per-sample rotation): epoch {start['epoch']} "
                f"(`runs/{start['file']}`), the best by validation DSC of the {start['epochs_run']} epochs that run "
                "had reached.\n2. Fine-tuned from it with `egeunet train --init-weights ... --augment "
                f"{t['augment']}` (not in the paper: adds a per-channel colour cast, gamma, saturation, zoom and "
                "shift), "
                f"learning rate {t['lr']}, T_max {t['t_max']}: best epoch {t['epoch']} of {t['epochs_run']} "
                f"({t['epochs_planned']} planned). Why: the paper-recipe run over-fits after its first learning-rate "
                "minimum (training loss falls, validation DSC drops).")
    return "\n".join(textwrap.fill(line, width=118, subsequent_indent="   " if line[:1].isdigit() else "")
                     for line in text.split("\n"))


def model_card(record: dict) -> str:
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

## Intended use and limits
Research and deployment engineering of lesion segmentation; not a medical device, not for diagnosis. Trained on
dermoscopy images only; other imaging (clinical photos, other skin types under-represented in ISIC) is out of
distribution.
"""


def main() -> None:  # pragma: no cover - maintainer tool
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    args = ap.parse_args()
    print(json.dumps(ship(args.run_dir, args.data), indent=1))


if __name__ == "__main__":  # pragma: no cover
    main()
