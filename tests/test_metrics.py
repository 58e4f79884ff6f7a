"""Metric definitions: the official pooled confusion matrix, per-image scores, mask agreement."""

from __future__ import annotations

import numpy as np
import pytest

from egeunet_deploy.model.metrics import (
    SIZE_BINS,
    Confusion,
    SegmentationScores,
    area_fractions,
    dice,
    dsc_iou_from_counts,
    per_image_scores,
    size_strata,
    threshold_counts,
)


def official_pooled(preds: np.ndarray, gts: np.ndarray) -> dict:
    """The official engine.py computation: flatten everything, threshold, 2x2 confusion, ratios."""
    y_pre = np.where(preds.reshape(-1) >= 0.5, 1, 0)
    y_true = np.where(gts.reshape(-1) >= 0.5, 1, 0)
    tp = int(((y_pre == 1) & (y_true == 1)).sum())
    fp = int(((y_pre == 1) & (y_true == 0)).sum())
    fn = int(((y_pre == 0) & (y_true == 1)).sum())
    tn = int(((y_pre == 0) & (y_true == 0)).sum())
    return {"miou": tp / (tp + fp + fn), "dsc": 2 * tp / (2 * tp + fp + fn), "accuracy": (tp + tn) / y_pre.size,
            "sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp)}


def test_pooled_equals_official_computation():
    rng = np.random.default_rng(0)
    probs = rng.random((5, 32, 32))
    gts = (rng.random((5, 32, 32)) > 0.6).astype(np.uint8)
    scores = SegmentationScores()
    scores.update((probs >= 0.5).astype(np.uint8), gts)
    got = scores.result()["pooled"]
    for key, value in official_pooled(probs, gts).items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_pooled_is_not_the_mean_of_per_image_scores():
    """A big well-segmented lesion and a small missed one: pooled DSC stays high, the per-image mean does not."""
    gt = np.zeros((2, 100, 100), np.uint8)
    gt[0, 10:90, 10:90] = 1
    gt[1, 5:10, 5:10] = 1
    pred = gt.copy()
    pred[1] = 0
    scores = SegmentationScores()
    scores.update(pred, gt)
    r = scores.result()
    assert r["pooled"]["dsc"] > 0.99 and r["per_image"]["dsc"] == pytest.approx(0.5)
    assert r["n_images"] == 2


def test_empty_cases():
    empty = np.zeros((1, 4, 4), np.uint8)
    iou, dsc = per_image_scores(empty, empty)
    assert iou[0] == 1.0 and dsc[0] == 1.0
    full = np.ones((1, 4, 4), np.uint8)
    iou, dsc = per_image_scores(full, empty)
    assert iou[0] == 0.0 and dsc[0] == 0.0
    assert dice(empty, empty) == 1.0 and dice(full, empty) == 0.0
    assert Confusion().summary()["dsc"] == 0.0


def test_confusion_accumulates_like_one_big_matrix():
    rng = np.random.default_rng(1)
    a, b = rng.random((2, 3, 16, 16)) > 0.5
    one, parts = Confusion(), Confusion()
    one.add(a, b)
    for x, y in zip(a, b, strict=True):
        c = Confusion()
        c.add(x, y)
        parts += c
    assert one == parts and one.tp + one.fp + one.fn + one.tn == a.size


def test_size_strata_partition():
    masks = np.zeros((6, 10, 10), np.uint8)
    for i, area in enumerate([0, 5, 9, 10, 29, 100]):
        masks[i].flat[:area] = 1
    strata = size_strata(masks)
    assert [s[0] for s in strata] == [b[0] for b in SIZE_BINS]
    assert [list(s[2]) for s in strata] == [[0, 1, 2], [3, 4], [5]]
    ragged = [m[: 5 + i] for i, m in enumerate(masks)]  # native sizes differ per image
    assert np.allclose(area_fractions(ragged), [np.count_nonzero(m) / m.size for m in ragged])


def test_threshold_counts_match_brute_force_and_pooled_confusion():
    rng = np.random.default_rng(3)
    prob, gt = rng.random((40, 30)).astype(np.float32), rng.random((40, 30)) < 0.3
    thresholds = (0.1, 0.37, 0.5, 0.9)
    counts = threshold_counts(prob, gt, thresholds)
    for (tp, fp, fn), t in zip(counts, thresholds, strict=True):
        pred = prob >= t
        assert (tp, fp, fn) == ((pred & gt).sum(), (pred & ~gt).sum(), (~pred & gt).sum())
    conf = Confusion()
    conf.add(prob >= 0.5, gt)
    assert tuple(counts[2]) == (conf.tp, conf.fp, conf.fn)
    dsc, iou = dsc_iou_from_counts(*counts[2])
    assert dsc == pytest.approx(conf.summary()["dsc"]) and iou == pytest.approx(conf.summary()["miou"])
    assert dsc_iou_from_counts(0, 0, 0) == (1.0, 1.0)  # nothing to find, nothing found
