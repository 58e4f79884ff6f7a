"""Runtimes: run exported artifacts (and the PyTorch reference) behind one interface, measure drift and latency.

- :mod:`.base`: the :class:`Runner` interface, artifact metadata checks, the runner registry;
- one module per backend, ``<backend>_runner.py``: :mod:`.torch_runner`, :mod:`.onnx_runner`, :mod:`.litert_runner`,
  :mod:`.coreml_runner`, :mod:`.tflm_runner` (TensorFlow Lite Micro, chosen only with ``--runtime tflm``),
  :mod:`.openvino_runner` (``--runtime openvino`` on ``.onnx``); every such module is imported (so registered) here,
  a new backend needs no edit of this file; none imports its backend until an artifact is loaded;
- :mod:`.vela` (Ethos-U NPU compile and Vela's estimates), :mod:`.where` (where each artifact can run);
- :mod:`.drift` (``egeunet drift``), :mod:`.bench` (``egeunet bench``), :mod:`.android` (``--device android``),
  :mod:`.deploy` (``egeunet deploy``), :mod:`.report` (figures and HTML).
"""

import importlib as _importlib
import pkgutil as _pkgutil

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

for _mod in sorted(m.name for m in _pkgutil.iter_modules(__path__)):  # registration: every <backend>_runner module
    if _mod.endswith("_runner"):
        _importlib.import_module(f"{__name__}.{_mod}")


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
