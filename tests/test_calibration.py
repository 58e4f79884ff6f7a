"""The int8 calibration set: real training images preprocessed exactly per the contract, stratified, hashed,
deterministic, refused when it would mislead (test split, tiny, another contract, altered)."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from egeunet_deploy.calibration import (
    MIN_IMAGES,
    CalibrationError,
    build_calibration_set,
    bundled_calibration_set,
    load_calibration_set,
)
from egeunet_deploy.main import main
from egeunet_deploy.model.checkpoint import sha256_file
from egeunet_deploy.model.contract import CONTRACT, resize_rgb
from egeunet_deploy.model.imageio import read_rgb


@pytest.fixture(scope="module")
def built(tmp_path_factory, sample_dir):
    out = tmp_path_factory.mktemp("calib") / "set16"
    return build_calibration_set(sample_dir, out, split="train", num=16, seed=3, progress=False)


def test_images_are_contract_preprocessed_sources(built, sample_dir):
    images, manifest = load_calibration_set(built)
    assert built.suffix == ".npz" and images.shape == (16, 256, 256, 3) and images.dtype == np.uint8
    root = Path(manifest["source"]["data"])
    assert root == sample_dir.resolve() and manifest["source"]["split"] == "train"
    for img, f in zip(images, manifest["files"], strict=True):
        src = root / f["image"]
        assert f["image"].startswith("train/") and sha256_file(src) == f["image_sha256"]
        assert np.array_equal(img, resize_rgb(read_rgb(src)))
    assert manifest["contract_sha256"] == CONTRACT.fingerprint() and manifest["sampling"]["seed"] == 3


def test_stratified_by_lesion_size(built):
    _, manifest = load_calibration_set(built)
    strata = manifest["sampling"]["strata"]
    assert len(strata) >= 3 and sum(s["sampled"] for s in strata) == 16
    assert sum(s["available"] for s in strata) == manifest["source"]["available"] == 64
    for s in strata:  # proportional allocation: every size class is represented, none over-drawn
        assert s["sampled"] >= 1 and abs(s["sampled"] - 16 * s["available"] / 64) < 1
    fractions = sorted(f["lesion_fraction"] for f in manifest["files"])
    lo, hi = strata[0]["lesion_fraction_range"], strata[-1]["lesion_fraction_range"]
    assert lo[0] <= fractions[0] <= lo[1] and hi[0] <= fractions[-1] <= hi[1]
    cov = manifest["coverage"]
    assert set(cov["lesion_fraction_quantiles"]) >= {"q00", "q50", "q100"} and len(cov["mean_rgb"]) == 3
    assert cov["lesion_fraction_quantiles"]["q00"] <= cov["lesion_fraction_quantiles"]["q100"]


def test_deterministic_and_seeded(built, sample_dir, tmp_path):
    again = build_calibration_set(sample_dir, tmp_path / "again.npz", num=16, seed=3, progress=False)
    other = build_calibration_set(sample_dir, tmp_path / "other.npz", num=16, seed=4, progress=False)
    assert sha256_file(again) == sha256_file(built)
    names = lambda p: [f["name"] for f in load_calibration_set(p)[1]["files"]]
    assert names(other) != names(built)


def test_refuses_test_split_unless_forced(sample_dir, tmp_path):
    with pytest.raises(CalibrationError, match="test"):
        build_calibration_set(sample_dir, tmp_path / "t.npz", split="test", num=8, progress=False)
    forced = build_calibration_set(sample_dir, tmp_path / "t.npz", split="test", num=8, force=True, progress=False)
    assert load_calibration_set(forced)[1]["source"]["split"] == "test"


def test_refuses_tiny_or_empty_sets(sample_dir, tmp_path):
    with pytest.raises(CalibrationError, match="at least"):
        build_calibration_set(sample_dir, tmp_path / "a.npz", num=MIN_IMAGES - 1, progress=False)
    tiny = tmp_path / "tiny"
    (tiny / "train" / "images").mkdir(parents=True)
    (tiny / "train" / "masks").mkdir()
    for img in sorted((sample_dir / "train" / "images").iterdir())[:5]:
        shutil.copy(img, tiny / "train" / "images")
        shutil.copy(sample_dir / "train" / "masks" / f"{img.stem}_segmentation.jpg", tiny / "train" / "masks")
    with pytest.raises(CalibrationError, match="only 5"):
        build_calibration_set(tiny, tmp_path / "b.npz", progress=False)
    empty = tmp_path / "empty" / "train" / "images"
    empty.mkdir(parents=True)
    with pytest.raises(CalibrationError, match="no calibration images"):
        build_calibration_set(tmp_path / "empty", tmp_path / "c.npz", progress=False)
    assert not list(tmp_path.glob("*.npz"))


def test_images_without_masks_are_sampled_uniformly(sample_dir, tmp_path):
    flat = tmp_path / "flat" / "images"
    flat.mkdir(parents=True)
    for img in sorted((sample_dir / "train" / "images").iterdir())[:10]:
        shutil.copy(img, flat)
    path = build_calibration_set(tmp_path / "flat", tmp_path / "u.npz", split=None, num=8, progress=False)
    images, manifest = load_calibration_set(path)
    assert len(images) == 8 and manifest["sampling"]["strategy"].startswith("uniform")
    assert manifest["files"][0]["lesion_fraction"] is None


def _rewrite(src: Path, dst: Path, manifest_edit=None, images_edit=None) -> Path:
    with np.load(src) as z:
        images, manifest = z["images"].copy(), json.loads(str(z["manifest"].item()))
    if manifest_edit:
        manifest_edit(manifest)
    if images_edit:
        images = images_edit(images)
    buf = io.BytesIO()
    np.savez(buf, images=images, manifest=np.array(json.dumps(manifest)))
    dst.write_bytes(buf.getvalue())
    return dst


def test_refuses_a_set_from_another_contract(built, tmp_path):
    def other_contract(m):
        m["contract"]["normalization"] = "imagenet_mean_std"
        m["contract_sha256"] = "0" * 64

    bad = _rewrite(built, tmp_path / "other_contract.npz", manifest_edit=other_contract)
    with pytest.raises(CalibrationError, match="another contract"):
        load_calibration_set(bad)


def test_refuses_altered_or_foreign_files(built, tmp_path):
    flipped = _rewrite(built, tmp_path / "altered.npz", images_edit=lambda a: a[::-1].copy())
    with pytest.raises(CalibrationError, match="sha256"):
        load_calibration_set(flipped)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(CalibrationError, match=r"not a calibration set .*\(not an \.npz archive\)$") as info:
        load_calibration_set(junk)
    assert "pickle" not in str(info.value)  # numpy's own text advises allow_pickle
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as z:
        z.writestr("x.npy", b"")
    with pytest.raises(CalibrationError):
        load_calibration_set(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="egeunet calibrate"):
        load_calibration_set(tmp_path / "missing.npz")


def test_bundled_fallback_is_the_64_sample_train_pairs_and_reused(tmp_path):
    path = bundled_calibration_set(tmp_path)
    images, manifest = load_calibration_set(path)
    assert len(images) == 64 and manifest["source"]["split"] == "train"
    mtime = path.stat().st_mtime_ns
    assert bundled_calibration_set(tmp_path) == path and path.stat().st_mtime_ns == mtime


def test_cli_calibrate(sample_dir, tmp_path, capsys):
    out = tmp_path / "cli.npz"
    assert main(["calibrate", "--data", str(sample_dir), "--num", "8", "--seed", "1", "--out", str(out),
                 "--no-progress"]) == 0
    assert "8 contract images" in capsys.readouterr().out
    assert load_calibration_set(out)[1]["sampling"]["seed"] == 1
    assert main(["calibrate", "--data", str(sample_dir), "--split", "test", "--out", str(tmp_path / "t.npz"),
                 "--no-progress"]) == 2
    assert "refusing to calibrate on the 'test' split" in capsys.readouterr().err


def test_unreadable_sets_get_a_message_not_a_traceback(built, tmp_path):
    """Every way a file can fail to be a set ends in CalibrationError naming it (before: EOFError, TypeError,
    zlib.error, AttributeError tracebacks)."""
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    array = tmp_path / "plain.npy"
    np.save(array, np.zeros((8, 256, 256, 3), np.uint8))
    damaged = tmp_path / "damaged.npz"
    data = bytearray(built.read_bytes())
    data[1000:1200] = bytes(255 - b for b in data[1000:1200])
    damaged.write_bytes(bytes(data))
    listed = _rewrite(built, tmp_path / "list_manifest.npz")
    with np.load(listed) as z:
        images = z["images"].copy()
    buf = io.BytesIO()
    np.savez(buf, images=images, manifest=np.array(json.dumps(["x"])))
    listed.write_bytes(buf.getvalue())
    for path, reason in ((empty, ""), (array, "single .npy array"), (damaged, ""), (listed, "JSON list")):
        with pytest.raises(CalibrationError, match="not a calibration set") as info:
            load_calibration_set(path)
        assert str(path) in str(info.value) and reason in str(info.value)
    with pytest.raises(CalibrationError, match="is a folder"):
        load_calibration_set(tmp_path)


def test_damaged_bundled_cache_is_rebuilt(tmp_path):
    path = bundled_calibration_set(tmp_path)
    good = path.read_bytes()
    path.write_bytes(b"")
    assert bundled_calibration_set(tmp_path) == path and path.read_bytes() == good


def _copy_pairs(sample_dir: Path, dst: Path, n: int) -> Path:
    """The first ``n`` train pairs of the sample in the official layout under ``dst`` (split folder ``dst.name``)."""
    (dst / "images").mkdir(parents=True)
    (dst / "masks").mkdir()
    for img in sorted((sample_dir / "train" / "images").iterdir())[:n]:
        shutil.copy(img, dst / "images")
        shutil.copy(sample_dir / "train" / "masks" / f"{img.stem}_segmentation.jpg", dst / "masks")
    return dst


def test_a_test_folder_is_refused_whatever_the_split_name(sample_dir, tmp_path):
    """``--data isic2017/test --split ''`` reads the test images through the flat layout; the guard looks at the
    folder the images come from, not only at the split's name."""
    test_dir = _copy_pairs(sample_dir, tmp_path / "data" / "test", 10)
    for split in (None, ""):
        with pytest.raises(CalibrationError, match="test split's folder"):
            build_calibration_set(test_dir, tmp_path / "t.npz", split=split, num=8, progress=False)
    assert not (tmp_path / "t.npz").exists()
    assert build_calibration_set(test_dir, tmp_path / "t.npz", split="", num=8, force=True, progress=False).exists()
    with pytest.raises(CalibrationError, match="--seed -1"):
        build_calibration_set(sample_dir, tmp_path / "s.npz", num=8, seed=-1, progress=False)


def test_skip_bad_passes_over_unreadable_files_and_lists_them(sample_dir, tmp_path, capsys):
    data = _copy_pairs(sample_dir, tmp_path / "data" / "train", 12)
    bad_image = sorted((data / "images").iterdir())[3]
    bad_image.write_bytes(bad_image.read_bytes()[:400])  # truncated JPEG
    bad_mask = sorted((data / "masks").iterdir())[7]
    bad_mask.write_bytes(b"not a jpeg")
    out = tmp_path / "c.npz"
    args = ["calibrate", "--data", str(tmp_path / "data"), "--num", "12", "--out", str(out), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert bad_mask.name in err and "--skip-bad" in err and not out.exists()
    assert main([*args, "--skip-bad"]) == 0
    printed = capsys.readouterr().out
    images, manifest = load_calibration_set(out)
    skipped = manifest["source"]["skipped"]
    assert len(images) == 10 and len(skipped) == 2
    assert {Path(s.split(": ")[0]).name for s in skipped} == {bad_image.name, bad_mask.name}
    assert bad_image.name in printed and bad_mask.name in printed
    assert all(s.count(bad_image.name) <= 1 for s in skipped)  # the path once, then the reason
