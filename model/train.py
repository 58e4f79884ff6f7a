"""The paper's training recipe, fast on a CPU, resumable after any interruption, and DDP-ready.

Recipe (paper, section 3, and the official config): BCE + Dice on the output and on the five deep-supervision maps
(weights 1, 0.5, 0.4, 0.3, 0.2, 0.1), AdamW (lr 1e-3, weight decay 1e-2), CosineAnnealingLR (T_max 50,
eta_min 1e-5) stepped once per epoch, batch 8, 256 x 256, random horizontal/vertical flips and rotation.
Opt-in, not the paper's: ``augment="strong"`` (colour, gamma, saturation, zoom, shift; see augment.py) and
``init_weights`` for fine-tuning; the shipped weights are a paper-recipe run fine-tuned with both (MODEL_CARD.md).

Why it is fast: the split is decoded once into a uint8 tensor; augmentation is one batched ``grid_sample``;
the network runs channels_last with the training fast paths of :func:`layers.use_training_fast_paths` (fused
channel LayerNorms, NCHW narrow GAB branches, 1x1 convolutions as GEMMs, faster GroupNorm and dilated depthwise
backwards, single-channel upsampling as matrix products, one backward for the first GroupNorm + max-pool), the loss
has a hand-written backward, AdamW is fused, malloc keeps freed memory (:func:`keep_freed_memory`: no page faults per
step); ``torch.compile`` measured no gain and costs minutes to compile (re-measured with torch 2.13: 480-520 ms per
step for the plain channels_last model compiled, after 225 s of compiling; 360 ms for these fast paths).
``bench/train_speed.py`` measures it against a naive loop.

Why resume is exact: everything random in an epoch (the shuffle, every flip and angle) comes from a generator seeded
by (seed, epoch, rank), and ``last.pt`` is written atomically at the end of every epoch with the model, optimizer,
scheduler and history. A run killed mid-epoch restarts that epoch from its beginning and reaches bit-identical
weights (``tests/test_train.py`` kills one with SIGKILL to prove it).
"""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import io
import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import DS_WEIGHTS
from .augment import AUGMENTATIONS, augment_batch
from .checkpoint import atomic_torch_save, atomic_write_bytes, load_state_strict, read_checkpoint, sha256_file
from .contract import CONTRACT, minmax_normalize
from .data import LoadedSet, load_split
from .ege_unet import EGEUNet, create_model, model_from_cfg
from .layers import resize_bilinear, use_fused_norms, use_training_fast_paths
from .metrics import Confusion, dice
from .qat import RANGE_MODES, QATNet, distillation_logits, range_images

CHECKPOINT_VERSION = 1
DEFAULT_EPOCHS = 300  # the paper's
QAT_MODEL = "egeunet_int"  # what a QAT run trains: sigmoid GELU, half-pixel upsampling (integer kernels everywhere)


