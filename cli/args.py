"""Argument types shared by every sub-command."""

from __future__ import annotations

import argparse
from pathlib import Path


def path_arg(text: str) -> Path:
    """A path option that refuses the empty string: ``Path("")`` is the current folder, so ``--out ''`` (an unset
    shell variable) would otherwise spill files into wherever the command was run."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (is a shell variable unset?)")
    return Path(text)
