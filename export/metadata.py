"""Artifact metadata: built once, written by every exporter into its format's native slot, read back by runtimes.

One JSON document (:func:`build_metadata`) travels inside each artifact under the key ``egeunet_deploy``:

- ONNX: ``model.metadata_props`` entry ``egeunet_deploy`` (plus ``doc_string``);
- TFLite: an associated file ``egeunet_deploy.json`` in a zip appended to the flatbuffer (the TFLite Support
  metadata convention; interpreters ignore trailing bytes, Android reads it with ``java.util.zip``);
- CoreML: ``user_defined_metadata["egeunet_deploy"]`` (plus ``short_description``).

The runtimes read the contract (layout, dtype, whether preprocessing is baked in) from here, so a wrong layout
cannot go unnoticed, and ``manifest.json`` beside the artifacts lists every file with its sha256.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import subprocess
import zipfile
from importlib import metadata as _pkg
from pathlib import Path

from egeunet_deploy import __version__
from egeunet_deploy.model.contract import CONTRACT

METADATA_KEY = "egeunet_deploy"
TFLITE_ASSOCIATED_FILE = "egeunet_deploy.json"
MODEL_VERSION = "egeunet-isic2017-v1"


class MetadataError(ValueError):
    """An artifact without readable egeunet-deploy metadata (not exported by this toolkit, or damaged)."""


def tool_versions(*packages: str) -> dict[str, str]:
    out = {}
    for name in ("torch", *packages):
        try:
            out[name] = _pkg.version(name)
        except _pkg.PackageNotFoundError:
            pass
    return out


def _git_sha() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except Exception:
        return None


def build_metadata(
    *,
    fmt: str,
    precision: str,
    input_name: str,
    input_shape: list[int],
    input_dtype: str,
    input_layout: str,
    output_name: str,
    output_shape: list[int],
    preprocessing_in_graph: bool,
    weights_sha256: str,
    calibration_sha256: str | None = None,
    converter_packages: tuple[str, ...] = (),
    extra: dict | None = None,
) -> dict:
    """The one metadata record of an artifact. ``preprocessing_in_graph`` tells a runtime whether to feed the
    contract's uint8 image as is (True) or the per-image min-max normalised float image (False, ``--raw``)."""
    return {
        "schema": 1,
        "toolkit": "egeunet-deploy",
        "toolkit_version": __version__,
        "git_sha": _git_sha(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model_version": MODEL_VERSION,
        "format": fmt,
        "precision": precision,
        "weights_sha256": weights_sha256,
        "calibration_sha256": calibration_sha256,
        "contract": CONTRACT.to_dict(),
        "contract_sha256": CONTRACT.fingerprint(),
        "preprocessing_in_graph": preprocessing_in_graph,
        "threshold": CONTRACT.threshold,
        "input": {"name": input_name, "shape": input_shape, "dtype": input_dtype, "layout": input_layout},
        "output": {"name": output_name, "shape": output_shape, "dtype": "float32", "layout": input_layout,
                   "meaning": "lesion probability (sigmoid)"},
        "tool_versions": tool_versions(*converter_packages),
        **(extra or {}),
    }


def dumps(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True)


# --- TFLite: associated file in an appended zip ---------------------------------------------------------------


def append_tflite_metadata(flatbuffer: bytes, meta: dict) -> bytes:
    """Return the flatbuffer with a zip holding ``egeunet_deploy.json`` appended (what TFLite Support does)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(TFLITE_ASSOCIATED_FILE, dumps(meta))
    return flatbuffer + buf.getvalue()


def _read_tflite(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read(TFLITE_ASSOCIATED_FILE))
    except (zipfile.BadZipFile, KeyError) as e:
        raise MetadataError(f"{path}: no {TFLITE_ASSOCIATED_FILE} associated file ({e})") from None


def _read_onnx(path: Path) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    raise MetadataError(f"{path}: no '{METADATA_KEY}' entry in metadata_props")


def _read_coreml(path: Path) -> dict:
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))
    value = spec.description.metadata.userDefined.get(METADATA_KEY)
    if value is None:
        raise MetadataError(f"{path}: no '{METADATA_KEY}' in user_defined_metadata")
    return json.loads(value)


READERS = {".onnx": _read_onnx, ".tflite": _read_tflite, ".mlpackage": _read_coreml, ".mlmodel": _read_coreml}


def read_metadata(path: Path | str) -> dict:
    """The metadata record of any artifact this toolkit exports, chosen by file suffix."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise MetadataError(f"{path}: unknown artifact type '{path.suffix}' (known: {', '.join(READERS)})")
    if not path.exists():
        raise MetadataError(f"{path}: no such artifact")
    try:
        return reader(path)
    except MetadataError:
        raise
    except (json.JSONDecodeError, OSError, ValueError) as e:
        raise MetadataError(f"{path}: metadata unreadable ({e})") from None
