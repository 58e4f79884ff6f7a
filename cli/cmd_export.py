"""Sub-commands of the export part: ``export`` (one target or all) and ``calibrate`` (the int8 calibration set).

The CLI mirrors the API: ``egeunet export --target tflite --precision int8`` calls the same
``egeunet_deploy.export.export(...)`` a Python user calls. Target and precision are validated there (not with
argparse ``choices``) so that a typo gets the same close-match hint from both; the help is written from the target
table (``export/targets.py``, cheap to import), so a new target or precision appears in it without an edit here.
"""

from __future__ import annotations

import json
from pathlib import Path

from egeunet_deploy.export.targets import TARGETS, Precision

from .args import NO_PROGRESS_HELP, comma_names, path_arg

DEFAULT_OUT = Path("out/export")


def register(sub) -> None:
    """Add the export sub-commands to the ``egeunet`` parser."""
    p = sub.add_parser("export", help=f"export {' / '.join(t.title for t in TARGETS.values())} artifacts "
                                      f"({', '.join(Precision)}) with metadata")
    p.set_defaults(handler=cmd_export)
    p.add_argument("--weights", type=path_arg, default=None,
                   help="weights file (toolkit checkpoint or official state_dict); default: the shipped weights "
                        "(for int8-full: the shipped quantization-aware fine-tune)")
    p.add_argument("--target", default=None, metavar="TARGET",
                   help=f"{', '.join(TARGETS)}, all, or a comma-separated list (several: a table, failures "
                        "isolated); required unless --list")
    p.add_argument("--precision", default=None, metavar="PRECISION",
                   help="; ".join(f"{p}: {p.help} [{', '.join(t.name for t in TARGETS.values() if p in t.precisions)}]"
                                  for p in Precision)
                        + "; or a comma-separated list (default fp32 for one target, every precision each target "
                          "has with several)")
    p.add_argument("--calib", type=path_arg, default=None, metavar="CALIB",
                   help="calibration set from `egeunet calibrate` (int8, int8-full); default: built from the bundled "
                        "sample")
    p.add_argument("--out", type=path_arg, default=DEFAULT_OUT, metavar="DIR",
                   help=f"output folder (default {DEFAULT_OUT}); an artifact of the same name there is replaced "
                        "(atomically) and manifest.json updated")
    p.add_argument("--raw", action="store_true",
                   help="bare network: float input already min-max normalised (0..255), NCHW unless --nhwc "
                        "(default: uint8 image in, preprocessing in the graph)")
    p.add_argument("--nhwc", action="store_true",
                   help="NHWC input/output for ONNX (default: NCHW for ONNX; TFLite and Core ML are always NHWC)")
    p.add_argument("--dynamic-batch", action="store_true", help="dynamic batch axis, ONNX only (default: batch 1)")
    p.add_argument("--no-blame", action="store_true",
                   help="int8: skip the int8 blame ranking (on by default here: quantize one block at a time, rank "
                        "by the Dice it costs; stored in the artifact's metadata and <artifact>.blame.json)")
    p.add_argument("--blame-data", type=path_arg, default=None, metavar="DIR",
                   help="dataset with masks for the blame ranking (default: the bundled sample's 32 test pairs; "
                        "then --blame-split does not apply)")
    p.add_argument("--blame-split", default=None, metavar="SPLIT",
                   help="split of --blame-data to rank on (default val; only with --blame-data)")
    p.add_argument("--list", action="store_true", help="print the format table and exit")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)

    p = sub.add_parser("calibrate", help="build the int8 calibration set from real training images")
    p.set_defaults(handler=cmd_calibrate)
    p.add_argument("--data", type=path_arg, required=True, metavar="DIR",
                   help="dataset root (official, ISIC or flat layout); required")
    p.add_argument("--split", default="train",
                   help="split to draw from (default train; test is refused unless --force)")
    p.add_argument("--num", type=int, default=200, metavar="N",
                   help="number of images (default 200; all if fewer exist)")
    p.add_argument("--seed", type=int, default=0, help="seed of the stratified draw (default 0)")
    p.add_argument("--out", type=path_arg, required=True, metavar="CALIB",
                   help="output file (.npz); replaced (atomically) if it exists; required")
    p.add_argument("--force", action="store_true",
                   help="allow the test split (leaks test data into int8 ranges; default: refused)")
    p.add_argument("--skip-bad", action="store_true",
                   help="pass over unpaired or unreadable files, listing them (also in the set's manifest)")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def cmd_export(args) -> int:
    from egeunet_deploy.export import export, export_all, export_formats
    from egeunet_deploy.export.targets import CALIBRATED

    if args.list:
        for row in export_formats():
            state = "available" if row["available"] else f"unavailable: {row['reason']}"
            extra = "; ".join(f"{k} needs {v}" for k, v in row["os_only"].items())
            print(f"{row['target']:7s} {row['suffix']:11s} {','.join(row['precisions']):22s} "
                  f"options {','.join(row['options']) or '-':24s} {state}{'; ' + extra if extra else ''}")
        return 0
    if args.target is None:
        raise ValueError(f"export needs --target {', '.join(TARGETS)} or all (see --list)")
    targets = comma_names(args.target, "--target")
    names = comma_names(args.precision, "--precision")
    precisions = [Precision.parse(p) for p in names] if names else None  # the edge: members from here on
    if args.blame_split is not None and args.blame_data is None:
        raise ValueError("--blame-split applies to --blame-data; without --blame-data the blame ranking uses the "
                         "bundled sample's test pairs")
    blame_split = args.blame_split or "val"
    from .console import ExportLog

    log = ExportLog(progress=not args.no_progress)
    several = "all" in targets or len(targets) > 1 or (precisions is not None and len(precisions) > 1)
    building = precisions or (None if several else [Precision.FP32])  # None: every precision, int8 included
    if args.calib is not None and building is not None and not any(p.calibrated for p in building):
        raise ValueError(f"--calib is used by {', '.join(CALIBRATED)} only, and this export builds "
                         f"{', '.join(building)}; add --precision int8")
    if several:
        if args.raw or args.nhwc or args.dynamic_batch:
            raise ValueError("--raw, --nhwc and --dynamic-batch apply to one artifact; use them with one --target "
                             "and one --precision")
        results = export_all(weights=args.weights, out_dir=args.out, calib=args.calib,
                             targets=None if "all" in targets else targets, precisions=precisions,
                             blame=not args.no_blame, blame_data=args.blame_data, blame_split=blame_split,
                             log=log)
        log.finish()
        for r in results:
            if r.status == "ok" and r.precision is Precision.INT8_FULL:
                ethos_u_step(r.path)
        failed = [r for r in results if r.status == "failed"]
        return 1 if failed else 0
    path = export(targets[0], building[0], weights=args.weights, out_dir=args.out,
                  calib=args.calib, raw=args.raw, nhwc=args.nhwc, dynamic_batch=args.dynamic_batch,
                  blame=not args.no_blame, blame_data=args.blame_data, blame_split=blame_split, log=log)
    log.finish()
    from egeunet_deploy.export.metadata import artifact_digest

    sha, size = artifact_digest(path)
    print(f"wrote {path} ({size / 1024:.1f} KB, sha256 {sha[:12]}...); manifest: {path.parent / 'manifest.json'}")
    if building[0] is Precision.INT8_FULL:
        ethos_u_step(path)
    return 0


