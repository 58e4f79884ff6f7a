"""TFLite (LiteRT): litert-torch 0.10 for the float graph, ai-edge-quantizer for fp16 weights and int8.

Why litert-torch: it converts this architecture with builtin ops only, no TensorFlow, and matches PyTorch to
~1e-5; the onnx2tf route silently miscompiles it (GroupNorm transposes, align_corners resize, Flex GELU; see the
toolchain facts). Every artifact is checked here before it is written: builtin ops only (an Android app with the
standard runtime could not run a Flex or custom op), and one run in the LiteRT interpreter with the expected
output shape. The float conversion (the slow step, ~30-60 s) is cached per weights and I/O spec, so fp16 and int8
in the same process reuse it.

The signature is ``serving_default`` with input ``image`` and output ``prob``; the I/O layout is NHWC (what
Android bitmaps give), achieved by permutes in the wrapper that litert-torch folds into its own layout transposes.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from egeunet_deploy.model.checkpoint import atomic_write_bytes
from egeunet_deploy.model.ege_unet import EGEUNet

from .api import ExportError
from .metadata import append_tflite_metadata
from .wrappers import INPUT_NAME, OUTPUT_NAME, IOSpec, NamedOutput, deploy_module

SIGNATURE = "serving_default"
_FLOAT_CACHE: dict[tuple, bytes] = {}
_CACHE_SIZE = 4


def to_tflite_float(net: EGEUNet, spec: IOSpec, cache_key: str | None = None) -> bytes:
    """The float32 flatbuffer of the deployable module (gates folded, I/O per ``spec``)."""
    key = (cache_key, spec) if cache_key else None
    if key in _FLOAT_CACHE:
        return _FLOAT_CACHE[key]
    import litert_torch

    module = NamedOutput(deploy_module(net, spec)).eval()
    saved = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"  # its per-pass progress lines would bury the export table
    try:
        with torch.no_grad():
            edge = litert_torch.convert(module, sample_kwargs={INPUT_NAME: spec.example()})
    finally:
        if saved is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = saved
    content = edge.model_content() if callable(edge.model_content) else edge.model_content
    data = bytes(content)
    if key is not None:
        while len(_FLOAT_CACHE) >= _CACHE_SIZE:
            _FLOAT_CACHE.pop(next(iter(_FLOAT_CACHE)))
        _FLOAT_CACHE[key] = data
    return data


def op_counts(flatbuffer: bytes) -> Counter:
    """Operator histogram of the graph as the builtin kernels see it (no delegate partitioning)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=flatbuffer,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return Counter(o["op_name"] for o in it._get_ops_details())


def check_builtin_only(ops: Counter) -> None:
    bad = sorted(n for n in ops if n.upper().startswith("FLEX") or n.upper() in ("CUSTOM", "DELEGATE"))
    if bad:
        raise ExportError(f"the TFLite graph needs non-builtin ops {bad}: the standard Android runtime cannot run it")


def smoke_check(data: bytes, spec: IOSpec) -> None:
    """Run the final bytes (metadata zip included) once in the interpreter: right signature, shape, range."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        it = Interpreter(model_content=data, num_threads=1)
        sigs = it.get_signature_list()
        if SIGNATURE not in sigs or sigs[SIGNATURE]["inputs"] != [INPUT_NAME] \
                or sigs[SIGNATURE]["outputs"] != [OUTPUT_NAME]:
            raise ExportError(f"unexpected signatures {sigs}; expected {SIGNATURE}({INPUT_NAME}) -> {OUTPUT_NAME}")
        y = it.get_signature_runner(SIGNATURE)(**{INPUT_NAME: spec.example().numpy()})[OUTPUT_NAME]
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"the LiteRT interpreter cannot run the exported model ({type(e).__name__}: {e})") from None
    if list(y.shape) != spec.output_shape or not np.isfinite(y).all() or y.min() < 0 or y.max() > 1:
        raise ExportError(f"exported model returns {y.dtype} {list(y.shape)} in [{y.min():.3g}, {y.max():.3g}], "
                          f"expected probabilities shaped {spec.output_shape}")


def export_tflite(net: EGEUNet, path: Path, *, precision: str, spec: IOSpec, meta: dict,
                  calib_images: np.ndarray | None = None, log: Callable[[str], None] | None = None) -> None:
    from egeunet_deploy.calibration import tflite_quant

    fb = to_tflite_float(net, spec, cache_key=meta.get("weights_sha256"))
    if precision == "fp16":
        fb = tflite_quant.quantize_tflite_fp16(fb)
        meta["quantization"] = {"name": "aeq-float16-weights", "tool": "ai-edge-quantizer (float_casting)",
                                "weights": "float16", "compute": "float32 (weights dequantized at load)"}
    elif precision == "int8":
        if calib_images is None:
            raise ValueError("tflite int8 needs a calibration set")
        recipe = tflite_quant.DEFAULT_LITERT_RECIPE
        fb = tflite_quant.quantize_tflite_int8(fb, spec.feed(calib_images), INPUT_NAME, recipe)
        meta["quantization"] = recipe.describe()
    elif precision != "fp32":
        raise ValueError(f"tflite does not export precision {precision!r}")
    ops = op_counts(fb)
    check_builtin_only(ops)
    meta["signature"] = {"name": SIGNATURE, "inputs": [INPUT_NAME], "outputs": [OUTPUT_NAME]}
    meta["graph"] = {"ops": dict(sorted(ops.items())), "n_ops": sum(ops.values()),
                     "transposes": ops.get("TRANSPOSE", 0)}
    data = append_tflite_metadata(fb, meta)
    smoke_check(data, spec)
    atomic_write_bytes(path, data)


def precision_available(precision: str) -> tuple[bool, str]:
    return True, "ok"
