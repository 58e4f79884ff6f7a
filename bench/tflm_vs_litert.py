"""Does TensorFlow Lite Micro compute the masks LiteRT computes from the same full-integer file? And if not, why?

    python bench/tflm_vs_litert.py ARTIFACT.tflite [--data ../shared/data/isic2017] [--split test] [--limit N]
                                   [--json FILE] [--trace-image I]

Issue 17 asks TFLite Micro's masks to agree with LiteRT's on the same ``int8-full`` file at >= 0.999. This runs the
file through four kernel sets, each a real runner: TFLite Micro (its reference kernels, ``--runtime tflm``), LiteRT
with XNNPACK (what a phone runs), LiteRT's builtin optimised kernels and LiteRT's reference kernels (the portable
kernels TFLite Micro derives from). It prints the mask agreement (Dice of the thresholded maps, as ``egeunet drift``)
and the share of bit-identical probabilities for every pair, and the five least-agreeing images.

``--trace-image I`` also follows image I op by op through LiteRT's builtin and reference kernels (both keep every
tensor): for each op whose int8 output differs, the largest and the mean difference in quantization steps. It shows
where one-step rounding differences between kernels start and how the graph's requantisations grow them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np

from egeunet_deploy.model.data import load_split
from egeunet_deploy.model.metrics import dice
from egeunet_deploy.runtimes import runner_class_for
from egeunet_deploy.runtimes.base import prepare_input, read_spec

KERNELS = {  # name -> (runner backend, options)
    "tflm": ("tflm", {}),
    "litert_xnnpack": ("litert", {"delegate": "xnnpack"}),
    "litert_builtin": ("litert", {"delegate": "none"}),
    "litert_reference": ("litert", {"delegate": "reference"}),
}


def run_all(path: Path, images: np.ndarray) -> tuple[dict, dict]:
    probs, seconds = {}, {}
    for name, (backend, options) in KERNELS.items():
        runner = runner_class_for(path, backend)(threads=1, **options).load(path)
        start = time.perf_counter()
        probs[name] = runner.run(images, progress=sys.stderr.isatty(), desc=name)
        seconds[name] = time.perf_counter() - start
        runner.close()
    return probs, seconds


def pairwise(probs: dict) -> list[dict]:
    rows = []
    for a, b in combinations(probs, 2):
        ma, mb = probs[a] >= 0.5, probs[b] >= 0.5
        per_image = [dice(x, y) for x, y in zip(ma, mb, strict=True)]
        worst = np.argsort(per_image)[:5]
        rows.append({"a": a, "b": b, "agreement": round(dice(ma, mb), 5),
                     "identical_probabilities": round(float(np.mean(probs[a] == probs[b])), 4),
                     "worst_images": [(int(i), round(float(per_image[i]), 4)) for i in worst]})
    return rows


def trace(path: Path, image: np.ndarray) -> list[dict]:
    """Op-by-op int8 differences between LiteRT's builtin and reference kernels on one image."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    x = prepare_input(image[None], read_spec(path))
    its = []
    for resolver in (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES, OpResolverType.BUILTIN_REF):
        it = Interpreter(model_path=str(path), num_threads=1, experimental_op_resolver_type=resolver,
                         experimental_preserve_all_tensors=True)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        its.append(it)
    rows = []
    for op in its[0]._get_ops_details():
        for t in op["outputs"]:
            a, b = (it.get_tensor(t).astype(np.float64) for it in its)
            d = np.abs(a - b)
            if d.size and d.max() > 0:
                rows.append({"op": int(op["index"]), "type": op["op_name"], "max_steps": float(d.max()),
                             "mean_steps": round(float(d.mean()), 4), "differing": round(float((d > 0).mean()), 4)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/isic2017"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--trace-image", type=int, default=None)
    args = ap.parse_args()
    images = load_split(args.data, args.split, limit=args.limit).images
    probs, seconds = run_all(args.artifact, images)
    rows = pairwise(probs)
    print(f"{args.artifact} on {len(images)} {args.split} images")
    for r in rows:
        print(f"{r['a']:17} vs {r['b']:17} agreement {r['agreement']:.4f}  identical {r['identical_probabilities']:.3f}"
              f"  worst {r['worst_images'][:3]}")
    result = {"artifact": str(args.artifact), "split": args.split, "images": len(images),
              "seconds": {k: round(v, 1) for k, v in seconds.items()}, "pairs": rows}
    if args.trace_image is not None:
        steps = trace(args.artifact, images[args.trace_image])
        result["trace"] = {"image": args.trace_image, "ops": steps}
        print(f"image {args.trace_image}: {len(steps)} op outputs differ between builtin and reference kernels; "
              f"first {steps[0]['type'] if steps else '-'} (op {steps[0]['op'] if steps else '-'}), largest "
              f"{max((s['max_steps'] for s in steps), default=0):.0f} steps")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
