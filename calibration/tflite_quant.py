"""LiteRT quantization with ai-edge-quantizer: the int8 recipe (calibrated on the set) and fp16 weights.

The int8 recipe is an explicit, per-block mixed-precision recipe over the rewritten graph (``export/rewrite.py``,
whose block names the converter keeps in every op's output tensor name): every op of every block is static int8
(int8 activations, per-channel int8 weights) except

- ``float_ops``: op types that stay float everywhere. RSQRT: LiteRT has no XNNPACK int8 kernel for it and its
  reference int8 kernel was ~10x slower than the whole float block it sits in (measured: 9 ms for one
  128x128x4 RSQRT), and its input (a variance) spans decades that 8 bits cannot hold;
- ``float_blocks``: blocks kept float because quantizing them costs the most Dice, chosen from the measured int8
  blame ranking (:mod:`.blame`; quantize one block at a time, rank by the pooled Dice it costs);
- ``float_scopes``: sub-module scopes kept float in every block (``vec``: the per-image GroupNorm vector
  arithmetic, a few dozen numbers whose quantization would shift a whole feature map).

The float graph handed to the quantizer is the same rewrite the fp32 artifact is converted from. The calibration
result (per-tensor ranges, moving average of per-image min/max over the set) is computed once and
reused for every recipe (:func:`calibrate`), which is what makes the blame ranking affordable. The full-integer
recipe takes the extremes over the set instead (:func:`calibrate_extremes`).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import asdict, dataclass

import numpy as np

from .blame import DEFAULT_FLOAT_BLOCKS

SIGNATURE = "serving_default"
QUANTIZABLE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "MEAN", "MUL", "ADD", "SUB",
                   "GELU", "CONCATENATION", "RESIZE_BILINEAR", "RESHAPE", "LOGISTIC", "SLICE", "SPLIT", "RSQRT")


@dataclass(frozen=True)
class LiteRTInt8Recipe:
    """How :func:`quantize_tflite_int8` quantizes; recorded in the artifact's metadata as is."""

    name: str = "aeq-a8w8-mixed"
    ops: tuple[str, ...] = QUANTIZABLE_OPS
    float_ops: tuple[str, ...] = ("RSQRT",)
    float_blocks: tuple[str, ...] = ()
    float_scopes: tuple[str, ...] = ("vec",)
    activation_bits: int = 8
    weight_bits: int = 8
    weight_granularity: str = "CHANNELWISE"

    def describe(self) -> dict:
        d = asdict(self)
        d["tool"] = "ai-edge-quantizer (min_max_uniform_quantize, static)"
        d["graph"] = "export.rewrite.FastEGEUNet(layout=NHWC)"
        return d

    def only(self, block: str) -> LiteRTInt8Recipe:
        """This recipe restricted to one block (every other block float): one step of the blame ranking."""
        from egeunet_deploy.model.ege_unet import BLOCKS

        return LiteRTInt8Recipe(f"{self.name}-only-{block}", self.ops, self.float_ops,
                                tuple(b for b in BLOCKS if b != block), self.float_scopes, self.activation_bits,
                                self.weight_bits, self.weight_granularity)


DEFAULT_LITERT_RECIPE = LiteRTInt8Recipe(
    name="aeq-a8w8-conv-midblocks", ops=("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"),
    float_blocks=DEFAULT_FLOAT_BLOCKS)
"""Measured on 120 isic2017 val images (interim weights), against the float artifact: convolutions int8 in the
low-resolution blocks gave mask agreement 0.988 and pooled Dice -0.0008 at ~1.0x the fp32 latency; quantizing
every op there as well (pool, resize, concat, GELU, mean) 0.986 / -0.0024 at the same speed; every op in every
block but ``preprocess``/``encoder1`` 0.975 / -0.0038 at ~1.25x; every op everywhere 0.888 / -0.0153."""


INT8_FULL_RECIPE = LiteRTInt8Recipe(name="aeq-a8w8-full-integer", float_ops=(), float_blocks=("preprocess",),
                                    float_scopes=())
"""Every quantizable op of every block int8 (int8 activations, per-channel int8 weights): the ``int8-full`` artifact.
The only float ops left are the preprocessing ones that have no integer form on the targets (CAST, REDUCE_MIN/MAX,
MAXIMUM, DIV): the graph's first ops. Its graph is the integer variant's rewrite (``FastEGEUNet(int8_friendly=True)``:
centred GroupNorm statistics, whose full-resolution tensors survive int8)."""


def block_pattern(block: str) -> str:
    """Regex matching the output tensor names of a block's ops. litert-torch names a tensor after the module path
    that produced it (``.../_EncoderStage_encoder1/..._ConvHolder_block;3``); the network's output tensor is renamed
    after the signature and belongs to the last block."""
    pat = "_" + re.escape(block) + "[/;]"
    if block == "final":
        pat = f"(?:{pat}|{SIGNATURE}_\\w+_output)"
    return pat


