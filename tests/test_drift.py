"""``egeunet drift``: real exported artifacts pass, a perturbed and a mislabelled artifact fail, the statistics and
tolerances behave, and the report (JSON, HTML, PNG) is complete."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from egeunet_deploy.export.metadata import METADATA_KEY
from egeunet_deploy.runtimes.drift import (
    Scored,
    bootstrap_ci,
    compare,
    load_tolerances,
    run_drift,
    tolerance_for,
)


def rewrite_onnx(src: Path, dst: Path, meta_update: dict | None = None, perturb: bool = False) -> Path:
    """Copy an ONNX artifact, optionally changing its metadata or adding a large error to one weight."""
    model = onnx.load(str(src))
    if perturb:
        conv_weights = {node.input[1] for node in model.graph.node if node.op_type == "Conv"}
        weights = [t for t in model.graph.initializer if t.name in conv_weights]
        init = max(weights, key=lambda t: int(np.prod(t.dims)))  # a real conv weight, not a folded constant
        w = numpy_helper.to_array(init).copy()
        w.flat[0] += 5.0 * (float(np.abs(w).max()) + 1.0)
        init.CopyFrom(numpy_helper.from_array(w, init.name))
    if meta_update:
        for prop in model.metadata_props:
            if prop.key == METADATA_KEY:
                meta = json.loads(prop.value)
                for k, v in meta_update.items():
                    if isinstance(v, dict):
                        meta[k] = {**meta[k], **v}
                    else:
                        meta[k] = v
                prop.value = json.dumps(meta)
    onnx.save(model, str(dst))
    return dst


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, exported) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("drift_artifacts")
    good_onnx = shutil.copy(exported("onnx"), folder / "egeunet_fp32.onnx")
    good_tflite = shutil.copy(exported("tflite"), folder / "egeunet_fp32.tflite")
    broken = rewrite_onnx(Path(good_onnx), folder / "egeunet_fp32_perturbed.onnx", perturb=True)
    meta = json.loads(next(p.value for p in onnx.load(str(good_onnx)).metadata_props if p.key == METADATA_KEY))
    wrong = "NHWC" if meta["input"]["layout"] == "NCHW" else "NCHW"
    mislabelled = rewrite_onnx(Path(good_onnx), folder / "egeunet_fp32_wronglayout.onnx",
                               meta_update={"input": {"layout": wrong}, "output": {"layout": wrong}})
    for name, source in (("egeunet_fp32_truncated.onnx", good_onnx), ("egeunet_fp32_truncated.tflite", good_tflite)):
        (folder / name).write_bytes(Path(source).read_bytes()[:20000])  # a copy cut short, as by a full disk
    return {"dir": folder, "onnx": Path(good_onnx), "tflite": Path(good_tflite), "perturbed": broken,
            "wronglayout": mislabelled}


@pytest.fixture(scope="module")
def report(artifacts, sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("drift_report")
    rep = run_drift(artifacts["dir"], sample_dir, split="test", out=out, threads=1, progress=False)
    return rep, out


def by_name(rep: dict, name: str) -> dict:
    return next(r for r in rep["artifacts"] if r["name"] == name)


def test_fp32_artifacts_pass(report):
    rep, _ = report
    for name in ("egeunet_fp32.onnx", "egeunet_fp32.tflite"):
        r = by_name(rep, name)
        assert r["status"] == "passed", r.get("reason")
        assert abs(r["delta"]["dsc"]) <= 0.0005 and r["agreement"]["dsc"] >= 0.999
        assert r["prob_diff"]["max"] < 1e-3
        assert r["runtime"]["backend"] in ("onnxruntime", "litert")


def test_perturbed_weight_fails(report):
    r = by_name(report[0], "egeunet_fp32_perturbed.onnx")
    assert r["status"] == "failed" and r["passed"] is False
    failed = {c["name"] for c in r["checks"] if not c["passed"]}
    assert "agreement_dsc_min" in failed and "prob_abs_max" in failed
    assert "agreement_dsc_min" in r["reason"]


def test_wrong_layout_is_refused(report):
    r = by_name(report[0], "egeunet_fp32_wronglayout.onnx")
    assert r["status"] == "error" and r["passed"] is False
    assert "contradicts its metadata" in r["reason"]


@pytest.mark.parametrize("name, message", [("egeunet_fp32_truncated.onnx", "not a valid ONNX model"),
                                           ("egeunet_fp32_truncated.tflite", "not a valid TFLite model")])
def test_truncated_artifact_is_an_error_row_and_the_rest_run(report, name, message):
    rep, _ = report
    r = by_name(rep, name)
    assert r["status"] == "error" and r["passed"] is False and message in r["reason"]
    assert {by_name(rep, n)["status"] for n in ("egeunet_fp32.onnx", "egeunet_fp32.tflite")} == {"passed"}


def test_report_schema_and_consistency(report, sample_test_set):
    rep, _ = report
    assert rep["passed"] is False  # one bad artifact fails the whole report
    ref = rep["reference"]["pooled"]
    assert 0.0 < ref["miou"] < ref["dsc"] < 1.0
    n = len(sample_test_set)
    assert rep["n_images"] == n
    for r in rep["artifacts"]:
        assert {"file", "format", "precision", "passed"} <= set(r)
        if "pooled" not in r:
            continue
        assert set(r["pooled"]) >= {"miou", "dsc"} and set(r["delta"]) == {"miou", "dsc"}
        assert r["delta"]["dsc"] == pytest.approx(r["pooled"]["dsc"] - ref["dsc"])
        assert r["delta"]["miou"] == pytest.approx(r["pooled"]["miou"] - ref["miou"])
        lo, hi = r["per_image"]["delta_dsc"]["ci95"]
        assert lo <= r["per_image"]["delta_dsc"]["mean"] <= hi
        assert sum(s["n"] for s in r["strata"]) == n
        assert len(r["worst"]) == min(8, n)
        flips = [w["flipped_pixels"] for w in r["worst"]]
        assert flips == sorted(flips, reverse=True)
        assert 0.0 <= r["agreement"]["flipped_fraction"] <= 1.0


def test_report_files(report):
    rep, out = report
    on_disk = json.loads((out / "drift.json").read_text())
    assert on_disk["artifacts"][0]["file"] == rep["artifacts"][0]["file"]
    html = (out / "report.html").read_text()
    assert "FAILED" in html and "egeunet_fp32_perturbed.onnx" in html
    for name in rep["figures"].values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert name in html
    for r in rep["artifacts"]:
        if r.get("overlay_png"):
            assert (out / r["overlay_png"]).is_file()


def test_cli_exit_codes(artifacts, sample_dir, tmp_path, capsys):
    from egeunet_deploy.main import main

    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(artifacts["onnx"], good)
    assert main(["drift", "--artifacts", str(good), "--data", str(sample_dir), "--limit", "8", "--threads", "1",
                 "--no-progress"]) == 0
    assert (good / "drift" / "drift.json").is_file()
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(artifacts["perturbed"], bad)
    assert main(["drift", "--artifacts", str(bad), "--data", str(sample_dir), "--limit", "8", "--threads", "1",
                 "--out", str(tmp_path / "r"), "--no-progress"]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert main(["drift", "--artifacts", str(tmp_path / "absent"), "--data", str(sample_dir)]) == 2


def test_tolerance_file_overrides_per_format(artifacts, sample_dir, tmp_path):
    loose = tmp_path / "loose.yaml"
    loose.write_text("format:\n  onnx:\n    fp32: {delta_dsc_abs_max: 1.0, agreement_dsc_min: 0.0, "
                     "prob_abs_max: 1.0}\n")
    rep = run_drift([artifacts["perturbed"], artifacts["tflite"]], sample_dir, limit=8, tolerance=loose, threads=1,
                    progress=False)
    assert by_name(rep, "egeunet_fp32_perturbed.onnx")["status"] == "passed"
    assert by_name(rep, "egeunet_fp32.tflite")["tolerance"]["agreement_dsc_min"] == 0.999  # other formats untouched
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps({"precision": {"fp32": {"prob_abs_max": 0.0}}}))
    rep = run_drift([artifacts["onnx"]], sample_dir, limit=8, tolerance=strict, threads=1, progress=False)
    assert by_name(rep, "egeunet_fp32.onnx")["status"] == "failed"


@pytest.mark.parametrize("text, message", [
    ("precision:\n  fp32: {agreement_min: 0.9}\n", "unknown limit 'agreement_min'"),
    ("thresholds: {}\n", "top-level keys"),
    ("precision:\n  fp32: {prob_abs_max: -1}\n", "non-negative"),
    ("precision: [1, 2\n", "not valid YAML"),
    ("[]\n", "must be a mapping"),
    ("0\n", "must be a mapping"),
])
def test_bad_tolerance_files(tmp_path, text, message):
    f = tmp_path / "tol.yaml"
    f.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_tolerances(f)


@pytest.mark.parametrize("limit", [0, -1])
def test_limit_below_one_is_refused(artifacts, sample_dir, limit, capsys):
    from egeunet_deploy.main import main

    with pytest.raises(ValueError, match="--limit must be >= 1"):
        run_drift([artifacts["onnx"]], sample_dir, limit=limit, progress=False)
    assert main(["drift", "--artifacts", str(artifacts["onnx"]), "--data", str(sample_dir), "--limit", str(limit),
                 "--no-progress"]) == 2
    assert "error: --limit must be >= 1" in capsys.readouterr().err


def report_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_report_folder_is_replaced_whole(artifacts, sample_dir, tmp_path):
    """A second run into the same --out leaves nothing of the first (its worst_* images named after other
    artifacts), and no temporary folder beside it."""
    out = tmp_path / "r"
    run_drift([artifacts["onnx"]], sample_dir, limit=4, out=out, threads=1, progress=False)
    # an image of the first report (fp32 drawn only where it differs from PyTorch, which on 4 images it may not)
    (out / "worst_00_egeunet_fp32.onnx.png").write_bytes(b"an earlier report's figure")
    assert "egeunet_fp32.onnx" in (out / "report.html").read_text()
    run_drift([artifacts["tflite"]], sample_dir, limit=4, out=out, threads=1, progress=False)
    names = set(report_files(out))
    assert not [n for n in names if n.endswith(".onnx.png")]
    assert "egeunet_fp32.onnx" not in (out / "report.html").read_text()
    assert {"drift.json", "report.html", "drift_summary.png"} <= names
    assert [p.name for p in tmp_path.iterdir()] == ["r"]


def test_interrupted_run_keeps_the_previous_report(artifacts, sample_dir, tmp_path, monkeypatch):
    """Ctrl-C while the report is being drawn (here: right after the first worst-image figure) leaves the previous
    report exactly as it was, and no temporary folder."""
    from egeunet_deploy.runtimes import report as rep

    out = tmp_path / "r"
    run_drift([artifacts["onnx"]], sample_dir, limit=4, out=out, threads=1, progress=False)
    before = report_files(out)
    draw = rep.worst_overlays

    def draw_then_ctrl_c(*args, **kwargs):
        draw(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(rep, "worst_overlays", draw_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_drift([artifacts["tflite"]], sample_dir, limit=4, out=out, threads=1, progress=False)
    assert report_files(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["r"]


def test_out_holding_other_files_is_refused_before_any_work(artifacts, sample_dir, tmp_path):
    """The report replaces its folder whole, so a folder that is not a previous report (no drift.json) is refused,
    and nothing in it is touched."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a drift report"):
        run_drift([artifacts["onnx"]], tmp_path / "no data here", out=mine, progress=False)  # data never read
    assert report_files(mine) == {"notes.txt": b"keep me"}
    with pytest.raises(ValueError, match="a file is in the way"):
        run_drift([artifacts["onnx"]], sample_dir, out=mine / "notes.txt", progress=False)
    old_style = tmp_path / "old_style"  # a report written into the artifacts' folder by an earlier version
    old_style.mkdir()
    (old_style / "drift.json").write_text("{}")
    artifact = Path(shutil.copy(artifacts["onnx"], old_style))
    with pytest.raises(ValueError, match="holds inputs of this run"):
        run_drift([artifact], sample_dir, out=old_style, progress=False)
    assert artifact.is_file()


