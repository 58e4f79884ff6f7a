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
from .rewrite import fast_module
from .wrappers import BATCH_AXIS, INPUT_NAME, OUTPUT_NAME, IOSpec, deploy_module

OPSET = 17
ORT_GRAPH_OPTIMIZATION_LEVEL = {"fast": "extended", "deploy": "all"}
"""The ONNX Runtime graph optimisation level recorded in each artifact (``ort_graph_optimization_level``; the ONNX
runner honours it). Measured at 1 thread, interleaved (bench/int8_vs_fp32.py): on the rewritten graph ``all`` is
slower than ``extended`` for fp32 and int8 alike, because its NCHWc re-layout wraps the few remaining convolutions in
reorders around every elementwise op; the plain DeployEGEUNet keeps ORT's default."""
BLAME_CALIB_IMAGES = 16
GRAPHS = ("fast", "deploy")


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


def run_model(model, inputs: np.ndarray, spec: IOSpec) -> np.ndarray:
    """Probabilities (N, H, W) of an in-memory model on inputs already in its input format."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    y = np.concatenate([sess.run([OUTPUT_NAME], {INPUT_NAME: inputs[i : i + 1]})[0] for i in range(len(inputs))])
    return y[:, 0] if spec.layout == "NCHW" else y[..., 0]


def export_onnx(net: EGEUNet, path: Path, *, precision: str, spec: IOSpec, meta: dict,
                calib_images: np.ndarray | None = None, log: Callable[[str], None] | None = None,
                blame=None, graph: str = "fast") -> None:
    """``blame``: a :class:`~egeunet_deploy.calibration.blame.BlameSet` to rank the int8 blocks on (int8 only;
    stored in the metadata and beside the artifact), or None."""
    import onnx

    model = to_onnx_float(net, spec, graph)
    record = None
    if precision == "int8":
        from egeunet_deploy.calibration.onnx_quant import DEFAULT_ORT_RECIPE, quantize_onnx_int8

        if calib_images is None:
            raise ValueError("onnx int8 needs a calibration set")
        if graph != "fast":
            raise ValueError("the int8 recipe addresses the rewritten graph's blocks: use graph='fast'")
        float_model = model
        model = quantize_onnx_int8(model, spec.feed(calib_images), INPUT_NAME, DEFAULT_ORT_RECIPE)
        meta["quantization"] = DEFAULT_ORT_RECIPE.describe()
        if blame is not None:
            record = _blame(float_model, spec, calib_images, DEFAULT_ORT_RECIPE, blame, log)
            meta.update(record)
    elif precision != "fp32":
        raise ValueError(f"onnx does not export precision {precision!r}")
    meta["opset"] = OPSET
    meta["graph"] = {"nodes": len(model.graph.node), "module": graph}
    meta["ort_graph_optimization_level"] = ORT_GRAPH_OPTIMIZATION_LEVEL[graph]
    strip_value_info(model)
    set_onnx_metadata(model, meta)
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    smoke_check(data, spec)
    atomic_write_bytes(path, data)
    if record is not None:
        from egeunet_deploy.calibration.blame import write_sidecar

        write_sidecar(path, record)


def _blame(float_model, spec: IOSpec, calib_images: np.ndarray, recipe, data, log) -> dict:
    """The int8 blame ranking of ``recipe`` over the rewritten graph's blocks (see calibration/blame.py)."""
    from egeunet_deploy.calibration import blame as bl
    from egeunet_deploy.calibration.onnx_quant import quantize_onnx_int8

    # quantize_static re-runs the calibration for every block: a fixed 16-image subset keeps the ranking affordable
    inputs, calib = spec.feed(data.images), spec.feed(calib_images[:BLAME_CALIB_IMAGES])
    float_probs = run_model(float_model, inputs, spec)
    blocks = data.blocks_for(spec.baked)
    rows = bl.rank_blocks(
        blocks, lambda b: quantize_onnx_int8(float_model, calib, INPUT_NAME, recipe.only(b)),
        lambda m: run_model(m, inputs, spec), float_probs, data,
        quantized=[b for b in blocks if b not in recipe.float_blocks],
        progress=(lambda b: log(f"int8 blame: quantizing only {b}")) if log else None)
    return bl.blame_record(rows, data, recipe.describe(), bl.pooled_dice(float_probs, data.masks),
                           calibration_images=int(len(calib)))


def precision_available(precision: str) -> tuple[bool, str]:
    return True, "ok"
