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
import fcntl
import hashlib
import io
import json
import os
import subprocess
import zipfile
from importlib import metadata as _pkg
from pathlib import Path

from egeunet_deploy import __version__
from egeunet_deploy.model.checkpoint import atomic_write_bytes, sha256_file
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


class NotAModelError(MetadataError):
    """The file is not a valid, complete model of the format its suffix names (truncated, corrupt, or another kind of
    file renamed): a different problem from a good model that lacks our metadata, and said differently."""


TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier, bytes 4..8 of every TFLite model


def _read_tflite(path: Path) -> dict:
    """The associated file's record. Why the checks: a truncated file or a text file renamed ``.tflite`` has no zip
    at its end either, and "no associated file" would send the user looking for the wrong problem."""
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise NotAModelError(f"{path}: not a TFLite model (no '{TFLITE_IDENTIFIER.decode()}' flatbuffer identifier at "
                             f"bytes 4..8: empty, another kind of file, or damaged)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return json.loads(z.read(TFLITE_ASSOCIATED_FILE))
    except (zipfile.BadZipFile, KeyError) as e:
        if TFLITE_ASSOCIATED_FILE.encode() in data[-(1 << 16):]:
            raise NotAModelError(f"{path}: not a complete TFLite model (the zip holding {TFLITE_ASSOCIATED_FILE} at "
                                 f"its end is cut off or damaged: truncated or corrupt)") from None
        problem = _tflite_flatbuffer_problem(path)
        if problem:
            raise NotAModelError(f"{path}: not a valid TFLite model (truncated or corrupt; LiteRT: "
                                 f"{problem})") from None
        raise MetadataError(f"{path}: no {TFLITE_ASSOCIATED_FILE} associated file ({e})") from None


def _tflite_flatbuffer_problem(path: Path) -> str | None:
    """What LiteRT's flatbuffer verifier says about the model (None: it loads, or LiteRT is not installed). Only
    asked when the metadata is missing, to tell a truncated model from a complete one exported elsewhere: the
    identifier survives truncation, and only a verifier walking every offset notices the missing end."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        return None
    try:  # no default delegates: verifying needs no XNNPACK set-up
        Interpreter(model_path=str(path),
                    experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except (ValueError, RuntimeError) as e:
        return (str(e).strip().splitlines() or [type(e).__name__])[0]
    return None


def _read_onnx(path: Path) -> dict:
    """The ``metadata_props`` record; a file whose protobuf does not parse, or an empty one (which parses as an empty
    model), is said to be no valid ONNX model rather than one without our metadata."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except DecodeError:
        raise NotAModelError(f"{path}: not a valid ONNX model (truncated or corrupt: its protobuf does not "
                             f"parse)") from None
    if not model.HasField("graph"):
        raise NotAModelError(f"{path}: not a valid ONNX model (empty, or no graph in it)")
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


# --- writers for the formats whose container has a native slot ------------------------------------------------


def set_onnx_metadata(model, meta: dict) -> None:
    """Put the record into ``model.metadata_props`` (replacing an older one) and a one-line ``doc_string``."""
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, dumps(meta)
    model.doc_string = describe(meta)


def set_coreml_metadata(mlmodel, meta: dict) -> None:
    """``user_defined_metadata`` holds the record; the human-readable fields say what the I/O are."""
    mlmodel.user_defined_metadata[METADATA_KEY] = dumps(meta)
    mlmodel.short_description = describe(meta)
    mlmodel.version = meta.get("model_version", MODEL_VERSION)
    mlmodel.license = "Apache-2.0 (code); weights trained on ISIC 2017 (research use)"
    mlmodel.author = "egeunet-deploy"
    inp, out = meta["input"], meta["output"]
    mlmodel.input_description[inp["name"]] = (
        f"{inp['dtype']} RGB image {inp['shape']} ({inp['layout']})"
        + (", fed as is: preprocessing is inside the model" if meta["preprocessing_in_graph"]
           else ", already min-max normalised per the contract"))
    mlmodel.output_description[out["name"]] = (f"lesion probability {out['shape']}; lesion where >= "
                                               f"{meta['threshold']}")


def describe(meta: dict) -> str:
    inp = meta["input"]
    pre = "uint8 image in, preprocessing in graph" if meta["preprocessing_in_graph"] else "normalised float in"
    return (f"EGE-UNet skin-lesion segmentation ({meta['model_version']}), {meta['format']} {meta['precision']}, "
            f"{pre}, input {inp['name']} {inp['shape']} {inp['layout']}, output lesion probability")


# --- manifest.json beside the artifacts ---------------------------------------------------------------------------

MANIFEST_NAME = "manifest.json"


def artifact_digest(path: Path | str) -> tuple[str, int]:
    """(sha256, size in bytes) of a file, or of a folder artifact (``.mlpackage``): the hash then covers every
    file's relative path and content in sorted order, so it changes when anything inside changes."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path), path.stat().st_size
    h, size = hashlib.sha256(), 0
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        h.update(rel.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        size += f.stat().st_size
    return h.hexdigest(), size


def update_manifest(out_dir: Path | str, artifact: Path | str, meta: dict) -> dict:
    """Add or replace ``artifact``'s entry in ``out_dir/manifest.json`` (locked, written atomically) and drop
    entries whose file no longer exists. Returns the entry."""
    out_dir, artifact = Path(out_dir), Path(artifact)
    sha, size = artifact_digest(artifact)
    entry = {"file": artifact.name, "sha256": sha, "size_bytes": size, "target": meta["format"],
             "precision": meta["precision"], "preprocessing_in_graph": meta["preprocessing_in_graph"],
             "input": meta["input"], "output": meta["output"], "weights_sha256": meta["weights_sha256"],
             "calibration_sha256": meta.get("calibration_sha256"), "created_utc": meta["created_utc"]}
    if meta.get("op_census"):  # full-integer artifacts: what an NPU compiler or TFLite Micro will meet
        entry["op_census"] = meta["op_census"]
    _edit_manifest(out_dir, lambda artifacts: artifacts.__setitem__(artifact.name, entry))
    return entry


def annotate_manifest(out_dir: Path | str, name: str, fields: dict) -> None:
    """Merge ``fields`` (e.g. where the artifact runs: Vela's NPU estimate, TFLite Micro's arena) into the entry of
    the artifact ``name``; nothing happens when the manifest has no such entry."""
    def merge(artifacts: dict) -> None:
        if name in artifacts:
            artifacts[name] = {**artifacts[name], **fields}

    _edit_manifest(Path(out_dir), merge)


def _edit_manifest(out_dir: Path, edit) -> None:
    path = out_dir / MANIFEST_NAME
    # The lock is the folder itself (flock on its descriptor), not a lock file: a ".manifest.json.lock" was left
    # behind, empty, by every export, and removing one after use would let two writers lock two different files.
    lock = os.open(out_dir, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = read_manifest(out_dir)
        artifacts = {k: v for k, v in manifest.get("artifacts", {}).items() if (out_dir / k).exists()}
        edit(artifacts)
        manifest = {"schema": 1, "toolkit": "egeunet-deploy", "toolkit_version": __version__,
                    "contract_sha256": CONTRACT.fingerprint(), "artifacts": dict(sorted(artifacts.items()))}
        atomic_write_bytes(path, (json.dumps(manifest, indent=2) + "\n").encode())
    finally:
        os.close(lock)  # releases the lock
    (out_dir / f".{MANIFEST_NAME}.lock").unlink(missing_ok=True)  # an older release's lock file


def read_manifest(out_dir: Path | str) -> dict:
    """The manifest of an export folder; an empty one when there is none yet (a damaged one is an error)."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as e:
        raise MetadataError(f"{path}: unreadable manifest ({e}); delete it and export again") from None