@dataclass
class TrainConfig:
    data: str = ""
    epochs: int | None = None  # None: 300 for a new run, the run's own number when resuming
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-2
    t_max: int = 50
    eta_min: float = 1e-5
    seed: int = 42
    model: str = "egeunet"
    train_split: str = "train"
    val_split: str = "val"
    threads: int = 0  # 0: all cores (divided among DDP ranks)
    channels_last: bool = True
    limit: int | None = None  # use only the first N train/val pairs (tests, smoke runs)
    augment: str = "paper"  # "strong" adds colour, gamma, saturation, zoom and shift (augment.py); not the paper's
    init_weights: str | None = None  # start from these weights (fine-tuning) instead of the seeded initialisation
    qat: bool = False  # quantization-aware fine-tune of the integer variant, distilled from the teacher (model/qat.py)
    teacher: str | None = None  # QAT: the fp32 weights distilled from (None: init_weights)
    qat_ranges: str = "extremes"  # QAT activation ranges: "extremes" (the export's, per epoch) or "ema" (model/qat.py)
    distill_logits: float = 0.0  # QAT: weight of a logit-matching term (mean squared logit difference, clamped)
    skip_bad: bool = False
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        """Refuse settings that cannot train, all at once and before any image is decoded."""
        bad = [f"{name} {value!r} {rule}" for name, value, ok, rule in (
            ("--epochs", self.epochs, self.epochs is None or self.epochs >= 1, "must be at least 1"),
            ("--batch-size", self.batch_size, self.batch_size >= 1, "must be at least 1"),
            ("--lr", self.lr, self.lr > 0, "must be positive"),
            ("--t-max", self.t_max, self.t_max >= 1, "must be at least 1"),
            ("eta_min", self.eta_min, self.eta_min >= 0, "must not be negative"),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0, "must not be negative"),
            ("--threads", self.threads, self.threads >= 0, "must be 0 (all cores) or more"),
            ("--limit", self.limit, self.limit is None or self.limit >= 1, "must be at least 1"),
            ("--augment", self.augment, self.augment in AUGMENTATIONS,
             f"is unknown; choose {', '.join(AUGMENTATIONS)}"),
            ("--qat", self.qat, not self.qat or bool(self.init_weights),
             "needs --init-weights (the fp32 weights it starts from and is distilled from)"),
            ("--teacher", self.teacher, self.teacher is None or self.qat, "is for --qat runs only"),
            ("--distill-logits", self.distill_logits,
             self.distill_logits >= 0 and (self.qat or not self.distill_logits), "must be >= 0, and is for --qat only"),
            ("--qat-ranges", self.qat_ranges, self.qat_ranges in RANGE_MODES,
             f"is unknown; choose {', '.join(RANGE_MODES)}"),
        ) if not ok]
        if bad:
            raise ValueError("; ".join(bad))


def bce_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The official BceDiceLoss (BCE averaged over pixels + 1 - per-sample smoothed Dice), from logits."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    dice = (2 * (prob * t).sum(1) + 1) / (prob.sum(1) + t.sum(1) + 1)
    return bce + 1 - dice.mean()


class _BceDiceFromLogits(torch.autograd.Function):
    """:func:`bce_dice` with a hand-written backward (training fast path, ``recipe_loss(fast=True)``).

    Autograd through the plain form keeps a dozen full-size intermediates per map and the loss of six 8x1x256x256
    maps took 47 ms forward+backward, 11% of a step; this computes the same value in four passes and the gradient
    ``(p - t) / numel + p (1 - p) dDice/dp`` in four more (~3x faster). BCE as ``softplus(z) - z t``, the same
    function as ``binary_cross_entropy_with_logits`` (whose ``(1 - t) z - logsigmoid(z)`` is the same expression).
    """

    @staticmethod
    def forward(ctx, logits, target):
        n = logits.shape[0]
        z, t = logits.reshape(n, -1), target.reshape(n, -1)
        prob = torch.sigmoid(z)
        # sums as dot products (one read pass each, no full-size temporaries)
        z_dot_t = torch.dot(z.reshape(-1), t.reshape(-1))
        inter = torch.stack([torch.dot(p_i, t_i) for p_i, t_i in zip(prob, t, strict=True)])  # (bmm: 8x slower)
        bce = (F.softplus(z).sum() - z_dot_t) / z.numel()
        denom = prob.sum(1) + t.sum(1) + 1
        dice = (2 * inter + 1) / denom
        ctx.save_for_backward(prob, t, inter, denom)
        ctx.shape = logits.shape
        return bce + 1 - dice.mean()

    @staticmethod
    def backward(ctx, grad):
        prob, t, inter, denom = ctx.saved_tensors
        n, m = prob.shape
        # d(-mean dice)/dp = ((2 inter + 1) / denom^2 - 2 t / denom) / n per sample, times sigmoid' = p (1 - p);
        # d bce/dz = (p - t) / numel. The scalar upstream gradient is folded into the coefficients.
        d_logits = torch.addcmul((grad * (2 * inter + 1) / (n * denom * denom))[:, None], t,
                                 (-2 * grad / (n * denom))[:, None])
        d_logits.mul_(prob)
        d_logits.addcmul_(d_logits, prob, value=-1)
        scale = grad / (n * m)
        d_logits.addcmul_(prob - t, scale)
        return d_logits.view(ctx.shape), None


