"""``egeunet export``: the table-driven CLI and API, bad input with clear errors, failures isolated as rows,
no partial files."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from export_fixtures import calib_path, no_temp_files  # noqa: F401  (fixture)

from egeunet_deploy.export import TARGETS, ExportResult, export_all
from egeunet_deploy.export.api import artifact_name, io_spec, plan
from egeunet_deploy.export.metadata import read_manifest, read_metadata
from egeunet_deploy.main import main
from egeunet_deploy.model.ege_unet import create_model


def run(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(args)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_list_prints_the_table(capsys):
    rc, out, _ = run(["export", "--list"], capsys)
    assert rc == 0
    for name, t in TARGETS.items():
        assert name in out and ",".join(t.precisions) in out


def test_plan_covers_the_done_set_and_says_why_a_precision_is_skipped():
    pairs = {(t.name, p) for t, p in plan()}
    assert {("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8"),
            ("coreml", "fp32"), ("coreml", "fp16"), ("coreml", "int8w")} <= pairs
    ok, reason = TARGETS["coreml"].precision_available("int8")
    assert ok == (sys.platform == "darwin") and (ok or "macOS" in reason)
    for t, p in plan():
        if (t.name, p) != ("coreml", "int8"):
            assert t.precision_available(p) == (True, "ok"), (t.name, p)


def test_artifact_names_follow_the_convention():
    onnx, tfl = TARGETS["onnx"], TARGETS["tflite"]
    assert artifact_name(onnx, "fp32", io_spec(onnx, False, False, False)) == "egeunet_fp32.onnx"
    assert artifact_name(onnx, "int8", io_spec(onnx, True, False, False)) == "egeunet_int8_raw.onnx"
    assert artifact_name(tfl, "fp16", io_spec(tfl, False, True, False)) == "egeunet_fp16.tflite"
    assert artifact_name(tfl, "fp32", io_spec(tfl, True, False, False)) == "egeunet_fp32_raw.tflite"
    assert artifact_name(TARGETS["coreml"], "int8w", io_spec(TARGETS["coreml"], False, False, False)) == \
        "egeunet_int8w.mlpackage"


def test_cli_export_onnx(tmp_path, capsys):
    rc, out, _ = run(["export", "--target", "onnx", "--out", str(tmp_path)], capsys)
    assert rc == 0 and "egeunet_fp32.onnx" in out
    assert read_metadata(tmp_path / "egeunet_fp32.onnx")["precision"] == "fp32"
    assert list(read_manifest(tmp_path)["artifacts"]) == ["egeunet_fp32.onnx"]
    assert not no_temp_files(tmp_path)


@pytest.mark.parametrize("args, message", [
    (["--target", "onxx"], "did you mean 'onnx'"),
    (["--target", "tflite", "--precision", "fp61"], "did you mean 'fp16'"),
    (["--target", "tflite", "--precision", "int8w"], "tflite does not export precision 'int8w'"),
    (["--target", "onnx", "--precision", "fp16"], "it exports fp32, int8"),
    (["--target", "tflite", "--dynamic-batch"], "does not support --dynamic-batch"),
    (["--target", "all", "--raw"], "apply to one artifact"),
    ([], "export needs --target"),
    (["--target", ""], "--target '' has an empty entry"),
    (["--target", "onnx,,tflite"], "has an empty entry"),
    (["--target", "onnx", "--precision", ""], "--precision '' has an empty entry"),
    (["--target", "onnx", "--calib", "c.npz"], "--calib is used by int8, int8-full only"),
    (["--target", "onnx", "--precision", "int8", "--blame-split", "test"], "--blame-split applies to --blame-data"),
])
def test_bad_names_and_options_are_refused_with_hints(args, message, tmp_path, capsys):
    rc, _, err = run(["export", *args, "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and message in err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_bad_weights_are_refused_naming_the_problem(tmp_path, capsys):
    out = str(tmp_path / "o")
    rc, _, err = run(["export", "--target", "onnx", "--weights", str(tmp_path / "nope.pt"), "--out", out], capsys)
    assert rc == 2 and "weights file not found" in err
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02 definitely not a checkpoint")
    rc, _, err = run(["export", "--target", "onnx", "--weights", str(corrupt), "--out", out], capsys)
    assert rc == 2 and "not a readable PyTorch weights file" in err
    other = tmp_path / "nobridge.pt"
    torch.save(create_model("egeunet_nobridge").state_dict(), other)  # bare state_dict of another variant
    rc, _, err = run(["export", "--target", "onnx", "--weights", str(other), "--out", out], capsys)
    assert rc == 2 and "missing keys" in err and "GAB1" in err
    narrow = tmp_path / "narrow.pt"
    torch.save(create_model("egeunet", c_list=(4, 8, 12, 16, 24, 32)).state_dict(), narrow)
    rc, _, err = run(["export", "--target", "onnx", "--weights", str(narrow), "--out", out], capsys)
    assert rc == 2 and "shape mismatch" in err and "file (3,) vs model (5,)" in err
    assert not (tmp_path / "o").exists()  # checked before the output folder is made


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc, _, err = run(["export", "--target", "onnx", "--out", str(blocker / "sub")], capsys)
    assert rc == 2 and "cannot be created" in err and str(blocker) in err
    if os.geteuid() == 0:
        return  # root writes through permission bits; the read-only case below needs a normal user
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    try:
        rc, _, err = run(["export", "--target", "onnx", "--out", str(ro)], capsys)
        assert rc == 2 and "not writable" in err
    finally:
        ro.chmod(0o700)


def test_calibration_from_another_contract_is_refused(tmp_path, calib_path, capsys):  # noqa: F811
    import io
    import json

    import numpy as np

    with np.load(calib_path) as z:
        images, manifest = z["images"], json.loads(str(z["manifest"].item()))
    manifest["contract_sha256"] = "f" * 64
    buf = io.BytesIO()
    np.savez(buf, images=images, manifest=np.array(json.dumps(manifest)))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(buf.getvalue())
    rc, _, err = run(["export", "--target", "onnx", "--precision", "int8", "--calib", str(bad), "--out",
                      str(tmp_path / "o")], capsys)
    assert rc == 2 and "another contract" in err
    assert not list((tmp_path / "o").glob("*.onnx"))


@pytest.mark.skipif(sys.platform == "darwin", reason="activation int8 exists on macOS")
def test_coreml_activation_int8_is_a_skipped_row_or_a_clear_error(tmp_path, capsys):
    results = export_all(out_dir=tmp_path, targets=["coreml"], precisions=["int8"], log=None)
    assert [(r.target, r.precision, r.status) for r in results] == [("coreml", "int8", "skipped")]
    assert "macOS" in results[0].error and results[0].path is None
    rc, _, err = run(["export", "--target", "coreml", "--precision", "int8", "--out", str(tmp_path)], capsys)
    assert rc == 2 and "macOS" in err


@pytest.mark.slow
def test_a_failing_artifact_is_a_row_not_a_crash(tmp_path, calib_path, capsys):  # noqa: F811
    """Something real in the way of one artifact (a folder where the file goes): that row fails, the next one is
    built, the table shows both, the exit code is 1, and the failed write leaves no temporary file behind."""
    (tmp_path / "egeunet_fp32.onnx").mkdir()
    rc, out, _ = run(["export", "--target", "onnx", "--precision", "fp32,int8", "--calib", str(calib_path),
                      "--no-blame", "--out", str(tmp_path)], capsys)
    assert rc == 1
    table = out[out.index("Export summary"):]
    assert "❌ failed" in table and "✅ ok" in table and "egeunet_int8.onnx" in table
    assert (tmp_path / "egeunet_int8.onnx").is_file() and (tmp_path / "egeunet_fp32.onnx").is_dir()
    assert list(read_manifest(tmp_path)["artifacts"]) == ["egeunet_int8.onnx"]
    assert not no_temp_files(tmp_path)


def test_export_result_fields():
    r = ExportResult("onnx", "fp32", "ok")
    assert (r.path, r.size_bytes, r.seconds, r.error) == (None, None, None, None)


def test_a_damaged_manifest_is_refused_before_the_conversion(tmp_path, capsys):
    """Before: the artifact was converted and written, then the manifest update failed, leaving an artifact that no
    manifest lists."""
    (tmp_path / "manifest.json").write_text("{bad")
    rc, _, err = run(["export", "--target", "onnx", "--out", str(tmp_path)], capsys)
    assert rc == 2 and "unreadable manifest" in err
    assert not list(tmp_path.glob("*.onnx"))


def test_errors_name_the_users_path_not_a_temporary_file(tmp_path, capsys):
    (tmp_path / "egeunet_fp32.onnx").mkdir()
    rc, _, err = run(["export", "--target", "onnx", "--out", str(tmp_path)], capsys)
    assert rc == 2 and f"{tmp_path / 'egeunet_fp32.onnx'}: a folder is in the way" in err
    assert ".tmp" not in err and not no_temp_files(tmp_path)


def test_an_empty_out_path_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["export", "--target", "onnx", "--out", ""])
    assert info.value.code == 2 and "--out: an empty path" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
