"""Sub-commands of the model part: info, train, evaluate, predict."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .args import NO_PROGRESS_HELP, THREADS_MEANING, path_arg, thread_count


def add_weights_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", type=path_arg, default=None,
                   help="weights file (toolkit checkpoint or official state_dict); default: the shipped weights")


def register(sub) -> None:
    """Add the model sub-commands to the ``egeunet`` parser."""
    p = sub.add_parser("info", help="model figures (params, MACs), weights and the preprocessing contract")
    p.set_defaults(handler=cmd_info)
    add_weights_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON only (default: readable lines)")

    p = sub.add_parser("train", help="train with the paper's recipe (resumable; torchrun for several processes)")
    p.set_defaults(handler=cmd_train)
    p.add_argument("--data", type=path_arg, default=None, metavar="DIR",
                   help="dataset root (official, ISIC or flat layout); required unless --resume")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs in all (default 300; when resuming, the run's own, unless given to extend it)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N",
                   help="images per optimizer step, over all processes (default 8, the paper's)")
    p.add_argument("--out", type=path_arg, default=Path("runs/egeunet"), metavar="RUN_DIR",
                   help="run folder: checkpoints, logs, curves (default runs/egeunet)")
    p.add_argument("--resume", type=path_arg, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR exactly where it stopped (default: start a new run)")
    p.add_argument("--seed", type=int, default=42,
                   help="seed of initialisation, shuffling and augmentation (default 42)")
    # None: TrainConfig's value, where the paper's recipe is written down once
    p.add_argument("--lr", type=float, default=None, help="initial learning rate (default: the paper's)")
    p.add_argument("--t-max", type=int, default=None, help="cosine half-period in epochs (default: the paper's)")
    p.add_argument("--augment", default=None, metavar="{paper,strong}",
                   help="paper: flips, rotation; strong: also colour cast, gamma, saturation, zoom, shift "
                        "(default paper)")
    p.add_argument("--init-weights", type=path_arg, default=None, metavar="W",
                   help="start from these weights (fine-tuning) instead of a fresh initialisation (default: fresh)")
    p.add_argument("--qat", action="store_true",
                   help="quantization-aware fine-tune for the int8-full artifact: fake int8 on every op, the "
                        "integer variant (sigmoid GELU, half-pixel upsampling), trained to reproduce --init-weights' "
                        "masks (default off)")
    p.add_argument("--teacher", type=path_arg, default=None, metavar="W",
                   help="--qat: the fp32 weights whose probability maps the integer network learns to reproduce, "
                        "e.g. the shipped fp32 weights while --init-weights is a previous QAT run "
                        "(default: --init-weights)")
    p.add_argument("--qat-ranges", default=None, metavar="{extremes,ema}",
                   help="--qat activation ranges: extremes = those the int8-full export ships (the float network's "
                        "min/max over the calibration images, recomputed every epoch); ema = moving average of "
                        "training batches (default extremes)")
    p.add_argument("--distill-logits", type=float, default=None, metavar="W",
                   help="--qat: add W x the mean squared difference of the output logits with the teacher's (clamped "
                        "to +-8) to the loss (default 0: probability targets only)")
    p.add_argument("--threads", type=thread_count, default=0, metavar="N",
                   help=f"CPU threads; {THREADS_MEANING} (default 0; divided among torchrun's processes)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the first N pairs of each split, for smoke runs (default: all)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable or unpaired files, listing them")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)

    p = sub.add_parser("evaluate", help="the paper's metrics (pooled mIoU/DSC) and per-image means on a split")
    p.set_defaults(handler=cmd_evaluate)
    add_weights_arg(p)
    p.add_argument("--data", type=path_arg, required=True, metavar="DIR",
                   help="dataset root (official, ISIC or flat images/ + masks/ layout); required")
    p.add_argument("--split", default="test",
                   help="split to score (default test; a flat images/ + masks/ folder has no splits: ignored)")
    p.add_argument("--json", type=path_arg, default=None, metavar="FILE",
                   help="write the results as JSON (default: print only)")
    p.add_argument("--native", action="store_true",
                   help="score at each image's own resolution (default: at the model's 256x256)")
    p.add_argument("--report", type=path_arg, default=None, metavar="DIR",
                   help="also write a per-image CSV and pictures (score plots, worst images) to DIR (default: none)")
    p.add_argument("--skip-bad", action="store_true", help="pass over unpaired or unreadable files, listing them")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)

    p = sub.add_parser("split", help="a seeded random train/val/test split (the paper's 7:3 protocol) as links")
    p.set_defaults(handler=cmd_split)
    p.add_argument("--data", type=path_arg, required=True, metavar="DIR",
                   help="dataset root holding the source splits; required")
    p.add_argument("--out", type=path_arg, required=True, metavar="DIR",
                   help="new folder for the split (official layout); required")
    p.add_argument("--from", dest="source_splits", default="train,val",
                   help="source splits pooled before splitting (default train,val: the paper's 2,150 images)")
    p.add_argument("--fractions", default="0.7,0,0.3",
                   help="train,val,test shares (default 0.7,0,0.3: the paper's; val 0 makes val the test set, "
                        "as the official code selects on it)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random split (default 0)")
    p.add_argument("--copy", action="store_true", help="copy the files instead of linking them (default: links)")
    p.add_argument("--skip-bad", action="store_true", help="pass over unpaired or unreadable files, listing them")

    p = sub.add_parser("predict", help="binary masks and overlays at the input's resolution")
    p.set_defaults(handler=cmd_predict)
    add_weights_arg(p)
    p.add_argument("inputs", type=path_arg, nargs="+", metavar="IMAGE_OR_DIR",
                   help="image files and/or folders of images (transparent pixels are composited on grey 128)")
    p.add_argument("--out", type=path_arg, required=True, metavar="DIR",
                   help="folder for <stem>_mask.png and <stem>_overlay.png per image; required")
    p.add_argument("--skip-bad", action="store_true", help="pass over unreadable images, listing them")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def cmd_info(args) -> int:
    from egeunet_deploy.model.info import model_info

    info = model_info(args.weights)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"EGE-UNet ({info['model']}): {info['params']:,} parameters, {info['macs']:,} MACs at "
              f"1x3x{info['input_hw'][0]}x{info['input_hw'][1]}")
        print(f"weights: {info['weights']} (sha256 {info['weights_sha256'][:12]}...)")
        for split, m in (info.get("metrics") or {}).items():
            if "int8_full" in m:  # quantization-aware weights: the float network and its int8-full artifact
                print(f"measured on {split} ({m['n_images']} images): pooled DSC {m['qat_float']['dsc']:.4f} in float, "
                      f"int8-full artifact {m['int8_full']['dsc']:.4f} (fp32 weights {m['teacher']['dsc']:.4f}, "
                      f"delta {m['int8_full_delta_dsc']:+.4f}, mask agreement {m['int8_full_agreement']:.4f})")
                continue
            print(f"measured on {split} ({m['n_images']} images): pooled mIoU {m['pooled']['miou']:.4f} "
                  f"DSC {m['pooled']['dsc']:.4f}, per-image mIoU {m['per_image']['miou']:.4f} "
                  f"DSC {m['per_image']['dsc']:.4f}")
        c = info["contract"]
        print(f"input: {c['input_dtype']} {c['channel_order']} {c['input_height']}x{c['input_width']}, "
              f"{c['normalization_formula']}; output: {c['output']}, {c['threshold_rule']} ({c['threshold']})")
    return 0


def cmd_train(args) -> int:
    from egeunet_deploy.model.train import TrainConfig, train

    if args.resume is None and args.data is None:
        raise ValueError("train needs --data DIR (or --resume RUN_DIR)")
    given = {k: v for k, v in (("lr", args.lr), ("t_max", args.t_max), ("augment", args.augment),
                               ("qat_ranges", args.qat_ranges), ("distill_logits", args.distill_logits))
             if v is not None}
    cfg = TrainConfig(data=str(args.data.resolve()) if args.data else "", epochs=args.epochs,
                      batch_size=args.batch_size, seed=args.seed, threads=args.threads, limit=args.limit,
                      skip_bad=args.skip_bad, qat=args.qat, **given,
                      init_weights=str(args.init_weights.resolve()) if args.init_weights else None,
                      teacher=str(args.teacher.resolve()) if args.teacher else None)
    out = args.resume or args.out
    train(cfg, out, resume=args.resume is not None, progress=not args.no_progress)
    return 0


def cmd_evaluate(args) -> int:
    from egeunet_deploy.model.evaluate import evaluate

    result = evaluate(args.weights, args.data, args.split, native=args.native, skip_bad=args.skip_bad,
                      progress=not args.no_progress, report=args.report)
    text = json.dumps(result, indent=2)
    if args.json:
        from egeunet_deploy.model.checkpoint import atomic_write_bytes

        atomic_write_bytes(args.json, text.encode())
    p, q = result["pooled"], result["per_image"]
    print(f"{result['n_images']} images of {args.data} [{args.split}] at {result['resolution']} resolution: "
          f"pooled mIoU {p['miou']:.4f}  DSC {p['dsc']:.4f}  acc {p['accuracy']:.4f}  sens {p['sensitivity']:.4f}  "
          f"spec {p['specificity']:.4f} | per-image mIoU {q['miou']:.4f}  DSC {q['dsc']:.4f}")
    print("by lesion size: " + "; ".join(
        f"{r['name']} n={r['n']} DSC {r['pooled']['dsc']:.4f} (missed {r['missed_pixels']} px, false "
        f"{r['false_pixels']} px)" for r in result["by_lesion_size"] if r["pooled"]))
    best, contract = result["threshold_sweep"]["best"], result["threshold_sweep"]["contract_threshold"]
    if best["threshold"] != contract:
        print(f"note: threshold {best['threshold']} would score pooled DSC {best['pooled_dsc']:.4f} here; every "
              f"artifact keeps the contract's {contract} (see threshold_sweep in the JSON)")
    if "report" in result:
        print(f"report: {result['report']['folder']} ({', '.join(result['report']['files'])})")
    return 0


def cmd_split(args) -> int:
    from egeunet_deploy.model.split import random_split

    try:
        fractions = tuple(float(f) for f in args.fractions.split(","))
    except ValueError:
        raise ValueError(f"--fractions must be three numbers like 0.7,0,0.3; got {args.fractions!r}") from None
    record = random_split(args.data, args.out, source_splits=tuple(args.source_splits.split(",")),
                          fractions=fractions, seed=args.seed, copy=args.copy, skip_bad=args.skip_bad)
    c = record["counts"]
    print(f"wrote {args.out}: train {c['train']}, val {c['val'] or 'same as test'}, test {c['test']} pairs "
          f"(seed {record['seed']}, {record['files']}); {record['note']}")
    return 0


def cmd_predict(args) -> int:
    from egeunet_deploy.model.predict import predict

    result = predict(args.weights, args.inputs, args.out, progress=not args.no_progress, skip_bad=args.skip_bad)
    for e in result.skipped:
        print(f"skipped {e}")
    print(f"wrote {len(result.written)} mask(s) and overlay(s) to {args.out}"
          + (f"; skipped {len(result.skipped)} unreadable image(s)" if result.skipped else ""))
    return 0
