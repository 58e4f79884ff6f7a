"""Dataset layouts, stem pairing, image kinds and every bad input named in the foundation issue."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from egeunet_deploy.model.data import DataError, find_pairs, load_split
from egeunet_deploy.model.imageio import ImageReadError, read_mask, read_rgb


def _image(h=48, w=64, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _mask(h=48, w=64, box=(10, 30, 20, 50)) -> Image.Image:
    m = np.zeros((h, w), np.uint8)
    m[box[0] : box[1], box[2] : box[3]] = 255
    return Image.fromarray(m)


def _make(root: Path, names: dict[str, str], images="images", masks="masks") -> Path:
    """names: image file name -> mask file name ('' for none)."""
    (root / images).mkdir(parents=True, exist_ok=True)
    (root / masks).mkdir(parents=True, exist_ok=True)
    for i, (img, msk) in enumerate(names.items()):
        _image(seed=i).save(root / images / img)
        if msk:
            _mask().save(root / masks / msk)
    return root


def test_official_layout_on_real_data(isic_dir):
    pairs, skipped = find_pairs(isic_dir, "val")
    assert len(pairs) == 149 and not skipped
    assert all(p.mask.name == f"{p.image.stem}_segmentation.jpg" for p in pairs)


def test_isic_challenge_layout(tmp_path):
    _make(tmp_path, {"ISIC_0000001.jpg": "ISIC_0000001_segmentation.png"},
          images="ISIC-2017_Training_Input", masks="ISIC-2017_Training_GroundTruth")
    _make(tmp_path, {"ISIC_0000002.jpg": "ISIC_0000002_Segmentation.png"},
          images="ISIC-2017_Test_v2_Input", masks="ISIC-2017_Test_v2_GroundTruth")
    train, _ = find_pairs(tmp_path, "train")
    test, _ = find_pairs(tmp_path, "test")
    assert [p.stem for p in train] == ["ISIC_0000001"] and [p.stem for p in test] == ["ISIC_0000002"]


def test_flat_layout_and_every_mask_naming(tmp_path):
    names = {"a.jpg": "a.png", "b.png": "b_segmentation.bmp", "c.jpg": "c_Segmentation.gif",
             "d.jpg": "d_lesion.jpg", "e.bmp": "e_mask.png"}
    _make(tmp_path, names)
    pairs, _ = find_pairs(tmp_path)
    assert {p.stem: p.mask.name for p in pairs} == {Path(k).stem: v for k, v in names.items()}


def test_pairs_by_stem_not_by_sort_order(tmp_path):
    """'b' has no mask; sort-order pairing (the official loader) would give 'b' the mask of 'c'."""
    _make(tmp_path, {"a.jpg": "a_mask.png", "b.jpg": "", "c.jpg": "c_mask.png"})
    with pytest.raises(DataError, match=r"b\.jpg: image without a mask"):
        find_pairs(tmp_path)
    pairs, skipped = find_pairs(tmp_path, skip_bad=True)
    assert {p.stem: p.mask.stem for p in pairs} == {"a": "a_mask", "c": "c_mask"}
    assert [s.path.name for s in skipped] == ["b.jpg"]


def test_mask_without_image_is_named(tmp_path):
    _make(tmp_path, {"a.jpg": "a.png"})
    _mask().save(tmp_path / "masks" / "zzz_segmentation.png")
    with pytest.raises(DataError, match=r"zzz_segmentation\.png: mask without an image"):
        find_pairs(tmp_path)


def test_ambiguous_masks_are_refused(tmp_path):
    _make(tmp_path, {"a.jpg": "a.png"})
    _mask().save(tmp_path / "masks" / "a_mask.png")
    with pytest.raises(DataError, match="several masks match: a.png, a_mask.png"):
        find_pairs(tmp_path)


def test_missing_layout_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        find_pairs(tmp_path / "nope")
    with pytest.raises(DataError, match="no dataset layout found"):
        find_pairs(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="no images found"):
        find_pairs(tmp_path)


def test_truncated_and_corrupt_images_are_named_or_skipped(tmp_path):
    _make(tmp_path, {"good.jpg": "good.png", "trunc.jpg": "trunc.png", "junk.png": "junk_mask.png"})
    data = (tmp_path / "images" / "trunc.jpg").read_bytes()
    (tmp_path / "images" / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "images" / "junk.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError) as err:
        load_split(tmp_path)
    assert "trunc.jpg" in str(err.value) and "junk.png" in str(err.value)
    loaded = load_split(tmp_path, skip_bad=True)
    assert loaded.names == ["good"] and sorted(s.path.name for s in loaded.skipped) == ["junk.png", "trunc.jpg"]


def test_size_mismatch_names_both_files(tmp_path):
    _make(tmp_path, {"a.jpg": ""})
    _mask(h=40, w=40, box=(0, 5, 0, 5)).save(tmp_path / "masks" / "a_segmentation.png")
    with pytest.raises(DataError, match=r"a_segmentation\.png: mask is 40x40 but image a\.jpg is 64x48"):
        load_split(tmp_path)


def test_loads_real_pairs_binarized_at_127(sample_dir):
    s = load_split(sample_dir, "test", keep_native=True)
    assert s.images.shape == (32, 256, 256, 3) and s.images.dtype == np.uint8
    assert s.masks.shape == (32, 256, 256) and set(np.unique(s.masks)) <= {0, 1}
    assert s.native_sizes[0] == (192, 256) and s.native_masks[0].shape == (192, 256)
    raw = np.asarray(Image.open(sample_dir / "test" / "masks" / f"{s.names[0]}_segmentation.jpg").convert("L"))
    assert len(np.unique(raw)) > 2  # JPEG masks are not strictly 0/255 ...
    assert np.array_equal(s.native_masks[0], (raw > 127).astype(np.uint8))  # ... and are binarized at 127


def test_every_image_kind_decodes_to_rgb(tmp_path):
    rgb = np.asarray(_image(seed=3))
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    gray16 = (np.asarray(Image.fromarray(rgb).convert("L")).astype(np.uint16) * 257)
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    for name in ("rgba.png", "gray.png", "palette.png", "gray16.png"):
        im = read_rgb(tmp_path / name)
        assert im.mode == "RGB" and im.size == (64, 48), name
    # 16-bit is scaled (x/257), not clipped at 255 as PIL's convert would do
    assert np.array_equal(np.asarray(read_rgb(tmp_path / "gray16.png"))[..., 0],
                          np.asarray(read_rgb(tmp_path / "gray.png"))[..., 0])


def test_exif_orientation_is_applied(tmp_path):
    img = _image(h=20, w=40)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert read_rgb(tmp_path / "rot.jpg").size == (20, 40)


def test_coloured_and_palette_masks(tmp_path):
    m = np.zeros((10, 10, 3), np.uint8)
    m[2:5, 2:5] = (255, 0, 0)  # pure red lesion: luminance 76 would lose it
    Image.fromarray(m).save(tmp_path / "red.png")
    assert read_mask(tmp_path / "red.png").sum() == 9
    p = Image.fromarray((m[..., 0] > 0).astype(np.uint8), mode="L").convert("P")
    p.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    p.save(tmp_path / "pal.png")
    assert read_mask(tmp_path / "pal.png").sum() == 9


def test_unreadable_file_error_names_path(tmp_path):
    with pytest.raises(ImageReadError, match="nope.png: file not found"):
        read_rgb(tmp_path / "nope.png")


def test_limit_takes_first_pairs_by_stem(sample_dir, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(sample_dir / "test", root / "test")
    s = load_split(root, "test", limit=3)
    assert s.names == sorted(p.stem for p in (root / "test" / "images").iterdir())[:3]