def recipe_loss(ds_logits: list[torch.Tensor], logits: torch.Tensor, target: torch.Tensor,
                fast: bool = True) -> torch.Tensor:
    """Eq. (2): weighted BceDice over the output and the deep-supervision maps (coarse-to-fine list).

    The maps are upsampled to the target as the official model does (bilinear, align_corners=True). ``fast``
    (training) upsamples by matrix products and uses :class:`_BceDiceFromLogits`: the same value and gradient to
    float rounding (``tests/test_train.py``), ~3x cheaper.
    """
    loss_fn = _BceDiceFromLogits.apply if fast else bce_dice
    loss = DS_WEIGHTS[0] * loss_fn(logits, target)
    # the finest map gets 0.5 ... the coarsest 0.1
    for weight, ds in zip(DS_WEIGHTS[1 : len(ds_logits) + 1], reversed(ds_logits), strict=True):
        loss = loss + weight * loss_fn(resize_bilinear(ds, target.shape[2:], fast=fast), target)
    return loss


LOGIT_CLAMP = 8.0
"""Logits beyond +-8 (probabilities beyond 0.9997 / 0.0003) count as equal in :func:`logit_distance`."""


def logit_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the output logits, each clamped to +-LOGIT_CLAMP: a distillation term that keeps
    pulling pixels near the decision boundary to the teacher's side (where the BCE against a probability near 0.5
    barely pushes), without chasing the saturated logits of the background."""
    return (student.clamp(-LOGIT_CLAMP, LOGIT_CLAMP) - teacher.clamp(-LOGIT_CLAMP, LOGIT_CLAMP)).square().mean()


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the kernel (training only).

    A step allocates and frees the same large buffers every time (a 8x8x256x256 map is 16 MB); by default glibc
    gives many back (mmap for large blocks, heap trimming), and the next step pays 4,000-6,600 page faults for fresh
    zeroed pages: measured 9-13 ms of system time per 0.35 s step at 1 thread, 0-1 ms with blocks up to 256 MB
    taken from the heap and freed heap kept up to 1 GB. Process-wide, no effect on results, the peak footprint is
    the same. Returns False where it does not apply (not glibc).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc <malloc.h>
    return bool(mallopt(m_mmap_threshold, 256 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def epoch_generator(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1009 + rank)


def _model_batch(images, channels_last: bool = True) -> torch.Tensor:
    """uint8 NHWC contract images (numpy or tensor) -> the normalised NCHW model input."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(images)
    x = minmax_normalize(x.permute(0, 3, 1, 2))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict_masks(net: EGEUNet, data: LoadedSet, batch_size: int = 32, channels_last: bool = True) -> torch.Tensor:
    """``net``'s thresholded masks (bool, N x H x W) on an in-memory set at model resolution."""
    net.eval()
    out = []
    for i in range(0, len(data), batch_size):
        prob = torch.sigmoid(net.forward_logits(_model_batch(data.images[i : i + batch_size], channels_last))[1])
        out.append(prob[:, 0] >= CONTRACT.threshold)
    return torch.cat(out)


@torch.no_grad()
def evaluate_loaded(net: EGEUNet, data: LoadedSet, batch_size: int = 32, channels_last: bool = True,
                    reference: torch.Tensor | None = None) -> dict:
    """Pooled metrics (official definition) of ``net`` on an in-memory set at model resolution; with
    ``reference`` (a teacher's masks, :func:`predict_masks`), also ``agreement``, the Dice of the two mask sets."""
    masks = predict_masks(net, data, batch_size, channels_last)
    conf = Confusion()
    for i in range(0, len(data), batch_size):
        conf.add(masks[i : i + batch_size].numpy(), data.masks[i : i + batch_size])
    summary = conf.summary()
    if reference is not None:
        summary["agreement"] = dice(masks.numpy(), reference.numpy())  # the drift report's mask agreement
    return summary


