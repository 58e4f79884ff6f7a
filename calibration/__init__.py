"""int8 calibration: the calibration set (built once from real training images, hashed) and the quantization
recipes of each target that consume it.

- :mod:`.build`: ``egeunet calibrate`` (:func:`build_calibration_set`, :func:`load_calibration_set`);
- :mod:`.onnx_quant`, :mod:`.tflite_quant`, :mod:`.coreml_quant`: one recipe per toolchain, kept as data and
  written into each int8 artifact's metadata.
"""

from .build import (
    MIN_IMAGES,
    CalibrationError,
    build_calibration_set,
    bundled_calibration_set,
    calibration_sha256,
    load_calibration_set,
)

__all__ = ["MIN_IMAGES", "CalibrationError", "build_calibration_set", "bundled_calibration_set",
           "calibration_sha256", "load_calibration_set"]