def ethos_u_step(path: Path) -> None:
    """The full-integer artifact compiled for Arm Ethos-U by Vela (offline), when Vela is installed: the compiled
    models and Vela's figures in ``<out>/ethos-u/``, its estimates in the manifest, one line per configuration."""
    from egeunet_deploy.export.metadata import annotate_manifest
    from egeunet_deploy.runtimes import vela

    ok, why = vela.is_available()
    if not ok:
        print(f"ethos-u: not compiled ({why})")
        return
    results = vela.compile_all(path, out_dir=path.parent / "ethos-u")
    keep = ("config", "ops_npu", "ops_total", "npu_share", "sram_kib", "flash_kib", "dram_kib", "inference_ms",
            "macs", "cpu_op_types")
    annotate_manifest(path.parent, path.name, {"ethos_u": [{k: r.get(k) for k in keep} for r in results],
                                               "ethos_u_note": vela.ESTIMATE_LABEL})
    for r in results:
        print(f"ethos-u {r['config']}: {r['ops_npu']}/{r['ops_total']} ops on the NPU ({100 * r['npu_share']:.1f}%), "
              f"SRAM {r['sram_kib']:.0f} KiB, {r['inference_ms']:.1f} ms ({vela.ESTIMATE_LABEL}); "
              f"compiled model in {path.parent / 'ethos-u'}")


def cmd_calibrate(args) -> int:
    from egeunet_deploy.calibration import build_calibration_set, calibration_sha256, load_calibration_set

    path = build_calibration_set(args.data, args.out, split=args.split, num=args.num, seed=args.seed,
                                 force=args.force, progress=not args.no_progress, skip_bad=args.skip_bad)
    images, manifest = load_calibration_set(path)
    for line in manifest["source"]["skipped"]:
        print(f"skipped {line}")
    cov, samp = manifest["coverage"], manifest["sampling"]
    print(f"wrote {path}: {len(images)} contract images (uint8 {images.shape[1]}x{images.shape[2]}) from "
          f"{manifest['source']['data']} [{manifest['source']['split']}], {samp['strategy']}, seed {samp['seed']}; "
          f"sha256 {calibration_sha256(path)[:12]}...")
    if "lesion_fraction_quantiles" in cov:
        print("lesion area fraction quantiles: " + json.dumps(cov["lesion_fraction_quantiles"]))
    if samp["num"] < samp["num_requested"]:
        print(f"note: {samp['num_requested']} requested, the split has {manifest['source']['available']}: took all")
    return 0