def recipe_regex(recipe: LiteRTInt8Recipe) -> str:
    """One regex over op scopes (output tensor names joined by ';') selecting the ops the recipe quantizes."""
    excluded = [block_pattern(b) for b in recipe.float_blocks] + ["_" + re.escape(s) + "[/;]"
                                                                   for s in recipe.float_scopes]
    return "^(?!.*(?:" + "|".join(excluded) + ")).*" if excluded else ".*"


@contextlib.contextmanager
def _quiet():
    """ai-edge-quantizer draws tqdm bars on stderr for every step; keep the export table readable."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        yield


def _quantizer(flatbuffer: bytes, recipe: LiteRTInt8Recipe):
    from ai_edge_quantizer import qtyping, quantizer

    qt = quantizer.Quantizer(flatbuffer)
    regex = recipe_regex(recipe)
    for op in recipe.ops:
        if op in recipe.float_ops:
            continue
        qt.add_static_config(regex, getattr(qtyping.TFLOperationName, op), recipe.activation_bits,
                             recipe.weight_bits,
                             weight_granularity=getattr(qtyping.QuantGranularity, recipe.weight_granularity))
    return qt


def calibrate(flatbuffer: bytes, calib_inputs: np.ndarray, input_name: str) -> dict:
    """Activation ranges of every quantizable tensor over the calibration inputs (in the graph's input format).
    Independent of the recipe (it observes all tensors), so one result serves every recipe built from it."""
    if len(calib_inputs) == 0:
        raise ValueError("int8 quantization needs at least one calibration input")
    qt = _quantizer(flatbuffer, LiteRTInt8Recipe(float_ops=(), float_scopes=()))
    samples = {SIGNATURE: [{input_name: np.ascontiguousarray(calib_inputs[i : i + 1])}
                           for i in range(len(calib_inputs))]}
    with _quiet():
        return qt.calibrate(samples, num_threads=max(1, min(4, os.cpu_count() or 1)))


def calibrate_extremes(flatbuffer: bytes, calib_inputs: np.ndarray, input_name: str) -> dict:
    """Activation ranges as the extremes over the calibration inputs (each image calibrated alone, then the
    elementwise min of minima and max of maxima), instead of :func:`calibrate`'s moving average of per-image ranges.

    Why: in the full-integer graph the per-image statistics (GroupNorm's channel means, variances, rsqrt) vary from
    image to image more than feature maps do, and a moving-average range clips the images at the ends: measured on the
    QAT weights, 149 val images, mask agreement with the fp32 weights 0.9138 (moving average) -> 0.9553 (extremes)."""
    if len(calib_inputs) == 0:
        raise ValueError("int8 quantization needs at least one calibration input")
    per_image = [calibrate(flatbuffer, calib_inputs[i : i + 1], input_name) for i in range(len(calib_inputs))]
    ranges = {}
    for name, first in per_image[0].items():
        ranges[name] = {**first,
                        "min": np.minimum.reduce([np.asarray(r[name]["min"]) for r in per_image]),
                        "max": np.maximum.reduce([np.asarray(r[name]["max"]) for r in per_image])}
    return ranges


def quantize_tflite_int8(flatbuffer: bytes, calib_inputs: np.ndarray | None, input_name: str,
                         recipe: LiteRTInt8Recipe = DEFAULT_LITERT_RECIPE, ranges: dict | None = None) -> bytes:
    """A float TFLite flatbuffer + calibration inputs (or ranges from :func:`calibrate`) -> the int8 flatbuffer."""
    if ranges is None:
        if calib_inputs is None:
            raise ValueError("int8 quantization needs calibration inputs or precomputed ranges")
        ranges = calibrate(flatbuffer, calib_inputs, input_name)
    qt = _quantizer(flatbuffer, recipe)
    with _quiet():
        return bytes(qt.quantize(ranges).quantized_model)


def quantize_tflite_fp16(flatbuffer: bytes) -> bytes:
    """fp16 weights (the standard TFLite "float16 quantization"): half the weight bytes, float32 compute on CPU
    (the weights are dequantized once at load), native fp16 on GPU delegates."""
    from ai_edge_quantizer import quantizer

    recipe = [{"regex": ".*", "operation": "*", "algorithm_key": "float_casting",
               "op_config": {"weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
                             "compute_precision": "FLOAT", "explicit_dequantize": True}}]
    qt = quantizer.Quantizer(flatbuffer, recipe)
    with _quiet():
        return bytes(qt.quantize(enable_progress_report=False).quantized_model)
