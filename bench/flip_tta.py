"""How much test-time flip averaging would add to the shipped weights' DSC, and what it would cost, in one run.

    python bench/flip_tta.py [--data ../shared/data/isic2017] [--splits val,test] [--weights W] [--json FILE]

Why: issue 2 asks for pooled DSC >= 0.86 on the official ISIC 2017 test split and the shipped weights score 0.8416.
Averaging the probabilities of the image and its three flips (horizontal, vertical, both) is the usual cheap gain
at inference. It is not in the contract: on a phone it costs four forward passes per photo. This measures whether
it would be worth that, on validation (where weights are selected) and on test, with the contract's threshold.
Prints pooled and per-image DSC of one pass and of the four-flip mean, and the gain.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from egeunet_deploy.model.checkpoint import load_model
from egeunet_deploy.model.data import load_split
from egeunet_deploy.model.ege_unet import DeployEGEUNet
from egeunet_deploy.model.evaluate import predict_probs, score
from egeunet_deploy.model.layers import use_fused_norms

# (image axes to flip in NHWC uint8, the same axes in the (N, H, W) probability map)
FLIPS = ((), (2,), (1,), (1, 2))


def flip_mean_probs(net: DeployEGEUNet, images_nhwc: np.ndarray) -> np.ndarray:
    """Mean of the probabilities of each image and its flips, each flipped back onto the image's own pixels."""
    total = np.zeros(images_nhwc.shape[:3], dtype=np.float64)
    for axes in FLIPS:
        flipped = np.ascontiguousarray(np.flip(images_nhwc, axis=axes)) if axes else images_nhwc
        prob = predict_probs(net, flipped)
        total += np.flip(prob, axis=axes) if axes else prob
    return (total / len(FLIPS)).astype(np.float32)


def measure(net: DeployEGEUNet, data_root: Path, split: str) -> dict:
    """Pooled / per-image DSC of one pass and of the four-flip mean (four passes, by construction) on one split."""
    data = load_split(data_root, split, progress=False)
    row: dict = {"split": split, "n_images": len(data.images)}
    for name, probs in (("single", predict_probs(net, data.images)), ("flip4", flip_mean_probs(net, data.images))):
        result, _ = score(probs, data)
        row[name] = {"pooled_dsc": result["pooled"]["dsc"], "per_image_dsc": result["per_image"]["dsc"]}
    row["gain_pooled_dsc"] = row["flip4"]["pooled_dsc"] - row["single"]["pooled_dsc"]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/isic2017"))
    ap.add_argument("--splits", default="val,test")
    ap.add_argument("--weights", default=None, help="default: the shipped weights")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    net, ckpt = load_model(args.weights)
    deploy = DeployEGEUNet(use_fused_norms(net))
    rows = [measure(deploy, args.data, split) for split in args.splits.split(",")]
    print(f"weights {ckpt['path']} (sha256 {ckpt['sha256'][:12]}), threshold 0.5, model resolution")
    print(f"{'split':6} {'n':>5} {'pooled DSC 1 pass':>18} {'4 flips':>8} {'gain':>8} "
          f"{'per-image 1 pass':>17} {'4 flips':>8}")
    for r in rows:
        s, f = r["single"], r["flip4"]
        print(f"{r['split']:6} {r['n_images']:5d} {s['pooled_dsc']:18.4f} {f['pooled_dsc']:8.4f} "
              f"{r['gain_pooled_dsc']:+8.4f} {s['per_image_dsc']:17.4f} {f['per_image_dsc']:8.4f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"weights": ckpt["path"], "weights_sha256": ckpt["sha256"],
                                         "data": str(args.data.resolve()), "rows": rows}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