@pytest.fixture()
def data_with_a_truncated_image(sample_dir, tmp_path) -> tuple[Path, Path]:
    """Six real test pairs of the sample, one image cut short (a real damaged JPEG, not a stand-in)."""
    from egeunet_deploy.model.data import find_pairs

    root = tmp_path / "data"
    for sub in ("images", "masks"):
        (root / "test" / sub).mkdir(parents=True)
    pairs, _ = find_pairs(sample_dir, "test")
    for pair in pairs[:6]:
        shutil.copy(pair.image, root / "test" / "images")
        shutil.copy(pair.mask, root / "test" / "masks")
    bad = root / "test" / "images" / pairs[2].image.name
    bad.write_bytes(bad.read_bytes()[:300])
    return root, bad


def test_skip_bad(artifacts, data_with_a_truncated_image, tmp_path, capsys):
    from egeunet_deploy.main import main

    data, bad = data_with_a_truncated_image
    args = ["drift", "--artifacts", str(artifacts["onnx"]), "--data", str(data), "--threads", "1", "--no-progress",
            "--out", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert bad.name in err and "pass --skip-bad" in err
    assert main([*args, "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 unpaired or unreadable file(s)" in out and str(bad) in out
    report = json.loads((tmp_path / "r" / "drift.json").read_text())
    assert report["n_images"] == 5 and len(report["skipped_files"]) == 1 and str(bad) in report["skipped_files"][0]
    assert bad.name in (tmp_path / "r" / "report.html").read_text()


def test_default_tolerances_match_the_issue():
    tol = load_tolerances()
    assert tolerance_for(tol, "onnx", "fp32")["delta_dsc_abs_max"] == 0.0005
    assert tolerance_for(tol, "tflite", "fp32")["agreement_dsc_min"] == 0.999
    assert tolerance_for(tol, "tflite", "fp16")["delta_dsc_abs_max"] == 0.002
    assert tolerance_for(tol, "coreml", "int8")["delta_dsc_abs_max"] == 0.005
    assert tolerance_for(tol, "onnx", "bf13") is None


# --- statistics on synthetic data (no runtime) ------------------------------------------------------------------


def test_bootstrap_ci_properties():
    assert bootstrap_ci(np.full(50, 0.25)) == pytest.approx((0.25, 0.25))
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.1, 1.0, 40), rng.normal(0.1, 1.0, 4000)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5  # ~ 1/sqrt(n)
    assert bootstrap_ci(small) == (lo_s, hi_s)  # deterministic (seeded)


def test_compare_identical_and_flipped():
    rng = np.random.default_rng(0)
    gt = (rng.random((4, 16, 16)) > 0.6).astype(np.uint8)
    probs = rng.random((4, 16, 16)).astype(np.float32)
    ref = Scored.of(probs, gt)
    same = compare(Scored.of(probs.copy(), gt), ref, gt, ["a", "b", "c", "d"])
    assert same["agreement"]["dsc"] == 1.0 and same["agreement"]["flipped_pixels"] == 0
    assert same["delta"] == {"miou": 0.0, "dsc": 0.0} and same["prob_diff"]["max"] == 0.0
    flipped = probs.copy()
    flipped[2] = 1.0 - flipped[2]  # image "c" inverted
    diff = compare(Scored.of(flipped, gt), ref, gt, ["a", "b", "c", "d"])
    assert diff["worst"][0]["name"] == "c"
    assert diff["agreement"]["images_with_flips"] == 1
    assert diff["agreement"]["flipped_pixels"] == int(((flipped >= 0.5) != (probs >= 0.5)).sum())
