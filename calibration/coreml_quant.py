"""Core ML int8: weights only (any OS) and weights + activations calibrated on the set (macOS only).

``linear_quantize_weights`` rewrites constants and runs anywhere coremltools installs. Its default threshold
(2048 elements) would skip most of this model's small tensors, so the recipe quantizes all of them (threshold 0).
Activation quantization has to *run* the model on the calibration images to observe activation ranges, and
coremltools can only run models on macOS ("Model prediction is only supported on macOS"); on other systems
:func:`activation_quant_available` says so and the exporter reports the artifact as skipped with that reason.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class CoreMLInt8Recipe:
    """Recorded in the artifact's metadata as is."""

    name: str
    weights: dict
    activations: dict | None = None

    def describe(self) -> dict:
        d = asdict(self)
        d["tool"] = "coremltools.optimize.coreml"
        return d


WEIGHTS_ONLY = CoreMLInt8Recipe(
    name="coreml-linear-weights-int8",
    weights={"mode": "linear_symmetric", "dtype": "int8", "granularity": "per_channel", "weight_threshold": 0})
W8A8 = CoreMLInt8Recipe(
    name="coreml-w8a8",
    weights=WEIGHTS_ONLY.weights,
    activations={"mode": "linear_symmetric", "dtype": "int8", "weight_threshold": 0})


def activation_quant_available() -> tuple[bool, str]:
    if sys.platform != "darwin":
        return False, (f"Core ML activation quantization runs the model on the calibration images, and coremltools "
                       f"can run models only on macOS (this is {sys.platform}); weight-only int8 is available as "
                       f"precision 'int8w'")
    return True, "ok"


def quantize_weights_int8(mlmodel, recipe: CoreMLInt8Recipe = WEIGHTS_ONLY):
    import coremltools.optimize.coreml as cto

    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(**recipe.weights))
    return cto.linear_quantize_weights(mlmodel, config=config)


def quantize_w8a8(mlmodel, calib_images: np.ndarray, input_name: str, image_input: bool,
                  recipe: CoreMLInt8Recipe = W8A8):
    """Activations calibrated on ``calib_images`` (uint8 NHWC contract images), then int8 weights. macOS only."""
    ok, reason = activation_quant_available()
    if not ok:
        raise RuntimeError(reason)
    import coremltools.optimize.coreml as cto
    from coremltools.optimize.coreml.experimental import OpActivationLinearQuantizerConfig, linear_quantize_activations

    if image_input:
        from PIL import Image

        samples = [{input_name: Image.fromarray(img)} for img in calib_images]
    else:
        samples = [{input_name: x[None]} for x in calib_images]
    act = cto.OptimizationConfig(global_config=OpActivationLinearQuantizerConfig(**recipe.activations))
    mlmodel = linear_quantize_activations(mlmodel, act, samples)
    return quantize_weights_int8(mlmodel, recipe)
