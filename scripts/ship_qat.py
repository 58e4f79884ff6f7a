"""Maintainer tool: ship a quantization-aware fine-tune as the int8-full weights, with its own model card.

    .venv/bin/python scripts/ship_qat.py runs/qat_int8 --data ../shared/data/isic2017

(A script, not a module of model/: it exports and runs the artifact, which model/ must not import.)

The QAT run's ``best.pt`` (selected on val under fake int8) becomes ``model/assets/egeunet_isic2017_int8full.pt``
(weights, the integer variant's architecture, the teacher it was distilled from, metrics; no optimizer state or
activation ranges: those stay in the run's checkpoints), the default weights of ``egeunet export --precision
int8-full``. The card gives, per split, the float network's figures and those of the int8-full TFLite artifact
exported from it, against the shipped fp32 weights (the teacher) it is meant to replace on integer hardware.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from egeunet_deploy.export.api import export
from egeunet_deploy.model.bundled import ASSETS, DEFAULT_WEIGHTS, QAT_WEIGHTS
from egeunet_deploy.model.checkpoint import atomic_torch_save, atomic_write_bytes, load_model, read_checkpoint
from egeunet_deploy.model.contract import CONTRACT, to_model_input
from egeunet_deploy.model.data import load_split
from egeunet_deploy.model.metrics import Confusion
from egeunet_deploy.runtimes.litert_runner import LiteRTRunner

QAT_CARD = ASSETS / "MODEL_CARD_INT8FULL.md"
SPLITS = ("val", "test")


def _probs_torch(weights: Path, images: np.ndarray) -> np.ndarray:
    import torch

    net, _ = load_model(weights)
    with torch.no_grad():
        return np.concatenate([torch.sigmoid(net.forward_logits(to_model_input(images[i:i + 16]))[1])[:, 0].numpy()
                               for i in range(0, len(images), 16)])


def _pooled(probs: np.ndarray, masks: np.ndarray) -> dict:
    c = Confusion()
    c.add(probs >= CONTRACT.threshold, masks)
    s = c.summary()
    return {"dsc": s["dsc"], "miou": s["miou"]}


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a >= CONTRACT.threshold, b >= CONTRACT.threshold
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def measure(weights: Path, artifact: Path, data: Path, teacher: Path = DEFAULT_WEIGHTS) -> dict:
    """Per split: the teacher, the QAT float network and the int8-full artifact (LiteRT), pooled DSC / mIoU, and
    the artifact's mask agreement with the teacher (the drift report's figures)."""
    out = {}
    runner = LiteRTRunner(threads=1)
    runner.load(artifact)
    for split in SPLITS:
        d = load_split(data, split, progress=False)
        ref, student = _probs_torch(teacher, d.images), _probs_torch(weights, d.images)
        art = runner.run(d.images)
        out[split] = {"n_images": len(d.images), "teacher": _pooled(ref, d.masks),
                      "qat_float": _pooled(student, d.masks),
                      "int8_full": _pooled(art, d.masks), "int8_full_agreement": _agreement(art, ref),
                      "qat_float_agreement": _agreement(student, ref)}
        out[split]["int8_full_delta_dsc"] = out[split]["int8_full"]["dsc"] - out[split]["teacher"]["dsc"]
    runner.close()
    return out


def ship_qat(run_dir: Path, data: Path, out: Path = QAT_WEIGHTS, card: Path = QAT_CARD) -> dict:
    best, last = read_checkpoint(run_dir / "best.pt"), read_checkpoint(run_dir / "last.pt")
    cfg = last["train_cfg"]
    if not cfg.get("qat"):
        raise ValueError(f"{run_dir} is not a QAT run (train --qat)")
    record = {"format": "egeunet-deploy weights", "state_dict": best["state_dict"], "model_cfg": best["model_cfg"],
              "contract": CONTRACT.to_dict(), "distilled_from": last.get("distilled_from") or last.get("started_from"),
              "training": {"run": run_dir.name, "epoch": best["epoch"], "epochs_run": last["epoch"], "lr": cfg["lr"],
                           "t_max": cfg["t_max"], "augment": cfg["augment"], "batch_size": cfg["batch_size"],
                           "qat": True, "val_dsc_fake_int8": best.get("val", {}).get("val_dsc"),
                           "val_agreement_fake_int8": best.get("val", {}).get("val_agreement"),
                           "qat_ranges": cfg.get("qat_ranges", "ema"), "distill_logits": cfg.get("distill_logits", 0.0),
                           "selected_on": last.get("select", "dsc"), "started_from": last.get("started_from")}}
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "weights.pt"
        atomic_torch_save(record, staged)
        artifact = export("tflite", "int8-full", weights=staged, out_dir=Path(tmp) / "art", log=None)
        record["metrics"] = measure(staged, artifact, data)
        record["artifact_bytes"] = artifact.stat().st_size
    atomic_torch_save(record, out)
    atomic_write_bytes(card, model_card(record).encode())
    return record["metrics"]


def model_card(r: dict) -> str:
    t, m = r["training"], r["metrics"]
    rows = []
    for split in SPLITS:
        s = m[split]
        rows.append(f"| {split} ({s['n_images']}) | {s['teacher']['dsc']:.4f} | {s['qat_float']['dsc']:.4f} | "
                    f"{s['int8_full']['dsc']:.4f} | {s['int8_full_delta_dsc']:+.4f} | "
                    f"{s['int8_full_agreement']:.4f} |")
    src = r.get("distilled_from") or {}
    init = t.get("started_from") or src
    ranges = t.get("qat_ranges", "ema")
    command = f"egeunet train --qat --init-weights {init.get('file', 'model/assets/egeunet_isic2017.pt')}"
    if init.get("sha256") != src.get("sha256"):
        command += f" --teacher {src.get('file', 'model/assets/egeunet_isic2017.pt')}"
    start = ("started from the shipped fp32 weights" if init.get("sha256") == src.get("sha256") else
             f"started from the weights then in {init.get('file')} (sha256 `{str(init.get('sha256', ''))[:16]}...`, "
             f"a QAT fine-tune of the fp32 weights: epoch {init.get('epoch')} of {init.get('epochs_run')} at lr "
             f"{init.get('lr')}), distilled from the shipped fp32 weights")
    range_text = ("activation ranges set as the export sets them: the float network's extremes (min of per-image "
                  "minima, max of maxima) over the export's default calibration set (the bundled sample's 64 ISIC "
                  "2017 train images), recomputed after every epoch and frozen while it trains"
                  if ranges == "extremes" else "activation ranges from a moving average of training batches")
    logits = (f"; plus {t['distill_logits']:g} x the mean squared difference of the clamped output logits"
              if t.get("distill_logits") else "")
    selected = ("selected on val mask agreement with the fp32 weights under fake int8"
                if t.get("selected_on") == "agreement" else "selected on val DSC under fake int8")
    how = textwrap.fill(
        f"**How it was trained.** `{command}` (run `{t['run']}`): {start} (sha256 `{str(src.get('sha256', ''))[:16]}"
        f"...`), fake int8 on every op of the forward pass (per-channel int8 weights, per-tensor int8 activations, "
        f"GroupNorm decomposed into the statistics the exported graph computes; {range_text}), trained to reproduce "
        f"the fp32 weights' probability maps (distillation: the recipe's BCE+Dice with deep supervision, the teacher's "
        f"map as the target{logits}) on the ISIC 2017 train split with the paper's augmentation; lr {t['lr']:g}, "
        f"cosine over {t['t_max']} epochs, batch {t['batch_size']}; epoch {t['epoch']} of {t['epochs_run']} "
        f"{selected}.", width=116, break_on_hyphens=False, break_long_words=False)
    return f"""# EGE-UNet ISIC 2017, integer variant (quantization-aware fine-tune) — `egeunet_isic2017_int8full.pt`

