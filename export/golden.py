"""Golden vectors: what the Android app's Kotlin core must compute, written from the one Python contract.

The phone re-implements three things it cannot import from Python: the resize (PIL's bilinear, antialiased when
shrinking), the per-image min-max for graphs without baked preprocessing, and the postprocessing (threshold, the
probability map brought back to the photo's size, lesion area, overlay). This module runs the Python definitions
(:mod:`egeunet_deploy.model.contract`, ``evaluate.predict_probs``/``upsample_prob``, ``predict.overlay``) on a few
real ISIC images plus edge cases and writes every intermediate, so the Kotlin unit tests
(``android_demo/core/src/test``) can prove the app computes the same numbers, and ``tests/test_golden.py`` can prove
the committed files still equal what Python computes today. Neither side may drift without a test failing.

Files (regenerating on the same weights writes the same bytes, except the zip entry date inside the metadata sample):

- ``golden.json``: the manifest (contract, its fingerprint, weights sha256, and per case: sizes, files with the
  sha256 of their decoded content, min/max of the model input, lesion areas, overlay sha256);
- ``<case>.native.png``: the decoded native RGB pixels (lossless PNG, so JPEG decoder differences do not matter);
- ``<case>.input.png``: the exact 256x256 uint8 RGB tensor the model must receive (``resize_rgb``);
- ``<case>.input_f32.gz``: the normalised float32 tensor, NHWC little-endian (graphs without baked preprocessing);
  written for the first real case and the constant case only (the others record its min/max), to keep the
  committed files small;
- ``<case>.prob_f32.gz``: PyTorch probabilities (256x256 float32 little-endian) from the given weights (not for
  the constant case, which only checks preprocessing: probability maps are the bulk of the bytes);
- ``<case>.mask.png`` / ``<case>.native_mask.png``: the binary mask (0 or 255) at model and at native size;
- ``metadata_sample.tflite``: ``export.metadata.append_tflite_metadata`` of a stand-in flatbuffer and the metadata
  record a deployment TFLite export carries, so the app's metadata reader is tested on the real byte layout;
- ``size_policy`` (manifest only): the app's photo-size policy (``android_demo/core`` ``PhotoSize.kt``, mirrored
  in :func:`size_plan`) on photo sizes from 1x1 to 100,000 px on a side: ``inSampleSize``, decoded and display size;
- ``large_*``: a photo larger than 8,000 px on a side (a real case's native pixels repeated ``LARGE_REPEAT`` times
  per axis, 8448x6336), taken through the app's path: decoded subsampled by the policy (every s-th pixel from s/2,
  as Android's sampled PNG decoding keeps them; generated from the source case's native PNG on both sides, so no
  big file is committed), its model input, PyTorch's probabilities, the mask at display size, area and overlay;
  plus ``reference``: how that compares with the full-resolution contract (`egeunet predict`'s masks);
- ``alpha.rgba.png``: RGBA pixels (every alpha 0..255 over several colours) and the sha256 of their composite
  over the neutral grey ``ALPHA_BACKGROUND``, as the Python reader and the app both flatten transparency.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..model.bundled import SAMPLE_DATA
from ..model.contract import CONTRACT, INPUT_HW, binarize, resize_rgb, to_model_input
from .metadata import append_tflite_metadata, build_metadata

GOLDEN_SCHEMA = 1
MANIFEST = "golden.json"
METADATA_SAMPLE = "metadata_sample.tflite"
# A stand-in for the flatbuffer in front of the appended zip: the reader only looks at what follows it.
STANDIN_FLATBUFFER = b"\x1c\x00\x00\x00TFL3" + bytes(22) + b"golden stand-in, not a model"
SHRINK_SIZE = (640, 480)  # (width, height): both axes shrink to 256, so the antialiased (wider) filter is used
MIXED_SIZE = (320, 160)  # x shrinks 320 -> 256 while y enlarges 160 -> 256; the probabilities go the other way
CONSTANT_SIZE = (300, 200)
CONSTANT_RGB = (137, 137, 137)  # grey: min == max over all channels, so the contract yields zeros, not NaN
# The app's photo-size policy (android_demo/core/src/main/kotlin/org/egeunet/core/PhotoSize.kt): same numbers.
MAX_DISPLAY_SIDE = 2048
MAX_DECODE_PIXELS = 8 * 1024 * 1024
POLICY_PHOTOS = [(1, 1), (100, 80), (256, 256), (255, 4000), (257, 300), (640, 480), (1024, 768), (2048, 1536),
                 (2049, 1537), (3000, 4000), (4032, 3024), (4096, 4096), (4097, 3000), (8000, 6000), (8160, 6120),
                 (8448, 6336), (9000, 9000), (12000, 9000), (16000, 500), (300, 20000), (30000, 30000),
                 (100000, 300), (100000, 100000)]
LARGE_REPEAT = 33  # 256x192 native pixels -> an 8448x6336 photo
ALPHA_BACKGROUND = (128, 128, 128)  # transparent pixels are composited on this neutral grey (model/imageio.py too)
ALPHA_FILE = "alpha.rgba.png"


@dataclass(frozen=True)
class GoldenInput:
    """One native image and where it came from."""

    name: str
    kind: str
    source: str
    image: Image.Image
    with_model: bool = True  # False: preprocessing only (no probabilities, masks or areas)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def golden_inputs(num: int = 2, image_dir: Path | None = None) -> list[GoldenInput]:
    """``num`` real ISIC images (spread over the sorted bundled test sample) plus the three edge cases."""
    from ..model.imageio import IMAGE_EXTENSIONS, read_rgb

    image_dir = Path(image_dir) if image_dir else SAMPLE_DATA / "test" / "images"
    files = sorted(f for f in image_dir.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
    if num < 1:
        raise ValueError(f"--num must be at least 1, got {num}")
    if len(files) < num + 1:
        raise ValueError(f"--num {num} is too many: {image_dir} has {len(files)} images and golden vectors take "
                         f"--num real ones plus one more for the resized edge cases (--num at most {len(files) - 1})")
    step = len(files) // (num + 1)
    picked = [files[i * step] for i in range(num + 1)]  # the last one seeds the shrink and mixed cases
    cases = [GoldenInput(f"isic_{f.stem}", "real", _rel(f), read_rgb(f)) for f in picked[:num]]
    seed = read_rgb(picked[num])
    cases.append(GoldenInput(f"shrink_{SHRINK_SIZE[0]}x{SHRINK_SIZE[1]}", "real, enlarged with PIL bicubic",
                             _rel(picked[num]), seed.resize(SHRINK_SIZE, Image.Resampling.BICUBIC)))
    cases.append(GoldenInput(f"mixed_{MIXED_SIZE[0]}x{MIXED_SIZE[1]}", "real, resized with PIL bicubic",
                             _rel(picked[num]), seed.resize(MIXED_SIZE, Image.Resampling.BICUBIC)))
    cases.append(GoldenInput("constant", "synthetic constant grey", f"RGB {CONSTANT_RGB}",
                             Image.new("RGB", CONSTANT_SIZE, CONSTANT_RGB), with_model=False))
    return cases


def _rel(path: Path) -> str:
    """A source path that does not depend on where the package is installed."""
    try:
        return str(path.resolve().relative_to(SAMPLE_DATA.resolve().parents[2]))
    except ValueError:
        return path.name


def sampled_size(width: int, height: int, s: int) -> tuple[int, int]:
    """What a decoder returns at ``inSampleSize`` s: each side // s, at least 1 (Skia's sampled decoding)."""
    return max(1, width // s), max(1, height // s)


def sample_size(width: int, height: int, model_wh: tuple[int, int] = (CONTRACT.input_width, CONTRACT.input_height),
                max_display: int = MAX_DISPLAY_SIDE, max_pixels: int = MAX_DECODE_PIXELS) -> int:
    """The app's ``inSampleSize``: the smallest power of two bringing the longer side to ``max_display`` or below,
    halved while an axis would fall below the model input it had, doubled while above ``max_pixels``."""
    s = 1
    while max(sampled_size(width, height, s)) > max_display:
        s *= 2

    def keeps_model_input(s: int) -> bool:
        w, h = sampled_size(width, height, s)
        return (width < model_wh[0] or w >= model_wh[0]) and (height < model_wh[1] or h >= model_wh[1])

    while s > 1 and not keeps_model_input(s):
        s //= 2
    while sampled_size(width, height, s)[0] * sampled_size(width, height, s)[1] > max_pixels:
        s *= 2
    return s


def display_size(width: int, height: int, max_display: int = MAX_DISPLAY_SIDE) -> tuple[int, int]:
    """The size the app shows a decoded image at: its own when it fits ``max_display``, else scaled to fit
    (the longer side becomes ``max_display``, the other rounds half up, at least 1)."""
    long = max(width, height)
    if long <= max_display:
        return width, height

    def scaled(side: int) -> int:
        return max(1, (side * max_display + long // 2) // long)

    return (max_display, scaled(height)) if width >= height else (scaled(width), max_display)


def size_plan(width: int, height: int) -> dict:
    """The policy's whole plan for a photo of (upright) size width x height."""
    s = sample_size(width, height)
    decoded = sampled_size(width, height, s)
    return {"photo": [width, height], "sample_size": s, "decoded": list(decoded),
            "display": list(display_size(*decoded))}


def point_sample(native: np.ndarray, repeat: int, s: int) -> np.ndarray:
    """The app's decode at ``inSampleSize`` s of ``native`` enlarged ``repeat`` times per axis by pixel repetition:
    pixels s/2, s/2 + s, ... on each axis (what Skia's sampled PNG decoding keeps), without building the full photo."""
    h, w = native.shape[:2]
    dw, dh = sampled_size(w * repeat, h * repeat, s)
    xs = np.minimum(s // 2 + s * np.arange(dw), w * repeat - 1) // repeat
    ys = np.minimum(s // 2 + s * np.arange(dh), h * repeat - 1) // repeat
    return np.ascontiguousarray(native[ys][:, xs])


def metadata_sample() -> dict:
    """The metadata record of a deployment TFLite export (uint8 NHWC in, probability out), made deterministic."""
    from .wrappers import INPUT_NAME, OUTPUT_NAME

    meta = build_metadata(fmt="tflite", precision="fp32", input_name=INPUT_NAME, input_shape=[1, *INPUT_HW, 3],
                          input_dtype="uint8", input_layout="NHWC", output_name=OUTPUT_NAME,
                          output_shape=[1, *INPUT_HW, 1], preprocessing_in_graph=True, weights_sha256="0" * 64)
    meta.update({"git_sha": None, "created_utc": "1970-01-01T00:00:00+00:00", "tool_versions": {}})
    return meta


def compute_case(case: GoldenInput, net, with_float: bool) -> tuple[dict, dict[str, bytes]]:
    """Everything the app must reproduce for one image: (manifest entry, {file name: file bytes})."""
    import inspect

    from ..model.evaluate import predict_probs, upsample_prob
    from ..model.predict import OVERLAY_RGB, overlay
    from ..model.threads import single_thread

    native = np.asarray(case.image, dtype=np.uint8)
    model_in = resize_rgb(case.image)
    n = case.name
    # (key, file name, decoded content, file bytes)
    parts = [("native", f"{n}.native.png", native, _png(native)),
             ("input", f"{n}.input.png", model_in, _png(model_in))]
    if with_float:
        x = to_model_input(model_in[None].copy()).permute(0, 2, 3, 1).contiguous().numpy()[0].astype("<f4")
        parts.append(("input_f32", f"{n}.input_f32.gz", x, _gz(x.tobytes())))
    entry = {"name": n, "kind": case.kind, "source": case.source,
             "native_width": native.shape[1], "native_height": native.shape[0],
             "input_min": int(model_in.min()), "input_max": int(model_in.max())}
    if case.with_model:
        with single_thread():  # reproducible to the bit on one CPU; thread counts differ by up to ~1e-4
            prob = predict_probs(net, model_in[None].copy())[0].astype("<f4")
        mask = binarize(prob)
        native_mask = binarize(upsample_prob(prob, native.shape[:2]))
        parts += [("prob", f"{n}.prob_f32.gz", prob, _gz(prob.tobytes())),
                  ("mask", f"{n}.mask.png", mask, _png(mask * 255)),
                  ("native_mask", f"{n}.native_mask.png", native_mask, _png(native_mask * 255))]
        lesion, native_lesion = int(mask.sum()), int(native_mask.sum())
        entry.update({
            "lesion_pixels": lesion, "lesion_percent": 100.0 * lesion / mask.size,
            "native_lesion_pixels": native_lesion,
            "native_lesion_percent": 100.0 * native_lesion / native_mask.size,
            "overlay": {"alpha": inspect.signature(overlay).parameters["alpha"].default, "rgb": list(OVERLAY_RGB),
                        "sha256": sha256(overlay(native, native_mask).tobytes())},
        })
    entry["files"] = {key: {"file": name, "sha256": sha256(np.ascontiguousarray(arr).tobytes())}
                      for key, name, arr, _ in parts}
    return entry, {name: data for _, name, _, data in parts}


def compute_large(source: dict, native: np.ndarray, net) -> tuple[dict, dict[str, bytes]]:
    """The app's path for a photo larger than 8,000 px on a side (``native`` repeated ``LARGE_REPEAT`` times per
    axis), and how it compares with the full-resolution contract that ``egeunet predict`` follows."""
    from ..model.evaluate import predict_probs, upsample_prob
    from ..model.predict import overlay
    from ..model.threads import single_thread

    h, w = native.shape[:2]
    pw, ph = w * LARGE_REPEAT, h * LARGE_REPEAT
    plan = size_plan(pw, ph)
    s = plan["sample_size"]
    decoded = point_sample(native, LARGE_REPEAT, s)
    dw, dh = plan["decoded"]
    assert decoded.shape == (dh, dw, 3)
    model_in = resize_rgb(Image.fromarray(decoded))
    with single_thread():
        prob = predict_probs(net, model_in[None].copy())[0].astype("<f4")
    disp_w, disp_h = plan["display"]
    shown = decoded if (disp_w, disp_h) == (dw, dh) else \
        np.asarray(Image.fromarray(decoded).resize((disp_w, disp_h), Image.Resampling.BILINEAR))
    display_mask = binarize(upsample_prob(prob, (disp_h, disp_w)))
    n = f"large_{pw}x{ph}"
    parts = [("input", f"{n}.input.png", model_in, _png(model_in)),
             ("prob", f"{n}.prob_f32.gz", prob, _gz(prob.tobytes())),
             ("display_mask", f"{n}.display_mask.png", display_mask, _png(display_mask * 255))]
    lesion = int(display_mask.sum())
    entry = {"name": n, "kind": f"synthetic: {source['name']} native pixels repeated {LARGE_REPEAT}x per axis",
             "source_case": source["name"], "repeat": LARGE_REPEAT, **plan,
             "decoded_sha256": sha256(decoded.tobytes()),
             "display_lesion_pixels": lesion, "display_lesion_percent": 100.0 * lesion / display_mask.size,
             "overlay_sha256": sha256(overlay(shown, display_mask).tobytes()),
             "reference": large_reference(native, model_in, display_mask, net),
             "files": {key: {"file": name, "sha256": sha256(np.ascontiguousarray(arr).tobytes())}
                       for key, name, arr, _ in parts}}
    return entry, {name: data for _, name, _, data in parts}


def large_reference(native: np.ndarray, app_input: np.ndarray, display_mask: np.ndarray, net) -> dict:
    """The full-resolution contract on the large photo (what `egeunet predict` computes: model input resized from
    every pixel, mask at full size) against the app's subsampled path: input and mask differences, lesion share."""
    from ..model.evaluate import predict_probs, upsample_prob
    from ..model.threads import single_thread

    full = np.repeat(np.repeat(native, LARGE_REPEAT, axis=0), LARGE_REPEAT, axis=1)
    ref_in = resize_rgb(Image.fromarray(full))
    del full
    with single_thread():
        ref_prob = predict_probs(net, ref_in[None].copy())[0]
    fh, fw = native.shape[0] * LARGE_REPEAT, native.shape[1] * LARGE_REPEAT
    full_mask = binarize(upsample_prob(ref_prob, (fh, fw)))
    dh, dw = display_mask.shape
    # the full-resolution mask at each display pixel's centre
    ys = ((np.arange(dh) + 0.5) * fh / dh).astype(np.int64)
    xs = ((np.arange(dw) + 0.5) * fw / dw).astype(np.int64)
    at_display = full_mask[ys][:, xs]
    diff = np.abs(ref_in.astype(np.int16) - app_input.astype(np.int16))
    return {"photo_lesion_percent": round(100.0 * float(full_mask.mean()), 4),
            "display_lesion_percent": round(100.0 * float(display_mask.mean()), 4),
            "mask_disagreement_percent": round(100.0 * float((at_display != display_mask).mean()), 4),
            "input_max_abs_diff": int(diff.max()), "input_mean_abs_diff": round(float(diff.mean()), 4)}


def alpha_sample() -> tuple[dict, bytes]:
    """RGBA pixels over every alpha value and several colours, and the sha256 of their RGB over the grey
    background: (manifest entry, PNG bytes)."""
    rng = np.random.default_rng(0)
    colours = [(0, 0, 0), (255, 255, 255), (255, 64, 32), (12, 200, 99), (128, 128, 128)]
    rows = [np.concatenate([np.tile(np.array(c, np.uint8), (256, 1)), np.arange(256, dtype=np.uint8)[:, None]], 1)
            for c in colours]
    rows += [rng.integers(0, 256, (256, 4), dtype=np.uint8) for _ in range(3)]
    rgba = np.stack(rows)
    rgb = composite_on_grey(rgba)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", optimize=True)
    entry = {"file": ALPHA_FILE, "background": list(ALPHA_BACKGROUND), "rgba_sha256": sha256(rgba.tobytes()),
             "rgb_sha256": sha256(rgb.tobytes())}
    return entry, buf.getvalue()


def composite_on_grey(rgba: np.ndarray) -> np.ndarray:
    """RGBA uint8 (H, W, 4) -> RGB over the opaque ``ALPHA_BACKGROUND`` with PIL's ``alpha_composite``."""
    im = Image.fromarray(rgba, "RGBA")
    background = Image.new("RGBA", im.size, (*ALPHA_BACKGROUND, 255))
    return np.asarray(Image.alpha_composite(background, im).convert("RGB"))


def build_golden(weights: Path | str | None = None, num: int = 2,
                 progress: Callable[[str], None] | None = None) -> tuple[dict, dict[str, bytes]]:
    """(manifest, {file name: bytes}) for ``num`` real images plus the edge cases, nothing written yet."""
    from ..model.checkpoint import load_model

    net, ckpt = load_model(weights)
    inputs = golden_inputs(num)
    float_names = {inputs[0].name, inputs[-1].name}  # the first real image and the constant one (see module doc)
    cases, files = [], {}
    for case in inputs:
        if progress:
            progress(case.name)
        entry, case_files = compute_case(case, net, case.name in float_names)
        cases.append(entry)
        files.update(case_files)
    files[METADATA_SAMPLE] = append_tflite_metadata(STANDIN_FLATBUFFER, metadata_sample())
    source = cases[0]
    if progress:
        progress(f"large photo from {source['name']}")
    large, large_files = compute_large(source, np.asarray(inputs[0].image, dtype=np.uint8), net)
    files.update(large_files)
    alpha, files[ALPHA_FILE] = alpha_sample()
    manifest = {
        "schema": GOLDEN_SCHEMA,
        "generator": "egeunet golden (egeunet_deploy.export.golden)",
        "contract": CONTRACT.to_dict(),
        "contract_sha256": CONTRACT.fingerprint(),
        "weights_sha256": ckpt["sha256"],
        "encoding": {
            "png": "8-bit RGB (images) or L (masks: 0 or 255), lossless",
            "input_f32": "float32 little-endian, NHWC 256x256x3, gzip",
            "prob_f32": "float32 little-endian, 256x256, gzip",
            "sha256": "of the decoded content: RGB/L bytes row-major, masks as 0/1, floats little-endian",
        },
        "metadata_sample": {"file": METADATA_SAMPLE, "flatbuffer_bytes": len(STANDIN_FLATBUFFER)},
        "cases": cases,
        "size_policy": {"model": [CONTRACT.input_width, CONTRACT.input_height], "max_display_side": MAX_DISPLAY_SIDE,
                        "max_decode_pixels": MAX_DECODE_PIXELS,
                        "plans": [size_plan(w, h) for w, h in POLICY_PHOTOS]},
        "large_photo": large,
        "alpha": alpha,
    }
    return manifest, files


def write_golden(out_dir: Path | str, weights: Path | str | None = None, num: int = 2,
                 progress: Callable[[str], None] | None = None) -> Path:
    """Write the golden vectors into ``out_dir`` (each file atomically); return the manifest's path.

    Files of an older run that are no longer produced are removed, so the folder always matches the manifest."""
    from ..model.checkpoint import atomic_write_bytes

    manifest, files = build_golden(weights, num, progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        atomic_write_bytes(out_dir / name, data)
    stale = _generated_files(out_dir) - set(files)
    for name in stale:
        (out_dir / name).unlink()
    atomic_write_bytes(out_dir / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return out_dir / MANIFEST


def _generated_files(out_dir: Path) -> set[str]:
    """Files in ``out_dir`` that an earlier ``write_golden`` produced (by their suffixes)."""
    suffixes = (".native.png", ".input.png", ".mask.png", ".native_mask.png", ".prob_f32.gz", ".input_f32.gz",
                ".display_mask.png", ".rgba.png")
    return {f.name for f in out_dir.iterdir() if f.name.endswith(suffixes)}


# --- readers, shared by the Python test -------------------------------------------------------------------------


def read_png(path: Path | str) -> np.ndarray:
    return np.asarray(Image.open(path))


def read_f32(path: Path | str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(gzip.decompress(Path(path).read_bytes()), dtype="<f4").reshape(shape)


def load_manifest(golden_dir: Path | str) -> dict:
    path = Path(golden_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no golden manifest at {path}; write one with `egeunet golden --out {golden_dir}`")
    return json.loads(path.read_text())
