"""TFLite (LiteRT): litert-torch 0.10 for the float graph, ai-edge-quantizer for fp16 weights and int8.

Why litert-torch: it converts this architecture with builtin ops only, no TensorFlow, and matches PyTorch to
~1e-5; the onnx2tf route silently miscompiles it (GroupNorm transposes, align_corners resize, Flex GELU; see the
toolchain facts). Every artifact is checked here before it is written: builtin ops only (an Android app with the
standard runtime could not run a Flex or custom op), and one run in the LiteRT interpreter with the expected
output shape. The float conversion (the slow step, ~30-60 s) is cached per weights and I/O spec, so fp16 and int8
in the same process reuse it.

The signature is ``serving_default`` with input ``image`` and output ``prob``; the I/O layout is NHWC (what
Android bitmaps give). The converted module is the rewritten network (:mod:`.rewrite`): NHWC end to end, so the
graph has no TRANSPOSE, with the normalisations fused; ``graph="deploy"`` converts the plain DeployEGEUNet instead
(the "before" of ``bench/int8_vs_fp32.py``). Tensor names (module paths, ~45% of the file) are stripped from the
written file once the int8 recipe, which addresses blocks through them, has been applied.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import torch

from egeunet_deploy.model.checkpoint import atomic_write_bytes
from egeunet_deploy.model.ege_unet import EGEUNet

from .exporter import ExportError, ExportJob, check_probabilities, rank_int8_blocks
from .metadata import append_tflite_metadata
from .rewrite import fast_module
from .targets import Precision
from .wrappers import INPUT_NAME, OUTPUT_NAME, IOSpec, NamedOutput, deploy_module

SIGNATURE = "serving_default"
GRAPHS = ("fast", "deploy", "int8")
"""``fast``: the rewrite (every float artifact); ``deploy``: the plain DeployEGEUNet (benchmarks' baseline); ``int8``:
the rewrite with centred GroupNorm statistics, the graph the full-integer artifact quantizes whole."""
FLOAT_CHECK_MAX_ABS = 1e-4
"""Largest probability difference the converted float graph may show against the torch module it came from."""
_FLOAT_CACHE: dict[tuple, bytes] = {}
_CACHE_SIZE = 4


def converted_module(net: EGEUNet, spec: IOSpec, graph: str = "fast"):
    """The torch module litert-torch converts: the rewrite (default) or the plain deployable network."""
    if graph in ("fast", "int8"):
        return NamedOutput(fast_module(net, spec.layout, spec.baked, spec.hw, int8_friendly=graph == "int8")).eval()
    if graph == "deploy":
        return NamedOutput(deploy_module(net, spec)).eval()
    raise ValueError(f"unknown graph {graph!r}; known: {', '.join(GRAPHS)}")


def to_tflite_float(net: EGEUNet, spec: IOSpec, cache_key: str | None = None, graph: str = "fast") -> bytes:
    """The float32 flatbuffer of the deployable module (gates folded, I/O per ``spec``), tensor names kept."""
    key = (cache_key, spec, graph) if cache_key else None
    if key in _FLOAT_CACHE:
        return _FLOAT_CACHE[key]
    import litert_torch

    module = converted_module(net, spec, graph)
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
    check_against_torch(data, module, spec)
    if key is not None:
        while len(_FLOAT_CACHE) >= _CACHE_SIZE:
            _FLOAT_CACHE.pop(next(iter(_FLOAT_CACHE)))
        _FLOAT_CACHE[key] = data
    return data


def check_against_torch(flatbuffer: bytes, module, spec: IOSpec) -> None:
    """Refuse a float graph that does not compute what the torch module computes, on a real image when the bundled
    sample is installed (else the deterministic example). Why: litert-torch has miscompiled equivalent rewrites of
    this network without any error (an exact rewrite came out 0.04-0.99 off in probability while every block
    converted alone was exact), so the float conversion is verified before anything is quantized or written."""
    x = spec.example()
    try:
        from egeunet_deploy.model.bundled import SAMPLE_DATA
        from egeunet_deploy.model.data import load_split

        x = torch.from_numpy(spec.feed(load_split(SAMPLE_DATA, "test", limit=1, progress=False).images))
    except Exception:  # the sample is optional at run time; the example input still catches a wrong graph
        pass
    with torch.no_grad():
        want = module(x)[OUTPUT_NAME].numpy()
    got = run_flatbuffer(flatbuffer, x.numpy())
    diff = float(np.abs(got - (want[..., 0] if spec.layout == "NHWC" else want[:, 0])).max())
    if not diff <= FLOAT_CHECK_MAX_ABS:
        raise ExportError(f"litert-torch produced a float graph that differs from the torch module by {diff:.2e} in "
                          f"probability (> {FLOAT_CHECK_MAX_ABS:g}): converter miscompilation, nothing written")


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
        if np.issubdtype(y.dtype, np.integer):  # full-integer output: its own scale and zero point
            scale, zero = it.get_output_details()[0]["quantization"]
            y = (y.astype(np.float32) - zero) * scale
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"the LiteRT interpreter cannot run the exported model ({type(e).__name__}: {e})") from None
    check_probabilities(y, spec, "exported model")


def strip_tensor_names(flatbuffer: bytes) -> bytes:
    """Drop every tensor name but the graph input's and output's (and the model description): the module-path
    names litert-torch writes are ~45% of a float file and most of an int8 one. Signatures are kept, so apps and
    runtimes still find ``image`` and ``prob``."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    model = fu.read_model_from_bytearray(bytearray(flatbuffer))
    model.description = None
    for sg in model.subgraphs:
        keep = set(sg.inputs) | set(sg.outputs)
        sg.name = None
        for i, t in enumerate(sg.tensors):
            if i not in keep:
                t.name = None
    return bytes(fu.convert_object_to_bytearray(model))


def run_flatbuffer(flatbuffer: bytes, inputs: np.ndarray) -> np.ndarray:
    """Probabilities (N, H, W) of a flatbuffer on inputs already in its input format (NHWC output assumed unless
    the output's last axis is not 1)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=flatbuffer, num_threads=1)
    runner = it.get_signature_runner(SIGNATURE)
    out = [runner(**{INPUT_NAME: inputs[i : i + 1]})[OUTPUT_NAME] for i in range(len(inputs))]
    y = np.concatenate(out)
    if np.issubdtype(y.dtype, np.integer):
        scale, zero = it.get_output_details()[0]["quantization"]
        y = (y.astype(np.float32) - zero) * scale
    return y[..., 0] if y.shape[-1] == 1 else y[:, 0]


def export_tflite(job: ExportJob) -> None:
    """The exporter (export/exporter.py): fp32, fp16 weights, mixed int8 (and its blame) or full-integer int8."""
    from egeunet_deploy.calibration import tflite_quant

    spec, meta, precision = job.spec, job.meta, job.precision
    job.say(f"tflite {precision}: converting with litert-torch (about a minute on 2 CPU cores)")
    fb = to_tflite_float(job.net, spec, cache_key=meta.get("weights_sha256"), graph=job.graph)
    if precision is Precision.FP16:
        fb = tflite_quant.quantize_tflite_fp16(fb)
        meta["quantization"] = {"name": "aeq-float16-weights", "tool": "ai-edge-quantizer (float_casting)",
                                "weights": "float16", "compute": "float32 (weights dequantized at load)"}
    elif precision is Precision.INT8:
        recipe = tflite_quant.DEFAULT_LITERT_RECIPE
        job.say(f"tflite int8: calibrating activation ranges on {len(job.calib_images)} images, then quantizing")
        ranges = tflite_quant.calibrate(fb, spec.feed(job.calib_images), INPUT_NAME)
        float_fb = fb
        fb = tflite_quant.quantize_tflite_int8(fb, None, INPUT_NAME, recipe, ranges=ranges)
        meta["quantization"] = recipe.describe()
        if job.blame is not None:
            rank_int8_blocks(job, float_fb, lambda b: tflite_quant.quantize_tflite_int8(
                float_fb, None, INPUT_NAME, recipe.only(b), ranges=ranges), run_flatbuffer, recipe)
    elif precision is Precision.INT8_FULL:
        fb = _full_integer(job.net, spec, meta, job.calib_images, job.say)
    fb = strip_tensor_names(fb)
    ops = op_counts(fb)
    check_builtin_only(ops)
    meta["signature"] = {"name": SIGNATURE, "inputs": [INPUT_NAME], "outputs": [OUTPUT_NAME]}
    meta["graph"] = {"ops": dict(sorted(ops.items())), "n_ops": sum(ops.values()),
                     "transposes": ops.get("TRANSPOSE", 0), "module": graph_name(job.graph),
                     "flatbuffer_bytes": len(fb)}
    data = append_tflite_metadata(fb, meta)
    job.say(f"tflite {precision}: checking the flatbuffer in LiteRT")
    smoke_check(data, spec)
    atomic_write_bytes(job.path, data)


def graph_name(graph: str) -> str:
    return {"fast": "export.rewrite.FastEGEUNet (NHWC, fused norms, folded gates)",
            "int8": "export.rewrite.FastEGEUNet (NHWC, fused norms, folded gates, centred GroupNorm statistics)",
            "deploy": "model.DeployEGEUNet (folded gates)"}[graph]


def _full_integer(net: EGEUNet, spec: IOSpec, meta: dict, calib_images: np.ndarray, say) -> bytes:
    """The ``int8-full`` flatbuffer: the integer variant's rewrite, every op int8, integer output; checked."""
    from egeunet_deploy.calibration import tflite_quant

    from . import tflite_integer as ti
    from .tflm_compat import for_tflite_micro

    if net.cfg.is_paper:
        say("tflite int8-full: these weights were trained with the paper's erf GELU and align-corners upsampling, "
            "which integer targets lack; exporting them with the sigmoid GELU and half-pixel upsampling without "
            "retraining (post-training only). The QAT weights (the default for int8-full) were trained for it.")
        net = integer_variant(net)
    fb = to_tflite_float(net, spec, cache_key=meta.get("weights_sha256"), graph="int8")
    recipe = tflite_quant.INT8_FULL_RECIPE
    say(f"tflite int8-full: calibrating activation ranges on {len(calib_images)} images, then quantizing every op")
    ranges = tflite_quant.calibrate_extremes(fb, spec.feed(calib_images), INPUT_NAME)
    fb = tflite_quant.quantize_tflite_int8(fb, None, INPUT_NAME, recipe, ranges=ranges)
    fb, out_q = ti.integer_output(fb)
    fb, micro = for_tflite_micro(fb)  # value-preserving: 12-input concatenations split, uint8 CAST as DEQUANTIZE
    census = ti.op_census(fb)
    ti.check_integer_only(census)
    say(ti.format_census(census))
    meta["quantization"] = {**recipe.describe(), "graph": graph_name("int8"), "int16_ops": [], "tflite_micro": micro,
                            "ranges": "extremes over the calibration set (calibrate_extremes)",
                            "activation": net.cfg.act, "align_corners": net.cfg.align_corners,
                            "post_training_only": bool(meta.get("model_cfg", {}).get("act", "gelu") == "gelu")}
    meta["output"] = {**meta["output"], "dtype": out_q["dtype"], "quantization": out_q}
    meta["output_quantization"] = out_q
    meta["op_census"] = census
    meta["model_cfg"] = {**meta.get("model_cfg", {}), "act": net.cfg.act, "align_corners": net.cfg.align_corners}
    return fb


def integer_variant(net: EGEUNet) -> EGEUNet:
    """The same weights in the integer variant's network (sigmoid GELU, half-pixel upsampling)."""
    from egeunet_deploy.model.ege_unet import model_from_cfg

    cfg = {**net.cfg.__dict__, "act": "sigmoid_gelu", "align_corners": False}
    variant = model_from_cfg(cfg)
    variant.load_state_dict(net.state_dict())
    return variant.eval()
