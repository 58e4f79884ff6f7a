"""Saving and loading weights and training state, atomically, with clear errors for wrong files.

A checkpoint is written to a temporary file in the same folder, fsynced, then renamed over the old one, so a kill at
any moment leaves either the previous complete file or the new complete file, never a torn one.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .bundled import DEFAULT_WEIGHTS
from .ege_unet import EGEUNet, ModelCfg, model_from_cfg
from .interrupts import raise_if_interrupted


class WeightsError(ValueError):
    """A weights file that is missing, unreadable, or made for another architecture."""


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write through a temporary file in the same folder, fsynced, then renamed over ``path``.

    OS errors name ``path``, the file the user asked for, not the hidden temporary one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise type(e)(e.errno, e.strerror, str(path)) from None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        raise_if_interrupted()
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None:
            raise type(e)(e.errno, e.strerror, str(path)) from None
        raise


def atomic_replace_folder(path: Path | str, fill: Callable[[Path], None]) -> None:
    """Build a folder through ``fill(staged)`` beside ``path`` (``staged`` does not exist yet), then swap it in whole:
    ``path`` holds the previous complete folder until the swap and the new complete one after it, never a mix.

    For folder outputs (a Core ML package, a drift report). An error or Ctrl-C in ``fill``, or a Ctrl-C a library
    swallowed on the way, leaves the previous folder as it was and no temporary folder behind.
    """
    path = Path(os.path.abspath(path))  # a name to stage under, even for "."
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        staged = tmpdir / path.name
        fill(staged)
        raise_if_interrupted()
        if path.exists():
            os.rename(path, tmpdir / "previous")
        os.rename(staged, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set back at once): files and folders made through
    temporary names get the permissions a plain ``open`` / ``mkdir`` would have given them."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_torch_save(obj, path: Path | str) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint(path: Path | str) -> dict:
    """Load a file written by this toolkit (``{"state_dict", "model_cfg", ...}``) or a bare official state_dict."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path} is a folder; give the weights file inside it (e.g. best.pt)")
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own text suggests weights_only=False: unsafe advice for a stray file
        raise WeightsError(f"{path}: not a readable PyTorch weights file (not a pickle of tensors and plain "
                           "values; weights are loaded with torch.load(weights_only=True), which never runs "
                           "code from the file)") from None
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        first = first if len(first) <= 160 else first[:157] + "..."
        raise WeightsError(f"{path}: not a readable PyTorch weights file ({type(e).__name__}: {first})") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        return obj
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        return {"state_dict": obj["model"], **{k: v for k, v in obj.items() if k != "model"}}
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"state_dict": obj}  # a bare state_dict, e.g. from the official repository
    raise WeightsError(f"{path}: no state_dict inside (keys: {list(obj)[:8] if isinstance(obj, dict) else type(obj)})")


def load_state_strict(net: nn.Module, state_dict: dict, source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names missing, unexpected and mis-shaped keys."""
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}  # DDP-saved files
    own = net.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state_dict) if tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or shapes:
        parts = []
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", shapes)):
            if items:
                shown = ", ".join(items[:6]) + (f", ... ({len(items)} in all)" if len(items) > 6 else "")
                parts.append(f"{title}: {shown}")
        arch = getattr(net, "cfg", "")
        raise WeightsError(f"{source} does not fit EGE-UNet {arch}: " + "; ".join(parts))
    broken = sorted(k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if broken:
        shown = ", ".join(broken[:6]) + (f", ... ({len(broken)} in all)" if len(broken) > 6 else "")
        raise WeightsError(f"{source}: NaN or infinite values in {shown}; the model would output NaN (a diverged "
                           "training run?). Use an earlier checkpoint.")
    net.load_state_dict(state_dict, strict=True)


def load_model(weights: Path | str | None = None, cfg: ModelCfg | None = None) -> tuple[EGEUNet, dict]:
    """Build the model a weights file was trained with and load it strictly. ``None`` means the shipped weights.

    Returns the model in eval mode and the checkpoint record (with ``path`` and ``sha256`` added).
    """
    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    ckpt = read_checkpoint(path)
    if cfg is not None:
        net = EGEUNet(**cfg.__dict__)
    elif "model_cfg" in ckpt:
        net = model_from_cfg(ckpt["model_cfg"])
    else:
        net = EGEUNet()  # official checkpoints carry no config: the paper's default
    load_state_strict(net, ckpt["state_dict"], str(path))
    ckpt["path"] = str(path.resolve())
    ckpt["sha256"] = sha256_file(path)
    return net.eval(), ckpt