class _Interrupt:
    """Turns SIGTERM into KeyboardInterrupt so a polite kill is handled like Ctrl-C."""

    def __enter__(self):
        self._old = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(*_):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self._old)
        return False


def init_provenance(path: Path | str, checkpoint: dict | None = None) -> dict:
    """What a fine-tune starts from: the file, its sha256 and epoch, and the recipe of the run that made it.

    Recorded once, when the fine-tune starts, and kept in its ``last.pt`` across resumes: the parent run may train on
    (or replace its ``best.pt``) before the fine-tune is shipped, so reading the parent at ship time could describe
    other weights. The recipe comes from the file itself (a ``last.pt``), from the ``last.pt`` beside it (a
    ``best.pt``) or from the training record of shipped weights. ``checkpoint``: the file already read, if it was.
    """
    path = Path(path)
    init = checkpoint if checkpoint is not None else read_checkpoint(path)
    shown = os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd()) else str(path)
    record = {"file": shown, "sha256": sha256_file(path), "epoch": init.get("epoch")}
    parent_last = path.parent / "last.pt"
    if "train_cfg" in init or parent_last.is_file():
        run = init if "train_cfg" in init else read_checkpoint(parent_last)
        cfg = run["train_cfg"]
        record.update(augment=cfg.get("augment", "paper"), lr=cfg["lr"], t_max=cfg["t_max"], epochs_run=run["epoch"])
    elif "training" in init:  # shipped weights (model/ship.py)
        t = init["training"]
        record.update(epoch=t["epoch"], augment=t.get("augment", "paper"), lr=t["lr"], t_max=t["t_max"],
                      epochs_run=t["epochs_run"])
    return record


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _setup_distributed() -> None:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)


