"""Finding, pairing and loading segmentation datasets (ISIC and friends).

Three layouts are understood:

- official EGE-UNet: ``<root>/<split>/images`` + ``<root>/<split>/masks``;
- ISIC challenge: ``<root>/*<Split>*_Input`` (or ``*_Data``) + ``<root>/*<Split>*_GroundTruth`` folders;
- flat: ``<root>/images`` + ``<root>/masks`` (no split).

Images and masks are paired by file stem (``ISIC_0000000.jpg`` <-> ``ISIC_0000000_segmentation.png``), never by
sort order: the official loader pairs two ``os.listdir`` results by position, which silently mis-pairs as soon as
one file is missing. Anything that cannot be paired or decoded is an error that names the files, unless the caller
asks to skip bad pairs, in which case what was skipped is returned and reported.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .contract import INPUT_HW, resize_mask, resize_rgb
from .imageio import IMAGE_EXTENSIONS, ImageReadError, read_mask, read_rgb

MASK_SUFFIXES = ("", "_segmentation", "_Segmentation", "_lesion", "_mask")
MASK_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SPLIT_ALIASES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}


class DataError(ValueError):
    """A dataset problem (layout, pairing, decoding, sizes). The message lists every offending file."""


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path | None
    stem: str


@dataclass
class Skipped:
    path: Path
    reason: str


@dataclass
class LoadedSet:
    """A split decoded once into memory at the model's input size (uint8, contract step 2)."""

    images: np.ndarray  # (N, H, W, 3) uint8
    masks: np.ndarray | None  # (N, H, W) uint8 {0, 1}, None for image-only sets
    names: list[str]
    sources: list[Path]
    native_sizes: list[tuple[int, int]]  # (H, W) of each file before resizing
    native_masks: list[np.ndarray] | None = None  # only when asked for (evaluation at native resolution)
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def split_matches(folder_name: str, split: str) -> bool:
    """Whether a folder's name names ``split`` as a whole word or alias ("ISIC-2017_Test_v2_Data" is test)."""
    words = re.split(r"[^a-z]+", folder_name.lower())
    return any(alias in words for alias in SPLIT_ALIASES.get(split, (split,)))


