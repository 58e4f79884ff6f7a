"""Runtimes: run exported artifacts (and the PyTorch reference) behind one interface, measure drift and latency.

- :mod:`.base`: the :class:`Runner` interface, artifact metadata checks, the runner registry;
- one module per backend: :mod:`.torch_runner`, :mod:`.onnx_runner`, :mod:`.litert_runner`, :mod:`.coreml_runner`,
  :mod:`.tflm_runner` (TensorFlow Lite Micro, chosen only with ``--runtime tflm``) (importing them registers them;
  none imports its backend until an artifact is loaded);
- :mod:`.vela` (Ethos-U NPU compile and Vela's estimates), :mod:`.where` (where each artifact can run);
- :mod:`.drift` (``egeunet drift``), :mod:`.bench` (``egeunet bench``), :mod:`.android` (``--device android``),
  :mod:`.deploy` (``egeunet deploy``), :mod:`.report` (figures and HTML).
"""

from . import coreml_runner, litert_runner, onnx_runner, tflm_runner, torch_runner  # noqa: F401  (registration)
from .base import (
    RUNNERS,
    ArtifactError,
    ArtifactSpec,
    Runner,
    RuntimeUnavailable,
    read_spec,
    runner_class_for,
    runner_for,
)


def doctor() -> list[dict]:
    """Every backend, available or not and why, with its version and accelerators (``egeunet doctor``)."""
    rows = []
    for name, cls in RUNNERS.items():
        ok, reason = cls.is_available()
        rows.append({"backend": name, "available": ok, "reason": reason, "version": cls.version(),
                     "suffixes": list(cls.suffixes),
                     "accelerators": {k: {"present": v[0], "detail": v[1]} for k, v in cls.accelerators().items()}})
    return rows


__all__ = ["RUNNERS", "ArtifactError", "ArtifactSpec", "Runner", "RuntimeUnavailable", "doctor", "read_spec",
           "runner_class_for", "runner_for"]