def train(cfg: TrainConfig, out_dir: Path | str, resume: bool = False, progress: bool = True,
          log=print) -> dict:
    """Train (or resume) a run in ``out_dir``; returns the final history record. Safe to interrupt at any point."""
    out_dir = Path(out_dir)
    cfg.check()  # before anything is set up or decoded
    _setup_distributed()
    rank, world = _dist_info()
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    keep_freed_memory()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")

    last_path = out_dir / "last.pt"
    state = None
    if resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"nothing to resume: {last_path} does not exist")
        state = read_checkpoint(last_path)  # a damaged file gets a message naming it, not a traceback
        if "train_cfg" not in state or "optimizer" not in state:
            raise ValueError(f"{last_path} holds weights but no training state (optimizer, schedule, recipe); "
                             f"start a new run from it with --init-weights {last_path}")
        saved = state["train_cfg"]
        if cfg.epochs is None:
            cfg.epochs = saved["epochs"]
        defaults = TrainConfig()
        if saved.get("qat") and "qat_ranges" not in saved:
            saved = {**saved, "qat_ranges": "ema"}  # a QAT run from before the range modes: it trained with ema
        for key in ("data", "batch_size", "lr", "weight_decay", "t_max", "eta_min", "seed", "model", "limit",
                    "augment", "init_weights", "qat", "teacher", "qat_ranges", "distill_logits"):
            given = getattr(cfg, key)
            if key in saved and saved[key] != given:
                if given != getattr(defaults, key):
                    log(f"resume: keeping the run's {key}={saved[key]!r} (ignoring {given!r})")
                setattr(cfg, key, saved[key])
    elif last_path.exists():
        raise FileExistsError(f"{out_dir} already holds a run; pass --resume {out_dir} or choose another --out")
    if cfg.epochs is None:
        cfg.epochs = DEFAULT_EPOCHS
    if state is not None and cfg.epochs < state["epoch"]:
        raise ValueError(f"--epochs {cfg.epochs} is below the {state['epoch']} epochs {out_dir} has already run")
    if state is not None and cfg.epochs == state["epoch"]:
        log(f"{out_dir} has already run all {cfg.epochs} epochs; give --epochs N (more than {cfg.epochs}) to extend it")
        if dist.is_initialized():
            dist.destroy_process_group()
        return state["history"][-1] if state["history"] else {}

    torch.manual_seed(cfg.seed)  # model initialisation
    if cfg.qat and cfg.model == TrainConfig.model:
        cfg.model = QAT_MODEL  # QAT trains the integer variant (sigmoid GELU, half-pixel upsampling)
    net = create_model(cfg.model)
    started_from = None  # a fine-tune's starting point, recorded now (init_provenance); a resume reads it back
    teacher = None
    distilled_from = None  # a QAT run's teacher, recorded when it starts (init_provenance); a resume reads it back
    if cfg.init_weights and (state is None or cfg.qat):
        init = read_checkpoint(cfg.init_weights)
        if state is None:
            started_from = init_provenance(cfg.init_weights, init)
            load_state_strict(net, init["state_dict"], cfg.init_weights)
            log(f"starting from the weights in {cfg.init_weights}")
        if cfg.qat:  # the fp32 reference the integer network learns to reproduce (--teacher, else --init-weights)
            teacher_path = cfg.teacher or cfg.init_weights
            teacher_ckpt = init if teacher_path == cfg.init_weights else read_checkpoint(teacher_path)
            if state is None:
                distilled_from = (started_from if teacher_path == cfg.init_weights
                                  else init_provenance(teacher_path, teacher_ckpt))
                if teacher_path != cfg.init_weights:
                    log(f"distilling from the weights in {teacher_path}")
            teacher = model_from_cfg(teacher_ckpt.get("model_cfg", {}))
            load_state_strict(teacher, teacher_ckpt["state_dict"], teacher_path)
            teacher = use_fused_norms(teacher.to(device).to(memory_format=torch.channels_last).eval())
    net = net.to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
        if not cfg.qat:  # the fused training paths hide the ops QAT must quantize one by one
            net = use_training_fast_paths(net)
    # fused: one kernel per parameter instead of ~10 Python-dispatched ops (9.8 -> 1.6 ms per step for 314 small
    # tensors); the same AdamW update to float rounding (3e-8 after 5 steps). A resumed run keeps the flag it was saved
    # with (load_state_dict restores param_groups), so a run's own resume stays bit-exact.
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.t_max, eta_min=cfg.eta_min)
    history: list[dict] = []
    start_epoch, best_dsc = 1, -1.0
    # what picks best.pt: val DSC; a QAT run with the export's ranges: val mask agreement with the teacher, the
    # figure the int8-full artifact is judged on (a QAT run from before keeps DSC, as it started with)
    select = "agreement" if cfg.qat and cfg.qat_ranges == "extremes" else "dsc"
    best_score = -1.0
    if state is not None:
        started_from = state.get("started_from")
        distilled_from = state.get("distilled_from", started_from)
        load_state_strict(net, state["state_dict"], str(last_path))
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history, start_epoch, best_dsc = state["history"], state["epoch"] + 1, state["best_dsc"]
        select = state.get("select", "dsc")
        best_score = state.get("best_score", best_dsc)
        log(f"resumed {out_dir} at epoch {start_epoch} (best val {select} so far {best_score:.4f})")
    trained: torch.nn.Module = net
    if cfg.qat:
        trained = QATNet(net, {int(k): v.clone() for k, v in (state or {}).get("qat_observers", {}).items()},
                         ranges=cfg.qat_ranges)
    model: torch.nn.Module = _LogitsView(trained)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    # validation first: it is the smaller split, so a missing or broken one is reported before minutes of decoding
    val_set = load_split(cfg.data, cfg.val_split, skip_bad=cfg.skip_bad, progress=progress and rank == 0,
                         limit=cfg.limit) if rank == 0 else None
    train_set = load_split(cfg.data, cfg.train_split, skip_bad=cfg.skip_bad, progress=progress and rank == 0,
                           limit=cfg.limit)
    if train_set.masks is None:
        raise ValueError(f"{cfg.data}: the {cfg.train_split} split has no masks; training needs them")
    for s in [*train_set.skipped, *(val_set.skipped if val_set is not None else [])]:
        log(f"skipped {s.path}: {s.reason}")
    images, masks = torch.from_numpy(train_set.images), torch.from_numpy(train_set.masks)
    range_inputs = None
    if cfg.qat and cfg.qat_ranges == "extremes":  # the export's calibration images, as model inputs
        range_inputs = _model_batch(range_images(), cfg.channels_last).to(device)
        if not trained.observers:  # a new run; a resumed one has the ranges its last epoch ended with
            trained.calibrate(range_inputs)
            log(f"QAT activation ranges: the float network's extremes over the export's default calibration set "
                f"({len(range_inputs)} ISIC 2017 train images; {len(trained.observers)} quantized ops), recomputed "
                "after every epoch")
    val_reference = None
    if teacher is not None and rank == 0:  # the teacher's val masks, for the agreement of every epoch
        val_reference = predict_masks(teacher, val_set, channels_last=cfg.channels_last)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
        log(f"training {cfg.model} on {len(train_set)} {cfg.train_split} images, validating on {len(val_set)} "
            f"{cfg.val_split} images; {world} process(es) x {threads} thread(s); epochs {start_epoch}..{cfg.epochs}")

    with _Interrupt():
        try:
            for epoch in range(start_epoch, cfg.epochs + 1):
                t0 = time.time()
                gen = epoch_generator(cfg.seed, epoch)
                order = torch.randperm(len(train_set), generator=gen)[rank::world]
                aug_gen = epoch_generator(cfg.seed, epoch, rank + 1)
                steps = math.ceil(len(order) / cfg.batch_size)
                if world > 1:  # every rank must run the same number of steps for DDP's all-reduce
                    steps = len(train_set) // world // cfg.batch_size or 1
                model.train()
                total, seen = 0.0, 0
                bar = range(steps)
                if progress and rank == 0:
                    from tqdm import tqdm

                    bar = tqdm(bar, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False)
                for step in bar:
                    idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                    x, y = augment_batch(images[idx], masks[idx], aug_gen, strong=cfg.augment == "strong")
                    x, y = x.to(device), y.to(device)
                    if teacher is not None:  # QAT: the target is the fp32 reference's probability map
                        teacher_logits = distillation_logits(teacher, x)
                        y = torch.sigmoid(teacher_logits)
                    ds_logits, logits = model(x)
                    loss = recipe_loss(ds_logits, logits, y)
                    if teacher is not None and cfg.distill_logits:
                        loss = loss + cfg.distill_logits * logit_distance(logits, teacher_logits)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(idx)
                    seen += len(idx)
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix(loss=f"{total / seen:.4f}")
                train_seconds = time.time() - t0
                lr = opt.param_groups[0]["lr"]
                sched.step()
                if range_inputs is not None:  # the ranges the export would calibrate for these weights
                    trained.calibrate(range_inputs)
                if rank == 0:
                    val = evaluate_loaded(trained, val_set, channels_last=cfg.channels_last, reference=val_reference)
                    record = {"epoch": epoch, "loss": total / max(seen, 1), "lr": lr, "val_miou": val["miou"],
                              "val_dsc": val["dsc"], "seconds": time.time() - t0,
                              "img_per_s": seen * world / train_seconds}
                    if "agreement" in val:
                        record["val_agreement"] = val["agreement"]
                    history.append(record)
                    score = val[select]
                    is_best = score > best_score
                    best_score = max(best_score, score)
                    best_dsc = max(best_dsc, val["dsc"])
                    _save(out_dir, net, opt, sched, cfg, epoch, best_dsc, history, is_best, started_from,
                          trained.observer_state() if cfg.qat else None, distilled_from=distilled_from,
                          select=select, best_score=best_score)
                    agreement = f"  agreement {val['agreement']:.4f}" if "agreement" in val else ""
                    log(f"epoch {epoch}: loss {record['loss']:.4f}  val mIoU {val['miou']:.4f}  DSC {val['dsc']:.4f}"
                        f"{agreement}{'  (best)' if is_best else ''}  {record['seconds']:.0f}s  "
                        f"train {record['img_per_s']:.1f} img/s")
                if world > 1:
                    dist.barrier()
            if world > 1:
                _check_replicas_in_sync(net, log if rank == 0 else (lambda *_: None))
        except KeyboardInterrupt:
            if rank == 0:
                log(f"interrupted; {last_path} holds the last complete epoch. Resume with: "
                    f"egeunet train --resume {out_dir}")
            raise
        finally:
            if world > 1:
                dist.destroy_process_group()
    return history[-1] if history else {}


