"""The preprocessing contract: the official z-score + min-max equals plain per-image min-max; edge cases."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from egeunet_deploy.model.contract import (
    CONTRACT,
    binarize,
    minmax_normalize,
    resize_mask,
    resize_rgb,
    to_model_input,
)
from egeunet_deploy.model.imageio import read_rgb

# The official isic17 statistics (configs/config_setting.py, myNormalize): train and test differ.
OFFICIAL_STATS = {"train": (159.922, 28.871), "test": (148.429, 25.748)}


def official_normalize(img: np.ndarray, mean: float, std: float) -> np.ndarray:
    """The official myNormalize, on float64: z-score with dataset statistics, then per-image min-max to [0, 255]."""
    z = (img.astype(np.float64) - mean) / std
    return (z - z.min()) / (z.max() - z.min()) * 255.0


@pytest.mark.parametrize("split", ["train", "test"])
def test_zscore_cancels_under_minmax_on_real_images(sample_dir, split):
    """Whatever the dataset statistics, the official normalisation equals the contract's plain min-max."""
    paths = sorted((sample_dir / split / "images").iterdir())[:8]
    assert len(paths) == 8
    for path in paths:
        img = np.asarray(read_rgb(path))
        ours = minmax_normalize(torch.from_numpy(img)[None]).numpy()[0]
        for mean, std in (OFFICIAL_STATS[split], (0.0, 1.0), (200.0, 3.0)):
            np.testing.assert_allclose(ours, official_normalize(img, mean, std), atol=2e-4)
        assert ours.min() == 0.0 and abs(ours.max() - 255.0) < 1e-4


def test_minmax_is_per_image_and_over_all_channels():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    a[0, ..., 0] = 10  # image 0: red 10..200, green and blue 0 -> min 0 comes from other channels
    a[0, 0, 0, 0] = 200
    a[1] = 50
    a[1, 0, 0] = (60, 70, 80)
    x = to_model_input(a)
    assert x.shape == (2, 3, 4, 4) and x.dtype == torch.float32
    assert float(x[0, 0, 0, 0]) == pytest.approx(255.0)
    assert float(x[0, 1].max()) == 0.0
    assert float(x[1, 2, 0, 0]) == pytest.approx(255.0)  # blue 80 is image 1's maximum
    assert float(x[1, 0, 1, 1]) == 0.0


def test_constant_image_gives_zeros_not_nan():
    x = to_model_input(np.full((1, 8, 8, 3), 77, np.uint8))
    assert torch.isfinite(x).all() and float(x.abs().max()) == 0.0


def test_wrong_layout_is_refused():
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        to_model_input(np.zeros((1, 3, 256, 256), np.uint8))


def test_resize_is_pil_bilinear_and_keeps_uint8(sample_dir):
    path = sorted((sample_dir / "test" / "images").iterdir())[0]
    img = read_rgb(path)
    out = resize_rgb(img)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    expected = np.asarray(img.resize((256, 256), Image.Resampling.BILINEAR))
    assert np.array_equal(out, expected)
    with pytest.raises(ValueError, match="expects an RGB image"):
        resize_rgb(img.convert("L"))


def test_mask_resize_stays_binary():
    m = np.zeros((192, 256), np.uint8)
    m[50:120, 60:200] = 1
    r = resize_mask(m)
    assert r.shape == (256, 256) and set(np.unique(r)) == {0, 1}
    assert abs(r.mean() - m.mean()) < 0.01


def test_threshold_is_inclusive_at_half():
    p = np.array([0.49999, 0.5, 0.75])
    assert binarize(p).tolist() == [0, 1, 1]
    assert binarize(torch.tensor(p)).tolist() == [0, 1, 1]


def test_fingerprint_changes_with_any_field():
    other = dataclasses.replace(CONTRACT, threshold=0.4)
    assert other.fingerprint() != CONTRACT.fingerprint()
    assert CONTRACT.fingerprint() == dataclasses.replace(CONTRACT).fingerprint()
