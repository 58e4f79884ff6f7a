"""A seeded random train/val/test split of existing splits, written as the official layout.

Why: the paper's ISIC 2017 figures come from a random 7:3 split of the challenge's 2,150 training + validation
images, not from the official test split (which is harder). ``egeunet split`` rebuilds such a split so that
``egeunet train`` / ``evaluate`` can be run under the paper's protocol and compared with its table, while the
official split stays the default everywhere else.

The split is a folder ``<out>/{train,val,test}/{images,masks}`` of links to (or copies of) the original files plus
``split.json`` (seed, fractions, sources and the stems of every split), so it is reproducible and auditable. With no
validation share, ``val`` points at ``test``: that is the official code's protocol (it selects its best epoch on the
test set, which flatters the figure) and ``split.json`` says so.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .checkpoint import current_umask
from .data import DataError, Pair, find_pairs
from .interrupts import raise_if_interrupted

SPLITS = ("train", "val", "test")


def split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Pairs per split for ``n`` pairs; fractions are normalised, train and val rounded, test takes the rest."""
    if len(fractions) != 3 or min(fractions) < 0 or fractions[0] <= 0 or fractions[2] <= 0:
        raise ValueError(f"fractions must be train,val,test with train > 0, test > 0, val >= 0; got {fractions}")
    total = sum(fractions)
    n_train = round(n * fractions[0] / total)
    n_val = round(n * fractions[1] / total)
    if n_train < 1 or n - n_train - n_val < 1 or (fractions[1] > 0 and n_val < 1):
        raise DataError(f"{n} pairs are too few for fractions {fractions}: every split needs at least one pair")
    return n_train, n_val, n - n_train - n_val


def _gather(root: Path, source_splits: tuple[str, ...], skip_bad: bool) -> list[Pair]:
    pairs: dict[str, Pair] = {}
    for split in source_splits:
        found, _ = find_pairs(root, split, skip_bad=skip_bad)
        for p in found:
            if p.mask is None:
                raise DataError(f"{p.image}: a split for training and evaluation needs masks; {split!r} has none")
            if p.stem in pairs:
                raise DataError(f"stem {p.stem!r} is in more than one source split: {pairs[p.stem].image} and "
                                f"{p.image}; links in one folder would collide")
            pairs[p.stem] = p
    return [pairs[s] for s in sorted(pairs)]


def _place(src: Path, dst: Path, copy: bool) -> None:
    if copy:
        shutil.copy2(src, dst)
    else:
        os.symlink(src.resolve(), dst)


def random_split(root: Path | str, out: Path | str, *, source_splits: tuple[str, ...] = ("train", "val"),
                 fractions: tuple[float, float, float] = (0.7, 0.0, 0.3), seed: int = 0, copy: bool = False,
                 skip_bad: bool = False) -> dict:
    """Write a seeded random split of ``source_splits`` under ``root`` to ``out``; returns what ``split.json`` holds.

    The folder is built beside ``out`` and renamed into place, so an interrupted call leaves no half-made split.
    """
    root, out = Path(root), Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose a new --out (a split is never overwritten)")
    pairs = _gather(root, tuple(source_splits), skip_bad)
    counts = split_counts(len(pairs), tuple(float(f) for f in fractions))
    order = np.random.default_rng(seed).permutation(len(pairs))
    bounds = np.cumsum((0,) + counts)
    chosen = {name: sorted((pairs[i] for i in order[bounds[k]:bounds[k + 1]]), key=lambda p: p.stem)
              for k, name in enumerate(SPLITS)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide the split from other users
        for name in ("train", "test") + (("val",) if counts[1] else ()):
            for kind in ("images", "masks"):
                (tmp / name / kind).mkdir(parents=True)
            for p in chosen[name]:
                _place(p.image, tmp / name / "images" / p.image.name, copy)
                _place(p.mask, tmp / name / "masks" / p.mask.name, copy)
        if not counts[1]:
            os.symlink("test", tmp / "val")
        record = {
            "source": str(root.resolve()), "source_splits": list(source_splits), "seed": seed,
            "fractions": list(fractions), "counts": dict(zip(SPLITS, counts, strict=True)),
            "files": "copies" if copy else "links",
            "val_is_test": not counts[1],
            "note": ("val is test: best-epoch selection on the test set, as the official code does (optimistic)"
                     if not counts[1] else "val and test are disjoint"),
            "stems": {name: [p.stem for p in chosen[name]]
                      for name, count in zip(SPLITS, counts, strict=True) if count},
        }
        (tmp / "split.json").write_text(json.dumps(record, indent=1))
        raise_if_interrupted()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record
