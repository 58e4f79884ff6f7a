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
