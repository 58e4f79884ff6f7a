"""Training throughput: a naive PyTorch loop (as the official code trains) vs this toolkit's trainer, one run.

    python bench/train_speed.py [--data ../shared/data/isic2017] [--steps 20] [--threads 2] [--json FILE]

Naive = per-sample PIL decode in a DataLoader, numpy z-score + min-max, per-sample flips / rotation / resize,
contiguous NCHW tensors, sigmoid outputs with the official BCELoss + Dice, glibc's default malloc. Ours = ``egeunet
train``'s inner loop: the split decoded once to uint8, one batched augmentation call, channels_last with the training
fast paths (``use_training_fast_paths``), fused AdamW, the loss from logits, freed memory kept by malloc
(``keep_freed_memory``). Each loop runs in its own process (the malloc setting is process-wide, and a user's naive
script does not have it); a third process runs the naive loop with that setting, to show how much of the gap it is.
All three use the same model, optimizer, batch size, thread count and number of steps, one process at a time, in
rounds, so the ratio of a round is fair on a noisy machine. Prints img/s of each and the speed-ups; ``--json``
stores the figures.

Where a step's time went and what was tried (1 thread, batch 8, 256x256; before: channels_last + fused norms,
0.45-0.48 s per step, now ~0.35 s; per-op figures are forward+backward, measured while a training run shared the
machine, so +-20% and often more; kept only what won in an interleaved A/B):
- kept (``use_training_fast_paths``, ``recipe_loss(fast=True)``, fused AdamW):
  deep-supervision / final 1-channel upsampling as two matrix products (native backward 7-12 ms per
  8x1x256x256 map, matrix form 0.7-3.3 ms); the loss with a hand-written BCE+Dice backward (six maps: ~2x
  faster than autograd through the plain form, which was ~11% of a step); GAB1's 5-channel branches
  concatenated and LayerNorm'ed in NCHW with a hand-written backward, written straight into channels_last
  (F.layer_norm on the 5-wide NHWC view: 24 ms each; NCHW: 6-8 ms incl. the layout change), GAB1's x_high
  upsampled in NCHW by matrices (2.5x faster than native + layout copy); gradients of those layout changes sent
  back channels_last (with a plain .contiguous() the upstream GELU / max-pool backward ran mixed-layout: 30 ms
  lost); 1x1 convolutions as F.linear on the NHWC view (at 1 thread they fall to _slow_conv2d: 1.1-1.8x slower,
  exact same results); a hand-written backward for the 8x8x256x256 GroupNorm (native channels_last backward
  20-45 ms, this 15-20 ms); fused AdamW (9.8 -> 1.6 ms per step; foreach: 6.7 ms, bit-identical to the default);
  augmentation normalising on NHWC (no layout copy for the per-image min/max, bit-identical output).
- kept later (session 3, 1 thread, interleaved op-level A/B in process CPU time, a training run on the other core):
  glibc malloc told to keep freed memory (``train.keep_freed_memory``: each step had 4,000-6,600 page faults,
  9-13 ms of system time, now 0-1 ms; the 16 MB max-pool backward zero-fill was the visible symptom, 12 ms);
  the GroupNorm backward's element-wise part on a (pixels / 32, 256) view with tiled coefficients instead of
  (pixels, 8) with broadcast ones (an 8-wide innermost dimension barely vectorises: addcmul 4.5 -> 1.45 ms;
  backward 10.2 -> 7.3 ms, bit-identical).
  Whole loop after these, 1 thread, a training run on the other core: 1.81x (naive 9.5, ours 17.2 img/s; the
  machine was slower than for the quiet 2.17 / 1.97 / 1.83x runs). 2 threads could not be measured beside the
  training run: with one of the two threads sharing a core with it, every parallel region waits on the
  descheduled thread and 12 steps did not finish in 5 minutes; the quiet-machine figure (1.71x) stands. The
  serial floor of a step (Python, dispatch, autograd, measured on a 1x3x32x32 batch) is ~30 ms of ~350, which
  caps 2 threads at ~1.85x over 1 thread; our loop got 1.24x on a quiet machine, so the rest of the gap is in
  kernels (small maps, memory-bound element-wise ops). Profiled on a quiet machine in session 4 (torch.profiler,
  self CPU ms per step, 1 -> 2 threads): convolution backward 96 -> 58, oneDNN convolution 30 -> 22, LayerNorm
  forward 27 -> 16, copies 26 -> 15, cat 18 -> 13, bmm 20 -> 10, mm 17 -> 12, GroupNorm 14 -> 7; every op
  scales 1.3-2x except the LayerNorm backward, 20 -> 43 (fixed, see session 4 above); total 444 -> 319.
- no gain, not kept (session 3): the GroupNorm backward's channel sums as element-wise reductions on that wide
  view instead of bmm (2.5x slower: a reduction over the middle dimension); max-pool 2x2 as two cascaded
  ``torch.maximum`` of strided views with first-index tie-breaking (forward 1.6 vs 7.8 ms, but the backward's
  masked writes into strided halves made fwd+bwd 1.5-2x slower than native; with ``torch.where``, 7x slower);
  the GroupNorm forward on that wide view (4x slower than native); the first conv with its 3 input channels padded
  to 4 or 8 (slower); BCE's softplus as ``z - logsigmoid(z)`` or
  ``binary_cross_entropy_with_logits(reduction="sum")`` (same or slower); the loss's per-image dots as one
  ``mm`` + diagonal (0.46-0.61 vs 0.35 ms per map at 1 thread).
- kept (session 4, per-op A/B on a quiet machine; the whole step moved within this VM's 10-30% drift, 11 of 16
  interleaved 1-thread rounds faster, ~1-3%): LayerNorm weight/bias gradients on one thread when training at more
  (``layers._NhwcLayerNorm``: the native backward was the only op slower at 2 threads than at 1, 43 vs 20 ms per
  step, its weight/bias part 14.5 vs 4.8 ms at 8x128x128x20); GAB's dilated depthwise backward as a forward
  convolution with the flipped kernel plus the undilated weight gradient over d*d phase images
  (``layers._DilatedDepthwiseConv``: 6.5-10 ms -> 4-6 ms per 8x5x128x128 call, 3.0-3.5 -> 1.0-1.5 ms at 8x9x64x64).
- no gain, not kept (session 4): data parallelism over the two cores (2 DDP processes x 1 thread, 4 images each:
  25-27 img/s against 25-29 for one process at 2 threads); bf16 autocast (AMX is present; 9.3 vs 14.7 img/s on the
  plain path: the narrow convolutions gain nothing and every norm pays dtype conversions).
- no gain, not kept: that LayerNorm by GEMMs on the NHWC view (12 ms at 5 channels, slower from 20 on); the NCHW
  branch path for GAB2/GAB3 (9/13 channels: no measurable gain) and for GAB1's 20-channel tail (2x slower);
  torch.var_mean over dim 1 (50x slower than mean + square); multi-channel channels_last upsampling by matrices
  (slower than native when in and out stay channels_last); GroupNorm in NCHW for the 256x256 stage (2x slower:
  layout copies, NCHW max-pool); GroupNorm forward statistics by GEMMs, one- or two-pass (no faster, less
  exact); GroupNorm folded behind the max-pool (3x slower); depthwise convs in NCHW (3-6x slower); dilated
  depthwise convs as d*d phase images, as one 20-channel conv per dilation, or their weight gradient as a
  large-kernel conv (all slower: the layout copies or the extra work cost more than oneDNN's dilated kernel);
  augmentation by gathering uint8 pixels (bit-identical, but 1.4x slower than the batched grid_sample);
  flush-denormal (no change).
- kept (session 5): the first stage's GroupNorm + max-pool as one autograd function (``layers._GroupNormMaxPool``):
  the GroupNorm backward's sums over the pooled map only, ``dx`` as one fused multiply-add of ``x`` plus a scatter at
  the maxima, no zero-filled full-size gradient, no saved normalised map (16 MB less per step). That stage's
  forward+backward, 8 paired rounds at 1 thread: 51-56 -> 45-57 ms, median ratio 0.91, so ~5 ms of a step. It
  took over from the standalone GroupNorm backward of session 3, removed in session 6: at the contract's 256x256
  no other GroupNorm map is large enough to use it.
  Benchmark (session 5): each loop in its own process, the naive one with glibc's default malloc. Before, the
  naive loop ran in ours' process and so had our malloc setting; measured in one run, that setting makes the naive
  loop 3-10% faster.
- no gain, not kept (session 5): ``torch.compile`` (inductor) of the plain channels_last model with the plain loss:
  225 s to compile, then 480-520 ms per step against 360 ms for the uncompiled fast paths; the 3x3 convolutions'
  input gradient as a forward convolution with the transposed, flipped kernel (same time as oneDNN's backward,
  4.2 vs 4.2 ms at 8x8->16 @128); 1x1 convolutions as batched ``baddbmm`` (its backward avoids a slow
  131072x8 @ 8x20 GEMM, 3.9 vs 1.4 ms, but the whole forward+backward was slower for 7 of 10 layer shapes).
- left on the fast path (~0.35 s per step): GAB1's dilated depthwise convs (~30 ms, mostly oneDNN's dilated
  weight gradient), the 8x8x256x256 GroupNorm + max-pool (~30 ms), channels_last cat of narrow tensors (~16 ms),
  GAB1's 20-channel tail LayerNorm (~16 ms), augmentation (~12 ms), the six 256x256 loss maps (~15 ms).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from egeunet_deploy.model import create_model
from egeunet_deploy.model.augment import augment_batch
from egeunet_deploy.model.checkpoint import atomic_write_bytes
from egeunet_deploy.model.data import find_pairs, load_pairs
from egeunet_deploy.model.layers import use_training_fast_paths
from egeunet_deploy.model.train import keep_freed_memory, recipe_loss
from egeunet_deploy.runtimes.base import host_info
from egeunet_deploy.runtimes.bench import CONTENTION_WARN_CORES, ContentionMeter

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "isic2017"


class NaiveDataset(torch.utils.data.Dataset):
    """What the official NPY_datasets + transforms do per sample (with our stem pairing)."""

    def __init__(self, pairs) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i):
        pair = self.pairs[i]
        img = np.array(Image.open(pair.image).convert("RGB"), dtype=np.float64)
        msk = np.array(Image.open(pair.mask).convert("L"))[..., None] / 255.0
        img = (img - 159.922) / 28.871
        img = (img - img.min()) / (img.max() - img.min()) * 255.0
        x = torch.tensor(img).permute(2, 0, 1)
        y = torch.tensor(msk).permute(2, 0, 1)
        if random.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        if random.random() < 0.5:
            x, y = x.flip(-2), y.flip(-2)
        if random.random() < 0.5:
            a = random.uniform(0, 2 * math.pi)
            theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]],
                                 dtype=x.dtype)[None]
            grid = F.affine_grid(theta, [1, 1, *x.shape[1:]], align_corners=False)
            x = F.grid_sample(x[None], grid, mode="nearest", align_corners=False)[0]
            y = F.grid_sample(y[None], grid, mode="nearest", align_corners=False)[0]
        x = F.interpolate(x[None], size=(256, 256), mode="bilinear", antialias=True)[0]
        y = F.interpolate(y[None], size=(256, 256), mode="bilinear", antialias=True)[0]
        return x.float(), y.float()


def official_loss(ds_probs, prob, target):
    def bce_dice(p, t):
        n = p.shape[0]
        p, t = p.view(n, -1), t.view(n, -1)
        dice = 1 - ((2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).sum() / n
        return F.binary_cross_entropy(p, t) + dice

    weights = (0.1, 0.2, 0.3, 0.4, 0.5)
    return bce_dice(prob, target) + sum(w * bce_dice(p, target) for w, p in zip(weights, ds_probs, strict=True))


LOOPS = {
    "naive": "a naive PyTorch loop with glibc's default malloc, as a user's script runs it",
    "naive_kept_memory": "the same naive loop with this toolkit's malloc setting (keep_freed_memory)",
    "ours": "egeunet train's inner loop",
}


def _naive_loop(pairs, batch: int):
    net = create_model("egeunet")
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    loader = torch.utils.data.DataLoader(NaiveDataset(pairs), batch_size=batch, shuffle=True, num_workers=0)
    batches = iter(())

    def steps(n: int) -> None:
        nonlocal batches
        for _ in range(n):
            try:
                x, y = next(batches)
            except StopIteration:
                batches = iter(loader)
                x, y = next(batches)
            ds, prob = net(x)
            loss = official_loss(ds, prob, y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return steps, 0.0


def _our_loop(pairs, batch: int):
    t0 = time.perf_counter()
    data = load_pairs(pairs)
    decode_seconds = time.perf_counter() - t0
    images, masks = torch.from_numpy(data.images), torch.from_numpy(data.masks)
    net = use_training_fast_paths(create_model("egeunet").to(memory_format=torch.channels_last))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2, fused=True)
    gen = torch.Generator().manual_seed(0)

    def steps(n: int) -> None:
        for _ in range(n):
            idx = torch.randint(0, len(images), (batch,), generator=gen)
            x, y = augment_batch(images[idx], masks[idx], gen)
            ds, logits = net.forward_logits(x)
            loss = recipe_loss(ds, logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return steps, decode_seconds


def _worker(loop: str, pairs, batch: int, threads: int, conn) -> None:
    """One loop in its own process: the naive one must not inherit our process-wide settings (malloc, threads)."""
    if threads:
        torch.set_num_threads(threads)
    if loop != "naive":
        keep_freed_memory()  # process-wide, as `egeunet train` does
    steps, decode_seconds = (_our_loop if loop == "ours" else _naive_loop)(pairs, batch)
    steps(2)  # warm-up
    conn.send(decode_seconds)
    while (n := conn.recv()) is not None:
        start, cpu = time.perf_counter(), time.process_time()
        steps(n)
        conn.send((n * batch / (time.perf_counter() - start), time.process_time() - cpu))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=6, help="run the loops in turn this many times")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    batch = 8
    pairs, _ = find_pairs(args.data, "train")
    pairs = pairs[: batch * args.steps * 2]

    ctx = mp.get_context("spawn")
    conns, procs = {}, []
    for loop in LOOPS:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(loop, pairs, batch, args.threads, child), daemon=True)
        proc.start()
        conns[loop] = parent
        procs.append(proc)
    decode_seconds = {loop: conn.recv() for loop, conn in conns.items()}["ours"]  # all built and warmed up

    meter = ContentionMeter()
    speeds: dict[str, list[float]] = {loop: [] for loop in LOOPS}
    workers_cpu = 0.0  # the workers' CPU time while measured is ours, not contention
    for r in range(args.rounds):
        # This VM's speed drifts by 10-30% within a minute: the loops run back to back, one at a time, in an order
        # that flips every round, so each round's ratios are fair even when the absolute figures move.
        for loop in (list(LOOPS) if r % 2 == 0 else list(LOOPS)[::-1]):
            conns[loop].send(args.steps)
            img_per_s, cpu_seconds = conns[loop].recv()
            speeds[loop].append(img_per_s)
            workers_cpu += cpu_seconds
    contention = meter.stop(workers_cpu)
    for conn in conns.values():
        conn.send(None)
    for proc in procs:
        proc.join()

    ratios = {base: [o / n for n, o in zip(speeds[base], speeds["ours"], strict=True)]
              for base in ("naive", "naive_kept_memory")}

    result = {"threads": args.threads or torch.get_num_threads(), "batch": batch, "steps_per_round": args.steps,
              "rounds": args.rounds, "loops": LOOPS,
              **{f"{loop}_img_per_s": float(np.median(v)) for loop, v in speeds.items()},
              "one_time_decode_s": decode_seconds, "decoded_images": len(pairs),
              "round_ratios": ratios["naive"], "speedup": float(np.median(ratios["naive"])),
              "round_ratios_vs_naive_kept_memory": ratios["naive_kept_memory"],
              "speedup_vs_naive_kept_memory": float(np.median(ratios["naive_kept_memory"])),
              "others_busy_cores": contention, "host": host_info()}
    epoch = 1999
    for loop in LOOPS:
        v = result[f"{loop}_img_per_s"]
        print(f"{loop:18s}: {v:6.1f} img/s  ({epoch / v:.0f} s/epoch)  {LOOPS[loop]}")
    print(f"one-time decode   : {decode_seconds:.1f} s for {len(pairs)} images (ours only)")
    host = result["host"]
    print(f"host              : {host['cpu']}, {host['cpu_count']} cores, {' '.join(host['cpu_features'])}")
    for base, key in (("naive", "speedup"), ("naive_kept_memory", "speedup_vs_naive_kept_memory")):
        rs = ratios[base]
        print(f"speed-up vs {base:18s}: {result[key]:.2f}x  ({result['threads']} threads, median of {args.rounds} "
              f"rounds, range {min(rs):.2f}-{max(rs):.2f}x)")
    busy = contention.get("other_processes_cores")
    if busy is not None and busy > CONTENTION_WARN_CORES:
        print(f"warning: other processes kept {busy:.2f} cores busy during this run: the figures are not a quiet "
              f"machine's; stop other work for figures to publish.")
    if args.json:
        atomic_write_bytes(args.json, json.dumps(result, indent=2).encode())


if __name__ == "__main__":
    main()
