"""ONNX: TorchScript exporter at opset 17, simplified with onnxslim, checked, optionally int8 (ORT static QDQ).

Why the TorchScript exporter (``dynamo=False``): on this architecture the dynamo exporter takes over a minute,
cannot emit opset 17 and writes a file twice the size (toolchain facts). The graph is then simplified (onnxslim),
passed through ``onnx.checker`` (full check, with shape inference) and run once in ONNX Runtime before it is
written, so a file on disk always loads and produces a probability map of the declared shape.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch

from egeunet_deploy.model.checkpoint import atomic_write_bytes
from egeunet_deploy.model.ege_unet import EGEUNet

from .exporter import ExportError, ExportJob, check_probabilities, rank_int8_blocks
from .metadata import set_onnx_metadata
from .rewrite import fast_module
from .targets import GRAPHS, Precision
from .wrappers import BATCH_AXIS, INPUT_NAME, OUTPUT_NAME, IOSpec, deploy_module

OPSET = 17
ORT_GRAPH_OPTIMIZATION_LEVEL = {"fast": "extended", "deploy": "all"}
"""The ONNX Runtime graph optimisation level recorded in each artifact (``ort_graph_optimization_level``; the ONNX
runner honours it). Measured at 1 thread, interleaved (bench/int8_vs_fp32.py): on the rewritten graph ``all`` is
slower than ``extended`` for fp32 and int8 alike, because its NCHWc re-layout wraps the few remaining convolutions in
reorders around every elementwise op; the plain DeployEGEUNet keeps ORT's default."""
BLAME_CALIB_IMAGES = 16


def to_onnx_float(net: EGEUNet, spec: IOSpec, graph: str = "fast"):
    """The float32 ModelProto of the deployable module (gates folded, I/O per ``spec``), simplified and checked.

    ``graph="fast"`` exports the rewritten network (:mod:`.rewrite`) in the artifact's layout: normalisations
    fused, 1x1 convolutions as MatMul (ONNX Runtime then keeps them out of its NCHWc re-layout, measured 0.83x the
    plain graph's latency at 1 thread); ``graph="deploy"`` the plain DeployEGEUNet (the benchmark's "before")."""
    import onnx
    import onnxslim

    if graph == "fast":
        module = fast_module(net, spec.layout, spec.baked, spec.hw)
    elif graph == "deploy":
        module = deploy_module(net, spec)
    else:
        raise ValueError(f"unknown graph {graph!r}; known: {', '.join(GRAPHS)}")
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


def strip_value_info(model) -> None:
    """Drop the intermediate shape annotations (``graph.value_info``, ~20% of the file): ONNX Runtime infers every
    shape from the fixed input anyway, and the checker re-derives them. Inputs, outputs and node names are kept
    (the names carry the block structure the int8 recipes and profiles read)."""
    del model.graph.value_info[:]


def smoke_check(data: bytes, spec: IOSpec) -> None:
    """Load the serialized model in ONNX Runtime and run the example input (judged by ``check_probabilities``)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        (y,) = sess.run([OUTPUT_NAME], {INPUT_NAME: spec.example().numpy()})
    except Exception as e:
        raise ExportError(f"ONNX Runtime cannot run the exported graph ({type(e).__name__}: {e})") from None
    check_probabilities(y, spec, "exported graph")


def run_model(model, inputs: np.ndarray, spec: IOSpec) -> np.ndarray:
    """Probabilities (N, H, W) of an in-memory model on inputs already in its input format."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    y = np.concatenate([sess.run([OUTPUT_NAME], {INPUT_NAME: inputs[i : i + 1]})[0] for i in range(len(inputs))])
    return y[:, 0] if spec.layout == "NCHW" else y[..., 0]


def export_onnx(job: ExportJob) -> None:
    """The exporter (export/exporter.py): fp32, or int8 with the ORT static QDQ recipe (and its blame)."""
    import onnx

    spec = job.spec
    model = to_onnx_float(job.net, spec, job.graph)
    if job.precision is Precision.INT8:
        from egeunet_deploy.calibration.onnx_quant import DEFAULT_ORT_RECIPE as recipe
        from egeunet_deploy.calibration.onnx_quant import quantize_onnx_int8

        float_model = model
        model = quantize_onnx_int8(model, spec.feed(job.calib_images), INPUT_NAME, recipe)
        job.meta["quantization"] = recipe.describe()
        if job.blame is not None:
            # quantize_static re-runs the calibration for every block: a fixed subset keeps the ranking affordable
            calib = spec.feed(job.calib_images[:BLAME_CALIB_IMAGES])
            rank_int8_blocks(job, float_model, lambda b: quantize_onnx_int8(float_model, calib, INPUT_NAME,
                                                                              recipe.only(b)),
                             lambda m, x: run_model(m, x, spec), recipe, calibration_images=int(len(calib)))
    job.meta["opset"] = OPSET
    job.meta["graph"] = {"nodes": len(model.graph.node), "module": job.graph}
    job.meta["ort_graph_optimization_level"] = ORT_GRAPH_OPTIMIZATION_LEVEL[job.graph]
    strip_value_info(model)
    set_onnx_metadata(model, job.meta)
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    smoke_check(data, spec)
    atomic_write_bytes(job.path, data)
