"""Where the errors are: by-size figures, the threshold sweep and ``egeunet evaluate --report DIR``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from egeunet_deploy.main import main
from egeunet_deploy.model.data import LoadedSet
from egeunet_deploy.model.evaluate import SWEEP_THRESHOLDS, restratified_dsc, score


def synthetic_set(masks: np.ndarray) -> LoadedSet:
    n, h, w = masks.shape
    return LoadedSet(images=np.zeros((n, h, w, 3), np.uint8), masks=masks, names=[f"im{i}" for i in range(n)],
                     sources=[Path(f"im{i}.png") for i in range(n)], native_sizes=[(h, w)] * n)


def test_sweep_finds_a_shifted_model_and_strata_add_up():
    """Probabilities of 0.35 on every lesion pixel: nothing at the contract's 0.5, everything at 0.3 and below."""
    masks = np.zeros((3, 20, 20), np.uint8)
    masks[0, :1, :10] = 1  # 2.5%: small
    masks[1, :4, :] = 1  # 20%: medium
    masks[2, :10, :] = 1  # 50%: large
    probs = np.where(masks == 1, 0.35, 0.05).astype(np.float32)
    result, table = score(probs, synthetic_set(masks))
    assert result["pooled"]["dsc"] == 0.0
    sweep = result["threshold_sweep"]
    assert sweep["thresholds"] == list(SWEEP_THRESHOLDS) and 0.5 in sweep["thresholds"]
    assert sweep["pooled_dsc"][sweep["thresholds"].index(0.5)] == result["pooled"]["dsc"]
    assert sweep["best"] == {"threshold": 0.1, "pooled_dsc": 1.0}  # first of the perfect ones (0.1, 0.2, 0.3)
    assert sweep["pooled_dsc"][sweep["thresholds"].index(0.4)] == 0.0  # 0.4 misses everything too
    rows = result["by_lesion_size"]
    assert [r["n"] for r in rows] == [1, 1, 1]
    assert [r["missed_pixels"] for r in rows] == [10, 80, 200] and all(r["false_pixels"] == 0 for r in rows)
    assert sum(r["share_of_wrong_pixels"] for r in rows) == pytest.approx(1.0)
    assert np.allclose(table["lesion_fraction"], [0.025, 0.2, 0.5]) and np.all(table["predicted_fraction"] == 0)


def test_restratified_dsc_separates_size_mix_from_per_size_difficulty():
    """Small lesions found exactly, large ones half missed: the score depends on how many of each a split holds."""
    masks = np.zeros((3, 20, 20), np.uint8)
    masks[0, :1, :10] = 1  # small, 10 px, found
    masks[1:, :10, :] = 1  # two large ones, 200 px each, the lower half missed
    probs = masks.astype(np.float32) * 0.9
    probs[1:, 5:10, :] = 0.1
    result, _ = score(probs, synthetic_set(masks))
    rows = result["by_lesion_size"]
    assert [r["found_pixels"] for r in rows] == [10, 0, 200] and [r["missed_pixels"] for r in rows] == [0, 0, 200]
    own_mix = {r["name"]: r["n"] for r in rows}
    assert restratified_dsc(rows, own_mix) == pytest.approx(result["pooled"]["dsc"])  # 420 / 620
    # two small images and one large: 2 * (20 + 100) / (2 * (20 + 100) + 100)
    assert restratified_dsc(rows, {"small": 2, "large": 1}) == pytest.approx(240 / 340)
    assert restratified_dsc(rows, {"small": 1}) == 1.0
    assert restratified_dsc(rows, {"medium": 3}) is None  # no medium lesion here to scale from


def test_evaluate_report_writes_table_and_pictures(capsys, sample_dir, tmp_path, shipped):
    report = tmp_path / "report"
    code = main(["evaluate", "--data", str(sample_dir), "--split", "test", "--report", str(report), "--json",
                 str(tmp_path / "r.json"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and f"report: {report.resolve()}" in out and "by lesion size: " in out
    result = json.loads((report / "evaluation.json").read_text())
    assert result["report"]["files"] == ["per_image.csv", "scores.png", "worst.png", "evaluation.json"]
    assert result == json.loads((tmp_path / "r.json").read_text())  # --json and the report say the same

    rows = list(csv.DictReader((report / "per_image.csv").open()))
    assert len(rows) == result["n_images"] == 32
    assert [r["name"] for r in rows] == sorted(p.stem for p in (sample_dir / "test" / "images").iterdir())
    assert np.mean([float(r["dsc"]) for r in rows]) == pytest.approx(result["per_image"]["dsc"], abs=1e-6)
    confusion = result["pooled"]["confusion"]
    assert sum(int(r["missed_pixels"]) for r in rows) == confusion["fn"]
    assert sum(int(r["false_pixels"]) for r in rows) == confusion["fp"]
    strata = result["by_lesion_size"]
    assert sum(s["n"] for s in strata) == 32 and sum(s["missed_pixels"] for s in strata) == confusion["fn"]
    for s in strata:
        mine = [float(r["lesion_fraction"]) for r in rows if s["area_fraction"][0] <= float(r["lesion_fraction"])
                < s["area_fraction"][1] + (1e-9 if s["name"] == "large" else 0)]
        assert len(mine) == s["n"]
    sweep = result["threshold_sweep"]
    assert sweep["pooled_dsc"][sweep["thresholds"].index(0.5)] == pytest.approx(result["pooled"]["dsc"])
    assert sweep["best"]["pooled_dsc"] == max(sweep["pooled_dsc"])

    scores_png, worst_png = Image.open(report / "scores.png"), Image.open(report / "worst.png")
    assert scores_png.width > 800 and scores_png.height > 600
    assert worst_png.height > 2 * worst_png.width  # 8 rows of 3 square panels
    assert not list(report.glob("*.tmp*"))  # every file written atomically, nothing left over

    code = main(["evaluate", "--data", str(sample_dir), "--split", "test", "--native", "--report",
                 str(tmp_path / "native"), "--no-progress"])
    native = json.loads((tmp_path / "native" / "evaluation.json").read_text())
    assert code == 0 and native["resolution"] == "native"
    assert sum(s["missed_pixels"] for s in native["by_lesion_size"]) == native["pooled"]["confusion"]["fn"]


def test_report_into_a_file_is_refused_and_the_file_kept(capsys, sample_dir, tmp_path):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    code = main(["evaluate", "--data", str(sample_dir), "--report", str(taken), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "is a file" in err and str(taken) in err
    assert taken.read_text() == "mine"
