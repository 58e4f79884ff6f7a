"""Core ML: mlprogram fp32 / fp16, int8 weights anywhere, int8 weights + activations on macOS.

Deployment I/O: the input is a Core ML *image* (an RGB pixel buffer, 256 x 256): Core ML multi-arrays cannot be
uint8 before iOS 26, and an image input is what an iOS app (Vision, CVPixelBuffer) hands a model anyway. The graph
receives its 0..255 pixel values as float and runs the contract's min-max itself, so metadata records the input as
``uint8`` ``NHWC`` (what the app's pixels are) with ``coreml_input: image``; the output ``prob`` is a float32
multi-array ``[1, 256, 256, 1]``. ``--raw`` gives a float32 multi-array input, NCHW unless ``--nhwc``.

coremltools cannot run a model on Linux, so what is checked here is everything short of prediction: the saved
package reloads as an mlprogram with the contract's input/output names, types and shapes, and carries the
metadata. Conversion goes through ``torch.jit.trace`` (the path facts found to work with torch 2.13).
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from egeunet_deploy.model.checkpoint import atomic_replace_folder
from egeunet_deploy.model.ege_unet import EGEUNet

from .exporter import ExportError, ExportJob, ExportUnavailable
from .metadata import METADATA_KEY, set_coreml_metadata
from .targets import Precision
from .wrappers import INPUT_NAME, OUTPUT_NAME, IOSpec, deploy_module

# minimum deployment target per precision: constexpr (int8 weight) ops need iOS 16, activation quantization iOS 17
DEPLOYMENT_TARGET = {Precision.FP32: "iOS16", Precision.FP16: "iOS16", Precision.INT8W: "iOS16",
                     Precision.INT8: "iOS17"}


def precision_available(precision: Precision) -> tuple[bool, str]:
    if precision is Precision.INT8:
        from egeunet_deploy.calibration.coreml_quant import activation_quant_available  # lazy: no import-time edge

        return activation_quant_available()
    return True, "ok"


@contextlib.contextmanager
def _numpy2_int_fix():
    """coremltools 9.0 converts TorchScript's ``aten::Int`` with ``int(x.val)``, which numpy >= 2.4 refuses for a
    1-element array (apple/coremltools#2633, fixed upstream by #2632 after 9.0). Our min-max reads the batch size
    from the input shape, which traces to exactly that node, so for the duration of a conversion the ``int`` op
    folds such constants with ``.item()``; the registry entry is restored afterwards."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    original = _TORCH_OPS_REGISTRY.get_func("int")

    def _int(context, node):
        x = _get_inputs(context, node, expected=1)[0]
        if x.can_be_folded_to_const() and np.ndim(x.val) > 0 and np.size(x.val) == 1:
            context.add(mb.const(val=np.int32(np.asarray(x.val).item()), name=node.name), node.name)
            return
        original(context, node)

    _TORCH_OPS_REGISTRY.set_func_by_name(_int, "int")
    try:
        yield
    finally:
        _TORCH_OPS_REGISTRY.set_func_by_name(original, "int")


def to_mlmodel(net: EGEUNet, spec: IOSpec, precision: str):
    """Trace the deployable module and convert it to an mlprogram for ``precision``'s compute type."""
    import coremltools as ct

    if spec.baked:
        # an image input reaches the graph as float NCHW 0..255; the app-facing layout (spec.layout) is the output's
        module = deploy_module(net, spec, graph_layout="NCHW")
        example = spec.example().permute(0, 3, 1, 2).float() if spec.layout == "NHWC" else spec.example().float()
        h, w = spec.hw
        inputs = [ct.ImageType(name=INPUT_NAME, shape=(1, 3, h, w), color_layout=ct.colorlayout.RGB, scale=1.0)]
    else:
        module = deploy_module(net, spec)
        example = spec.example()
        inputs = [ct.TensorType(name=INPUT_NAME, shape=spec.input_shape, dtype=np.float32)]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example)
    compute = ct.precision.FLOAT32 if precision is Precision.FP32 else ct.precision.FLOAT16
    with _numpy2_int_fix(), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        return ct.convert(traced, inputs=inputs, outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
                          convert_to="mlprogram", compute_precision=compute,
                          minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET[precision]))


def check_package(path: Path, spec: IOSpec, meta: dict) -> None:
    """What Linux can validate: an mlprogram whose I/O names, types and shapes are the contract's, with metadata."""
    import coremltools as ct

    s = ct.utils.load_spec(str(path))
    problems = []
    if s.WhichOneof("Type") != "mlProgram":
        problems.append(f"model type {s.WhichOneof('Type')}, expected mlProgram")
    d = s.description
    if [i.name for i in d.input] != [INPUT_NAME] or [o.name for o in d.output] != [OUTPUT_NAME]:
        problems.append(f"I/O {[i.name for i in d.input]} -> {[o.name for o in d.output]}, expected "
                        f"[{INPUT_NAME}] -> [{OUTPUT_NAME}]")
    else:
        t = d.input[0].type
        if spec.baked:
            img = t.imageType
            if t.WhichOneof("Type") != "imageType" or (img.height, img.width) != spec.hw or \
                    img.colorSpace != ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB:
                problems.append(f"input is {t.WhichOneof('Type')}, expected an RGB image {spec.hw}")
        elif t.WhichOneof("Type") != "multiArrayType" or list(t.multiArrayType.shape) != spec.input_shape or \
                t.multiArrayType.dataType != ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32:
            problems.append(f"input is {t}, expected float32 {spec.input_shape}")
        o = d.output[0].type.multiArrayType
        if list(o.shape) != spec.output_shape or o.dataType != ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32:
            problems.append(f"output shape {list(o.shape)}, expected float32 {spec.output_shape}")
    stored = d.metadata.userDefined.get(METADATA_KEY)
    if stored is None or json.loads(stored) != json.loads(json.dumps(meta)):
        problems.append("egeunet_deploy metadata missing or different from what was written")
    if problems:
        raise ExportError(f"{path.name}: " + "; ".join(problems))


def export_coreml(job: ExportJob) -> None:
    """The exporter (export/exporter.py): fp32 / fp16, int8 weights, int8 weights + activations (macOS)."""
    from egeunet_deploy.calibration import coreml_quant

    spec, meta, precision = job.spec, job.meta, job.precision
    ok, reason = precision_available(precision)
    if not ok:
        raise ExportUnavailable(reason)
    job.say(f"coreml {precision}: tracing and converting with coremltools (about 30 s on 2 CPU cores)")
    mlmodel = to_mlmodel(job.net, spec, precision)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        if precision is Precision.INT8W:
            mlmodel = coreml_quant.quantize_weights_int8(mlmodel)
            meta["quantization"] = coreml_quant.WEIGHTS_ONLY.describe()
        elif precision is Precision.INT8:
            feed = job.calib_images if spec.baked else spec.feed(job.calib_images)
            mlmodel = coreml_quant.quantize_w8a8(mlmodel, feed, INPUT_NAME, image_input=spec.baked)
            meta["quantization"] = coreml_quant.W8A8.describe()
    meta["coreml"] = {"input_type": "image (RGB pixel buffer)" if spec.baked else "multiarray",
                      "compute_precision": "float32" if precision is Precision.FP32 else "float16",
                      "minimum_deployment_target": DEPLOYMENT_TARGET[precision]}
    set_coreml_metadata(mlmodel, meta)

    def save_and_check(staged: Path) -> None:
        mlmodel.save(str(staged))
        check_package(staged, spec, meta)

    atomic_replace_folder(job.path, save_and_check)  # also refuses to commit after a Ctrl-C coremltools swallowed
