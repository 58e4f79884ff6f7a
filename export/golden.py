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
  record a deployment TFLite export carries, so the app's metadata reader is tested on the real byte layout.
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
    suffixes = (".native.png", ".input.png", ".mask.png", ".native_mask.png", ".prob_f32.gz", ".input_f32.gz")
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
