"""ONNX: TorchScript exporter at opset 17, simplified with onnxslim, checked, optionally int8 (ORT static QDQ).

Why the TorchScript exporter (``dynamo=False``): on this architecture the dynamo exporter takes over a minute,
cannot emit opset 17 and writes a file twice the size (toolchain facts). The graph is then simplified (onnxslim),
passed through ``onnx.checker`` (full check, with shape inference) and run once in ONNX Runtime before it is
written, so a file on disk always loads and produces a probability map of the declared shape.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from egeunet_deploy.model.checkpoint import atomic_write_bytes
from egeunet_deploy.model.ege_unet import EGEUNet

from .api import ExportError
from .metadata import set_onnx_metadata
from .wrappers import BATCH_AXIS, INPUT_NAME, OUTPUT_NAME, IOSpec, deploy_module

OPSET = 17


def to_onnx_float(net: EGEUNet, spec: IOSpec):
    """The float32 ModelProto of the deployable module (gates folded, I/O per ``spec``), simplified and checked."""
    import onnx
    import onnxslim

    module = deploy_module(net, spec)
    buf = io.BytesIO()
    axes = {INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}} if spec.dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        # the model's shape checks trace as constants (TracerWarning): expected, the graph is for a fixed H x W
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (spec.example(),), buf, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
                          do_constant_folding=True)
    model = onnxslim.slim(onnx.load_from_string(buf.getvalue()))
    onnx.checker.check_model(model, full_check=True)
    return model


def smoke_check(data: bytes, spec: IOSpec) -> None:
    """Load the serialized model in ONNX Runtime and run the example input: right shape, probabilities."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        (y,) = sess.run([OUTPUT_NAME], {INPUT_NAME: spec.example().numpy()})
    except Exception as e:
        raise ExportError(f"ONNX Runtime cannot run the exported graph ({type(e).__name__}: {e})") from None
    want = [1 if d == BATCH_AXIS else d for d in spec.output_shape]
    if list(y.shape) != want or not np.isfinite(y).all() or y.min() < 0 or y.max() > 1:
        raise ExportError(f"exported graph returns {y.dtype} {list(y.shape)} in [{y.min():.3g}, {y.max():.3g}], "
                          f"expected probabilities shaped {want}")


def export_onnx(net: EGEUNet, path: Path, *, precision: str, spec: IOSpec, meta: dict,
                calib_images: np.ndarray | None = None, log: Callable[[str], None] | None = None) -> None:
    import onnx

    model = to_onnx_float(net, spec)
    if precision == "int8":
        from egeunet_deploy.calibration.onnx_quant import DEFAULT_ORT_RECIPE, quantize_onnx_int8

        if calib_images is None:
            raise ValueError("onnx int8 needs a calibration set")
        model = quantize_onnx_int8(model, spec.feed(calib_images), INPUT_NAME, DEFAULT_ORT_RECIPE)
        meta["quantization"] = DEFAULT_ORT_RECIPE.describe()
    elif precision != "fp32":
        raise ValueError(f"onnx does not export precision {precision!r}")
    meta["opset"] = OPSET
    meta["graph"] = {"nodes": len(model.graph.node)}
    set_onnx_metadata(model, meta)
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    smoke_check(data, spec)
    atomic_write_bytes(path, data)


def precision_available(precision: str) -> tuple[bool, str]:
    return True, "ok"
