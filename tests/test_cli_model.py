"""The model part's commands end to end: info, evaluate, predict, and their errors (exit code 2, clear message)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from egeunet_deploy.main import main
from egeunet_deploy.model.bundled import DEFAULT_WEIGHTS


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json_gives_the_paper_figures_and_the_weights_used(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "info", "--json")
    info = json.loads(out)
    assert code == 0
    assert info["params"] == 53_374 and info["macs"] == 72_096_256
    assert info["weights"] == str(DEFAULT_WEIGHTS.resolve())
    assert info["contract"]["input_height"] == 256 and info["contract"]["threshold"] == 0.5
    copy = tmp_path / "mine.pt"
    shutil.copy(DEFAULT_WEIGHTS, copy)
    _, out, _ = run_cli(capsys, "info", "--weights", str(copy), "--json")
    assert json.loads(out)["weights"] == str(copy.resolve())


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "egeunet_deploy", "info"], capture_output=True, text=True)
    assert result.returncode == 0 and "53,374 parameters" in result.stdout


def test_output_into_a_closed_pipe_exits_141_without_a_traceback():
    """``egeunet info --json | head -1``: the reader is gone before the command writes; no traceback, exit 141."""
    proc = subprocess.Popen([sys.executable, "-m", "egeunet_deploy", "info", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # no reader left: the command's first write fails with EPIPE
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_evaluate_json_schema_and_values(capsys, sample_dir, tmp_path, shipped):
    out_json = tmp_path / "r.json"
    code, out, _ = run_cli(capsys, "evaluate", "--data", str(sample_dir), "--split", "test", "--json", str(out_json),
                           "--no-progress")
    assert code == 0
    r = json.loads(out_json.read_text())
    assert r["n_images"] == 32 and r["resolution"] == "model"
    for group in ("pooled", "per_image"):
        assert 0.0 < r[group]["miou"] < r[group]["dsc"] <= 1.0
    c = r["pooled"]["confusion"]
    assert c["tp"] + c["fp"] + c["fn"] + c["tn"] == 32 * 256 * 256
    assert r["pooled"]["dsc"] == pytest.approx(2 * c["tp"] / (2 * c["tp"] + c["fp"] + c["fn"]))
    assert f"DSC {r['pooled']['dsc']:.4f}" in out
    code, _, _ = run_cli(capsys, "evaluate", "--data", str(sample_dir), "--split", "test", "--native", "--json",
                         str(out_json), "--no-progress")
    native = json.loads(out_json.read_text())
    assert native["resolution"] == "native"
    assert sum(native["pooled"]["confusion"].values()) == 32 * 256 * 192
    assert abs(native["pooled"]["dsc"] - r["pooled"]["dsc"]) < 0.02


def test_predict_writes_masks_at_input_resolution(capsys, sample_dir, tmp_path):
    images = sorted((sample_dir / "test" / "images").iterdir())[:2]
    code, out, _ = run_cli(capsys, "predict", str(images[0]), str(images[1]), "--out", str(tmp_path / "p"),
                           "--no-progress")
    assert code == 0 and "wrote 2 mask(s)" in out
    mask = np.asarray(Image.open(tmp_path / "p" / f"{images[0].stem}_mask.png"))
    assert mask.shape == (192, 256) and set(np.unique(mask)) <= {0, 255}
    overlay = Image.open(tmp_path / "p" / f"{images[0].stem}_overlay.png")
    assert overlay.size == (256, 192) and overlay.mode == "RGB"
    code, _, _ = run_cli(capsys, "predict", str(sample_dir / "test" / "images"), "--out", str(tmp_path / "all"),
                         "--no-progress")
    assert code == 0 and len(list((tmp_path / "all").glob("*_mask.png"))) == 32


def test_predict_folder_with_an_unreadable_image_and_clashing_names(capsys, sample_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    good = sorted((sample_dir / "test" / "images").iterdir())[:2]
    for f in good:
        shutil.copy(f, folder)
    (folder / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff garbage")  # sorted last: the two good ones come first
    code, _, err = run_cli(capsys, "predict", str(folder), "--out", str(tmp_path / "stop"), "--no-progress")
    assert code == 2 and "zz_broken.jpg" in err and "2 of 3 masks were written" in err and "--skip-bad" in err
    assert sorted(f.name for f in (tmp_path / "stop").iterdir()) == sorted(
        f"{g.stem}_{kind}.png" for g in good for kind in ("mask", "overlay"))  # complete files only, no temp files
    code, out, _ = run_cli(capsys, "predict", str(folder), "--out", str(tmp_path / "skip"), "--skip-bad",
                           "--no-progress")
    assert code == 0 and f"skipped {folder / 'zz_broken.jpg'}: not an image" in out
    assert "wrote 2 mask(s) and overlay(s)" in out and "skipped 1 unreadable image(s)" in out
    # a.jpg and a.png would both write a_mask.png: refused before any work
    Image.open(good[0]).save(folder / f"{good[0].stem}.png")
    code, _, err = run_cli(capsys, "predict", str(folder), "--out", str(tmp_path / "clash"), "--skip-bad",
                           "--no-progress")
    assert code == 2 and "would write the same <stem>_mask.png" in err and f"{good[0].stem}.png" in err
    assert not (tmp_path / "clash").exists()


def test_an_output_folder_blocked_by_a_file_is_named(capsys, sample_dir, tmp_path):
    image = str(next((sample_dir / "test" / "images").iterdir()))
    blocker = tmp_path / "masks"
    blocker.write_text("keep me")
    code, _, err = run_cli(capsys, "predict", image, "--out", str(blocker), "--no-progress")
    assert code == 2 and err.strip() == f"error: {blocker}: a file is in the way; a folder is needed there"
    code, _, err = run_cli(capsys, "predict", image, "--out", str(blocker / "sub"), "--no-progress")
    assert code == 2 and err.strip() == f"error: {blocker / 'sub'}: part of this path is a file, not a folder"
    assert blocker.read_text() == "keep me"


@pytest.mark.parametrize("case", ["missing_weights", "corrupt_image", "empty_data", "unknown_split"])
def test_user_errors_exit_2_with_a_clear_message(capsys, tmp_path, sample_dir, case):
    if case == "missing_weights":
        args = ["evaluate", "--weights", str(tmp_path / "no.pt"), "--data", str(sample_dir)]
        expected = "weights file not found"
    elif case == "corrupt_image":
        bad = tmp_path / "bad.jpg"
        bad.write_bytes(b"\xff\xd8\xff garbage")
        args = ["predict", str(bad), "--out", str(tmp_path / "o")]
        expected = "bad.jpg"
    elif case == "empty_data":
        (tmp_path / "d" / "images").mkdir(parents=True)
        args = ["evaluate", "--data", str(tmp_path / "d")]
        expected = "no images found"
    else:
        args = ["evaluate", "--data", str(sample_dir), "--split", "validation"]
        expected = "no dataset layout found"
    code, _, err = run_cli(capsys, *args, "--no-progress")
    assert code == 2 and err.startswith("error: ") and expected in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