def resolve_layout(root: Path | str, split: str | None) -> tuple[Path, Path | None]:
    """Return (images_dir, masks_dir) for ``split`` under ``root``; masks_dir is None if there are no masks."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    if split and (root / split / "images").is_dir():
        masks = root / split / "masks"
        return root / split / "images", masks if masks.is_dir() else None
    inputs = [d for d in root.iterdir() if d.is_dir() and re.search(r"_(input|data)$", d.name, re.I)]
    truths = [d for d in root.iterdir() if d.is_dir() and re.search(r"_groundtruth$", d.name, re.I)]
    if inputs:
        if split:
            inputs = [d for d in inputs if split_matches(d.name, split)]
            truths = [d for d in truths if split_matches(d.name, split)]
        if len(inputs) != 1 or len(truths) > 1:
            found = ", ".join(sorted(d.name for d in inputs)) or "none"
            raise DataError(f"{root}: ISIC layout needs exactly one *_Input folder for split {split!r}; found: {found}")
        return inputs[0], (truths[0] if truths else None)
    if (root / "images").is_dir():
        masks = root / "masks"
        return root / "images", masks if masks.is_dir() else None
    hint = f"'{split}/images' + '{split}/masks'" if split else "'images/' + 'masks/'"
    raise DataError(f"{root}: no dataset layout found (looked for {hint}, ISIC '*_Input' + '*_GroundTruth', "
                    f"or flat 'images/' + 'masks/')")


def _mask_stem(mask: Path, image_stems: set[str]) -> str | None:
    stem = mask.stem
    for suffix in sorted(MASK_SUFFIXES, key=len, reverse=True):
        if suffix and stem.endswith(suffix) and stem[: -len(suffix)] in image_stems:
            return stem[: -len(suffix)]
    return stem if stem in image_stems else None


def pair_files(images_dir: Path, masks_dir: Path | None, skip_bad: bool = False) -> tuple[list[Pair], list[Skipped]]:
    """Pair images with masks by stem. Unpaired or ambiguous files raise :class:`DataError` unless ``skip_bad``."""
    images = sorted(p for p in images_dir.iterdir() if _is_image(p))
    if not images:
        raise DataError(f"{images_dir}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)})")
    by_stem: dict[str, list[Path]] = {}
    for p in images:
        by_stem.setdefault(p.stem, []).append(p)
    problems: list[Skipped] = [Skipped(p, f"several images share the stem '{s}'")
                               for s, ps in by_stem.items() if len(ps) > 1 for p in ps]
    if masks_dir is None:
        pairs = [Pair(ps[0], None, s) for s, ps in by_stem.items() if len(ps) == 1]
        return _finish(pairs, problems, skip_bad)
    masks_for: dict[str, list[Path]] = {}
    for m in sorted(p for p in masks_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
        if m.suffix.lower() not in MASK_EXTENSIONS:
            continue
        stem = _mask_stem(m, set(by_stem))
        if stem is None:
            problems.append(Skipped(m, "mask without an image (no image with a matching stem)"))
        else:
            masks_for.setdefault(stem, []).append(m)
    pairs = []
    for stem, ps in by_stem.items():
        ms = masks_for.get(stem, [])
        if len(ps) > 1:
            continue
        if not ms:
            problems.append(Skipped(ps[0], f"image without a mask (looked in {masks_dir} for {stem}"
                                           f"{{{','.join(MASK_SUFFIXES)}}}.png/jpg/bmp/gif)"))
        elif len(ms) > 1:
            problems.append(Skipped(ps[0], f"several masks match: {', '.join(m.name for m in ms)}"))
        else:
            pairs.append(Pair(ps[0], ms[0], stem))
    return _finish(pairs, problems, skip_bad)


def _finish(pairs: list[Pair], problems: list[Skipped], skip_bad: bool) -> tuple[list[Pair], list[Skipped]]:
    if problems and not skip_bad:
        raise DataError(describe_problems(problems, "pairing failed"))
    if not pairs:
        raise DataError(describe_problems(problems, "no usable image/mask pairs") if problems else "no usable pairs")
    return sorted(pairs, key=lambda p: p.stem), problems


def describe_problems(problems: list[Skipped], what: str, limit: int = 20) -> str:
    """``what`` and every problem file with its reason, one per line (the first ``limit``)."""
    lines = [f"  {p.path}: {p.reason}" for p in problems[:limit]]
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{what} ({len(problems)} problem(s); pass --skip-bad to skip them):\n" + "\n".join(lines) + more


def find_pairs(root: Path | str, split: str | None = None, skip_bad: bool = False):
    images_dir, masks_dir = resolve_layout(root, split)
    return pair_files(images_dir, masks_dir, skip_bad)


def _decode(pair: Pair, hw: tuple[int, int], keep_native: bool):
    img = read_rgb(pair.image)
    native = (img.height, img.width)
    mask = mask_native = None
    if pair.mask is not None:
        mask_native = read_mask(pair.mask)
        if mask_native.shape != native:
            raise ImageReadError(pair.mask, f"mask is {mask_native.shape[1]}x{mask_native.shape[0]} but image "
                                            f"{pair.image.name} is {native[1]}x{native[0]} (W x H)")
        mask = resize_mask(mask_native, hw)
    return resize_rgb(img, hw), mask, native, (mask_native if keep_native else None)


def load_pairs(
    pairs: list[Pair],
    hw: tuple[int, int] = INPUT_HW,
    skip_bad: bool = False,
    keep_native: bool = False,
    progress: bool = False,
    desc: str = "decode",
    skipped: list[Skipped] | None = None,
) -> LoadedSet:
    """Decode pairs (threaded: PIL releases the GIL) into one in-memory uint8 set at the model size."""
    skipped = list(skipped or [])
    results: list = [None] * len(pairs)
    errors: list[Skipped] = []

    def work(i: int) -> None:
        try:
            results[i] = _decode(pairs[i], hw, keep_native)
        except ImageReadError as e:
            errors.append(Skipped(e.path, e.reason))

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        it = pool.map(work, range(len(pairs)))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(pairs), desc=desc, unit="img", leave=False)
        for _ in it:
            pass
    if errors and not skip_bad:
        raise DataError(describe_problems(sorted(errors, key=lambda s: str(s.path)), "cannot read the dataset"))
    skipped += errors
    keep = [i for i, r in enumerate(results) if r is not None]
    if not keep:
        raise DataError(describe_problems(skipped, "no readable pairs"))
    has_masks = all(pairs[i].mask is not None for i in keep)
    return LoadedSet(
        images=np.stack([results[i][0] for i in keep]),
        masks=np.stack([results[i][1] for i in keep]) if has_masks else None,
        names=[pairs[i].stem for i in keep],
        sources=[pairs[i].image for i in keep],
        native_sizes=[results[i][2] for i in keep],
        native_masks=[results[i][3] for i in keep] if keep_native and has_masks else None,
        skipped=skipped,
    )


def load_split(
    root: Path | str,
    split: str | None = None,
    hw: tuple[int, int] = INPUT_HW,
    skip_bad: bool = False,
    keep_native: bool = False,
    progress: bool = False,
    limit: int | None = None,
) -> LoadedSet:
    """Find, pair and decode one split. ``limit`` takes the first N pairs by stem (deterministic slices)."""
    pairs, skipped = find_pairs(root, split, skip_bad)
    if limit is not None:
        pairs = pairs[:limit]
    return load_pairs(pairs, hw, skip_bad, keep_native, progress, desc=f"decode {split or Path(root).name}",
                      skipped=skipped)
