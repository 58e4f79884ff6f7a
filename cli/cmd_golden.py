"""``egeunet golden``: write the golden vectors the Android app's Kotlin tests check themselves against."""

from __future__ import annotations

import argparse

from .args import path_arg


def register(sub) -> None:
    """Add the ``golden`` sub-command to the ``egeunet`` parser."""
    p = sub.add_parser("golden", help="golden vectors (native pixels, model input, probabilities, masks) for the "
                                      "Android app's tests")
    p.set_defaults(handler=cmd_golden)
    p.add_argument("--out", type=path_arg, required=True, metavar="DIR",
                   help="folder to write (the app's copy: android_demo/core/src/test/resources/golden); required")
    p.add_argument("--weights", type=path_arg, default=None,
                   help="weights file (toolkit checkpoint or official state_dict); default: the shipped weights")
    p.add_argument("--num", type=int, default=2, metavar="N",
                   help="real ISIC images from the bundled sample (default 2; the shrink, mixed and constant cases "
                        "are always added)")


def cmd_golden(args: argparse.Namespace) -> int:
    from egeunet_deploy.export.golden import write_golden

    manifest = write_golden(args.out, args.weights, args.num, progress=lambda name: print(f"  {name}"))
    files = sorted(p for p in manifest.parent.iterdir() if p.is_file())
    size = sum(p.stat().st_size for p in files)
    print(f"wrote {len(files)} files ({size / 1024:.0f} KB) to {manifest.parent}")
    return 0