The default weights of `egeunet export --target tflite --precision int8-full`: the artifact whose every op but the
input's min-max stretch is int8, for NPUs (Arm Ethos-U through Vela) and microcontrollers (TensorFlow Lite Micro).

**What differs from the paper's network.** Two integer-hardware substitutions, trained in rather than approximated:
the GELU is `x * sigmoid(1.702 x)` (TFLite Micro has no GELU kernel; LOGISTIC and MUL exist on every integer target)
and the 2x bilinear upsampling uses half-pixel centres (`align_corners=False`; Ethos-U resizes only exact 2x
half-pixel or (2n-1)/(n-1) align-corners in hardware). Same parameters and state_dict layout as the paper's model.

{how}

**Measured** (model resolution 256x256, pooled over each split, threshold 0.5; the int8-full artifact run by LiteRT,
{r.get('artifact_bytes', 0) / 1024:.0f} KB; agreement = Dice of its masks with the fp32 weights' masks):

| split | fp32 shipped weights DSC | this network, float | int8-full artifact | delta DSC vs fp32 | mask agreement |
|---|---|---|---|---|---|
{chr(10).join(rows)}

`egeunet drift` on the artifact reports the same comparison. Research and deployment engineering only: not a medical
device, not for diagnosis. Data: ISIC 2017 challenge (Codella et al., arXiv:1710.05006), see MODEL_CARD.md.
"""


def main() -> None:  # pragma: no cover - maintainer tool
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--data", type=Path, required=True)
    args = p.parse_args()
    print(json.dumps(ship_qat(args.run_dir, args.data), indent=1))


if __name__ == "__main__":  # pragma: no cover
    main()
