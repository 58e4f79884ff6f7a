"""Argument parsing shared by the sub-commands."""

from __future__ import annotations

import argparse
from pathlib import Path


def path_arg(text: str) -> Path:
    """A path option that refuses the empty string: ``Path("")`` is the current folder, so ``--out ''`` (an unset
    shell variable) would otherwise spill files into wherever the command was run."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (is a shell variable unset?)")
    return Path(text)


def comma_names(text: str | None, option: str) -> list[str] | None:
    """'onnx,tflite' -> ['onnx', 'tflite']; None when the option was not given. An empty entry ('', 'onnx,,tflite')
    is refused rather than dropped: it is a typo, and dropping it could turn the list into 'everything'."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",")]
    if "" in names:
        raise ValueError(f"{option} {text!r} has an empty entry; give comma-separated names like onnx,tflite")
    return names


NO_PROGRESS_HELP = "no progress bars (default: bars when stderr is a terminal, plain lines otherwise)"

THREADS_MEANING = "0 means all of this host's CPU cores"
"""What ``--threads 0`` means in every command that takes it (train, drift, bench, deploy)."""


def thread_count(text: str) -> int:
    """One ``--threads`` value: a positive count, or 0 for all of this host's cores (kept as 0: the consumer fills
    it in, e.g. train divides the cores among its processes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a whole number ({THREADS_MEANING}); got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"takes 0 (all cores) or a positive count; got {value}")
    return value


def all_cores() -> int:
    import os

    return os.cpu_count() or 1


def thread_counts(text: str, option: str = "--threads") -> list[int]:
    """A comma-separated ``--threads`` list ('1,2', '0') with 0 read as all of this host's cores; the rest of the
    checks (positive, distinct, at most the cores) are the runtimes' (``runtimes.bench.parse_threads``)."""
    entries = [t.strip() for t in str(text).split(",")]
    if "" in entries:
        raise ValueError(f"{option} {text!r} has an empty entry; give comma-separated counts like 1,2 "
                         f"({THREADS_MEANING})")
    try:
        values = [int(t) for t in entries]
    except ValueError:
        raise ValueError(f"{option} takes comma-separated whole numbers like 1,2 ({THREADS_MEANING}); "
                         f"got {text!r}") from None
    cores = all_cores()
    resolved = [cores if v == 0 else v for v in values]
    if 0 in values and len(set(resolved)) != len(resolved):
        raise ValueError(f"{option} {text!r}: 0 means all {cores} cores of this host, which the list already has")
    return resolved
