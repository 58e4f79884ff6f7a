"""The int8 calibration set: real training images, preprocessed exactly per the contract, built once, hashed.

Why a file instead of sampling at export time: every int8 recipe (ONNX Runtime QDQ, ai-edge-quantizer, CoreML
activation quantization) must see the same images, and an artifact's metadata must name them (sha256), so a
quantized model can always be traced back to its calibration data and rebuilt bit for bit.

The set is an ``.npz`` with two entries: ``images`` (N, 256, 256, 3) uint8 contract images (contract step 2, the
same input an app hands an artifact) and ``manifest`` (JSON): source files with their sha256, seed, sampling
strata, coverage statistics (lesion-area quantiles, intensity statistics) and the contract fingerprint. The zip is
written with fixed timestamps, so the same data, split, size and seed give the same file and the same sha256.

Sampling is stratified by lesion size when masks exist: small lesions are the hard case for a quantized model
(few pixels decide the Dice), and a uniform draw of a few dozen images can miss them entirely.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from egeunet_deploy import __version__
from egeunet_deploy.model.bundled import SAMPLE_DATA
from egeunet_deploy.model.checkpoint import atomic_write_bytes, sha256_file
from egeunet_deploy.model.contract import CONTRACT, INPUT_HW
from egeunet_deploy.model.data import DataError, Pair, Skipped, describe_problems, find_pairs, load_pairs, split_matches
from egeunet_deploy.model.imageio import ImageReadError, read_mask

SCHEMA = 1
KIND = "egeunet-calibration"
MIN_IMAGES = 8
"""Fewer images than this cannot estimate activation ranges: refused instead of silently giving a poor int8 model."""
NUM_STRATA = 4
BUNDLED_NUM = 64
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class CalibrationError(ValueError):
    """A calibration set that cannot be built or used (tiny, test split, other contract, damaged)."""


def build_calibration_set(data: Path | str, out: Path | str, split: str | None = "train", num: int = 200, seed: int = 0,
                          force: bool = False, progress: bool = True, skip_bad: bool = False) -> Path:
    """Sample ``num`` images of ``split`` under ``data`` (stratified by lesion area when masks exist), preprocess
    them per the contract and write the set to ``out`` (``.npz`` added when missing). Returns the written path.

    A test split is refused unless ``force``: calibrating on test images leaks the evaluation data into the model.
    It is recognised by the split's name and by the folder the images come from (``--data isic2017/test`` with no
    split is the test split too). ``skip_bad`` passes over unpaired or unreadable files; the manifest lists them.
    """
    out = Path(out)
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")
    if seed < 0:
        raise CalibrationError(f"--seed {seed}: the seed must be >= 0")
    if split and split_matches(split, "test") and not force:
        raise CalibrationError(f"refusing to calibrate on the '{split}' split: test images must stay unseen by the "
                               "model (use --split train, or --force if you really mean it)")
    if num < MIN_IMAGES:
        raise CalibrationError(f"--num {num} is too small: a calibration set needs at least {MIN_IMAGES} images")
    if Path(data).is_file():
        raise CalibrationError(f"--data {data} is a file; give the dataset folder")
    try:
        pairs, skipped = find_pairs(data, split, skip_bad=skip_bad)
    except DataError as e:
        raise CalibrationError(f"no calibration images in {data} [{split}]: {e}") from None
    images_dir = pairs[0].image.parent
    if not force and any(split_matches(d.name, "test") for d in (images_dir, images_dir.parent)):
        raise CalibrationError(f"refusing to calibrate on {images_dir}: it is a test split's folder, and test images "
                               "must stay unseen by the model (point --data at the training data, or --force)")
    if len(pairs) < MIN_IMAGES:
        raise CalibrationError(f"{data} [{split}] has only {len(pairs)} image(s); a calibration set needs at least "
                               f"{MIN_IMAGES}")
    with_masks = all(p.mask is not None for p in pairs)
    fractions = None
    if with_masks:
        fractions, bad_masks = _lesion_fractions(pairs, progress)
        if bad_masks and not skip_bad:
            raise CalibrationError(describe_problems(bad_masks, "cannot read the masks to stratify by"))
        readable = ~np.isnan(fractions)
        pairs = [p for p, ok in zip(pairs, readable, strict=True) if ok]
        fractions, skipped = fractions[readable], skipped + bad_masks
        if len(pairs) < MIN_IMAGES:
            raise CalibrationError(f"only {len(pairs)} pair(s) with a readable mask; a calibration set needs at "
                                   f"least {MIN_IMAGES}")
    chosen, strata = _sample(len(pairs), num, seed, fractions)
    picked = [pairs[i] for i in chosen]
    loaded = load_pairs(picked, INPUT_HW, skip_bad=skip_bad, progress=progress, desc=f"calibration {split}",
                        skipped=skipped)
    if len(loaded) < len(picked):  # unreadable images were skipped: keep only the rows that decoded
        decoded = set(loaded.names)
        chosen = [i for i, p in zip(chosen, picked, strict=True) if p.stem in decoded]
        picked = [pairs[i] for i in chosen]
        if len(chosen) < MIN_IMAGES:
            raise CalibrationError(f"only {len(chosen)} readable image(s) among those sampled; a calibration set "
                                   f"needs at least {MIN_IMAGES}")
    root = Path(data).resolve()
    files = []
    for k, (i, p) in enumerate(zip(chosen, picked, strict=True)):
        files.append({
            "name": p.stem,
            "image": _rel(p.image, root),
            "image_sha256": sha256_file(p.image),
            "mask": _rel(p.mask, root) if p.mask is not None else None,
            "native_hw": list(loaded.native_sizes[k]),
            "lesion_fraction": None if fractions is None else round(float(fractions[i]), 6),
        })
    manifest = {
        "schema": SCHEMA,
        "kind": KIND,
        "toolkit_version": __version__,
        "contract": CONTRACT.to_dict(),
        "contract_sha256": CONTRACT.fingerprint(),
        "source": {"data": str(root), "split": split, "available": len(pairs), "with_masks": with_masks,
                   "skipped": [f"{s.path}: {s.reason}" for s in loaded.skipped]},
        "sampling": {"seed": seed, "num_requested": num, "num": len(picked), "strata": strata,
                     "strategy": (f"stratified by lesion area ({len(strata)} quantile bins, proportional allocation)"
                                  if with_masks else "uniform random (no masks to stratify by)")},
        "coverage": _coverage(loaded.images, None if fractions is None else fractions[chosen]),
        "images_sha256": _array_sha256(loaded.images),
        "files": files,
    }
    atomic_write_bytes(out, _npz_bytes(loaded.images, manifest))
    return out


def load_calibration_set(path: Path | str) -> tuple[np.ndarray, dict]:
    """Read a set written by :func:`build_calibration_set`; refuse one built for another preprocessing contract,
    of the wrong shape, or whose images do not match the hash in its manifest."""
    path = Path(path)
    if path.is_dir():
        raise CalibrationError(f"{path} is a folder; give the .npz file `egeunet calibrate` wrote")
    if not path.is_file():
        raise FileNotFoundError(f"calibration set not found: {path} (build one with `egeunet calibrate`)")
    not_a_set = f"{path}: not a calibration set written by `egeunet calibrate`"
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise CalibrationError(f"{not_a_set} (a single .npy array, not an .npz archive)")
        with loaded as z:
            images = z["images"]
            manifest = json.loads(str(z["manifest"].item()))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        if isinstance(e, CalibrationError):
            raise
        # numpy takes any non-.npy/.npz file for a pickle and suggests allow_pickle: unsafe advice for a stray file
        reason = "not an .npz archive" if "allow_pickle" in str(e) else (str(e).strip().splitlines() or [""])[0]
        raise CalibrationError(f"{not_a_set} ({reason or type(e).__name__})") from None
    if not isinstance(manifest, dict):
        raise CalibrationError(f"{not_a_set} (its manifest is a JSON {type(manifest).__name__}, not an object)")
    if manifest.get("kind") != KIND:
        raise CalibrationError(f"{path}: not a calibration set (kind {manifest.get('kind')!r})")
    theirs, ours = manifest.get("contract_sha256"), CONTRACT.fingerprint()
    if theirs != ours:
        version = (manifest.get("contract") or {}).get("version")
        raise CalibrationError(
            f"{path} was preprocessed with another contract (version {version}, fingerprint {str(theirs)[:12]}) "
            f"than this toolkit's (version {CONTRACT.version}, fingerprint {ours[:12]}); int8 ranges from it would "
            "not match what the model sees. Rebuild it with `egeunet calibrate`.")
    h, w = INPUT_HW
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (h, w, 3):
        raise CalibrationError(f"{path}: images are {images.dtype} {images.shape}, expected uint8 (N, {h}, {w}, 3)")
    if len(images) < MIN_IMAGES:
        raise CalibrationError(f"{path}: only {len(images)} image(s); a calibration set needs at least {MIN_IMAGES}")
    if manifest.get("images_sha256") != _array_sha256(images):
        raise CalibrationError(f"{path}: images do not match the sha256 in its manifest (file altered or damaged)")
    return images, manifest


def bundled_calibration_set(out_dir: Path | str, progress: bool = False) -> Path:
    """The fallback set: all 64 train pairs of the bundled ISIC sample, built once into ``out_dir``.

    Reused when a valid file is already there (the build is deterministic, so reuse changes nothing)."""
    path = Path(out_dir) / "calibration_bundled_sample_train.npz"
    if path.is_file():
        try:
            _, manifest = load_calibration_set(path)
            if manifest["source"]["data"] == str(SAMPLE_DATA.resolve()) and manifest["sampling"]["seed"] == 0:
                return path
        except (CalibrationError, KeyError):
            pass
    return build_calibration_set(SAMPLE_DATA, path, split="train", num=BUNDLED_NUM, seed=0, progress=progress)


def calibration_sha256(path: Path | str) -> str:
    return sha256_file(path)


# --- sampling -------------------------------------------------------------------------------------------------


def _lesion_fractions(pairs: list[Pair], progress: bool) -> tuple[np.ndarray, list[Skipped]]:
    """Lesion area / image area of every mask (native resolution; the ratio does not depend on resizing), NaN
    where the mask cannot be read, and those masks with the reason."""
    bad: list[Skipped] = []

    def frac(p: Pair) -> float:
        try:
            return float(read_mask(p.mask).mean())
        except ImageReadError as e:
            bad.append(Skipped(e.path, e.reason))
            return float("nan")

    with ThreadPoolExecutor(max_workers=4) as pool:
        it = pool.map(frac, pairs)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(pairs), desc="lesion areas", unit="mask", leave=False)
        return np.array(list(it), dtype=np.float64), sorted(bad, key=lambda s: str(s.path))


def _sample(n: int, num: int, seed: int, fractions: np.ndarray | None) -> tuple[list[int], list[dict]]:
    """Indices of the chosen pairs (sorted) and a description of the strata they were drawn from."""
    rng = np.random.default_rng(seed)
    num = min(num, n)
    if fractions is None:
        return sorted(rng.choice(n, size=num, replace=False).tolist()), []
    # Quantile bins of the lesion area; ties (many equal fractions) may merge bins, which is fine.
    edges = np.unique(np.quantile(fractions, np.linspace(0, 1, NUM_STRATA + 1)))
    which = np.clip(np.searchsorted(edges, fractions, side="right") - 1, 0, len(edges) - 2) if len(edges) > 1 \
        else np.zeros(n, dtype=int)
    members = [np.flatnonzero(which == b) for b in range(max(len(edges) - 1, 1))]
    members = [m for m in members if len(m)]
    quota = np.array([len(m) for m in members], dtype=np.float64) * num / n
    take = np.floor(quota).astype(int)
    for b in np.argsort(-(quota - take))[: num - take.sum()]:  # largest remainders get the leftover picks
        take[b] += 1
    chosen, strata = [], []
    for m, k in zip(members, take, strict=True):
        pick = rng.choice(m, size=int(k), replace=False) if k else np.array([], dtype=int)
        chosen.extend(pick.tolist())
        strata.append({"lesion_fraction_range": [round(float(fractions[m].min()), 6), round(float(fractions[m].max()),
                       6)], "available": int(len(m)), "sampled": int(k)})
    return sorted(chosen), strata


def _coverage(images: np.ndarray, fractions: np.ndarray | None) -> dict:
    """What the set covers: lesion sizes and the intensity statistics the min-max normalisation depends on."""
    qs = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    flat = images.reshape(len(images), -1)
    lo, hi = flat.min(axis=1).astype(np.float64), flat.max(axis=1).astype(np.float64)
    mean_rgb = images.reshape(-1, 3).mean(axis=0)
    std_rgb = images.reshape(-1, 3).std(axis=0)

    def quant(a: np.ndarray) -> dict:
        return {f"q{int(q * 100):02d}": round(float(np.quantile(a, q)), 6) for q in qs}

    cov = {
        "n_images": int(len(images)),
        "mean_rgb": [round(float(v), 3) for v in mean_rgb],
        "std_rgb": [round(float(v), 3) for v in std_rgb],
        "image_min_quantiles": quant(lo),
        "image_max_quantiles": quant(hi),
        "image_dynamic_range_quantiles": quant(hi - lo),
    }
    if fractions is not None:
        cov["lesion_fraction_quantiles"] = quant(fractions)
        cov["empty_masks"] = int(np.count_nonzero(fractions == 0))
    return cov


# --- file format ----------------------------------------------------------------------------------------------


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path.resolve())


def _array_sha256(a: np.ndarray) -> str:
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _npz_bytes(images: np.ndarray, manifest: dict) -> bytes:
    """An ``np.load``-compatible zip with fixed timestamps, so equal inputs give byte-identical files."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, arr in (("images", images), ("manifest", np.array(json.dumps(manifest, sort_keys=True)))):
            member = io.BytesIO()
            np.lib.format.write_array(member, arr if arr.ndim == 0 else np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, member.getvalue())
    return buf.getvalue()