def _check_replicas_in_sync(net: EGEUNet, log) -> None:
    """DDP must leave every rank with the same weights; a silent desync would make rank 0's checkpoint a lie."""
    checksum = torch.stack([p.detach().double().sum() for p in net.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    values = [float(g) for g in gathered]
    if max(values) - min(values) > 1e-9 * max(1.0, abs(values[0])):
        raise RuntimeError(f"DDP replicas diverged: parameter checksums {values}")
    log(f"DDP: {len(values)} replicas in sync (parameter checksum {values[0]:.6f})")


class _LogitsView(torch.nn.Module):
    """Calls ``forward_logits`` through ``__call__``, which is where DDP hooks its gradient all-reduce."""

    def __init__(self, net: EGEUNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        return self.net.forward_logits(x)


def _save(out_dir: Path, net: EGEUNet, opt, sched, cfg: TrainConfig, epoch: int, best_dsc: float,
          history: list[dict], is_best: bool, started_from: dict | None = None,
          qat_observers: dict | None = None, distilled_from: dict | None = None, select: str = "dsc",
          best_score: float | None = None) -> None:
    state_dict = {k: v.contiguous() for k, v in net.state_dict().items()}
    model_cfg = {**asdict(net.cfg), "c_list": list(net.cfg.c_list)}
    base = {"format": "egeunet-deploy checkpoint", "version": CHECKPOINT_VERSION, "model_cfg": model_cfg,
            "contract": CONTRACT.to_dict(), "epoch": epoch}
    if qat_observers is not None:  # a QAT run's activation ranges (resume continues them exactly) and its teacher
        base["qat_observers"] = qat_observers
        base["distilled_from"] = distilled_from if distilled_from is not None else started_from
    if is_best:
        atomic_torch_save({**base, "state_dict": state_dict, "val": history[-1]}, out_dir / "best.pt")
    atomic_torch_save({**base, "state_dict": state_dict, "optimizer": opt.state_dict(),
                       "scheduler": sched.state_dict(), "train_cfg": asdict(cfg), "best_dsc": best_dsc,
                       "history": history, "started_from": started_from, "select": select,
                       "best_score": best_dsc if best_score is None else best_score}, out_dir / "last.pt")
    write_logs(out_dir, history)


def write_logs(out_dir: Path, history: list[dict]) -> None:
    """log.json, log.csv and curves.png, each replaced atomically."""
    atomic_write_bytes(out_dir / "log.json", json.dumps(history, indent=1).encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_bytes(out_dir / "log.csv", buf.getvalue().encode())
    plot_curves(history, out_dir / "curves.png")


def plot_curves(history: list[dict], path: Path) -> None:
    from .figures import plt, save_png

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(ep, [h["loss"] for h in history], label="train loss")
    a.set_xlabel("epoch")
    a.set_ylabel("BCE+Dice (deep supervision)")
    a.legend()
    b.plot(ep, [h["val_dsc"] for h in history], label="val DSC")
    b.plot(ep, [h["val_miou"] for h in history], label="val mIoU")
    if all("val_agreement" in h for h in history):
        b.plot(ep, [h["val_agreement"] for h in history], label="val agreement with teacher")
    b.set_xlabel("epoch")
    b.legend()
    fig.tight_layout()
    save_png(fig, path, dpi=100)
