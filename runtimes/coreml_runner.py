"""Core ML (``.mlpackage``): prediction through coremltools on macOS; elsewhere a clear skip.

coremltools on Linux converts and inspects models but cannot execute them ("Model prediction is only supported on
macOS"), so ``is_available`` says exactly that off macOS. The artifact's metadata is still read and checked (the
contract fingerprint) before the skip, so a stale artifact is reported as such on any OS.
``device``/``compute_units``: ``cpu`` -> CPU_ONLY, ``gpu`` -> CPU_AND_GPU, ``auto`` -> ALL (Neural Engine allowed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .base import ArtifactError, Runner, RuntimeUnavailable, read_spec, register_runner

COMPUTE_UNITS = {"cpu": "CPU_ONLY", "gpu": "CPU_AND_GPU", "auto": "ALL", "ne": "CPU_AND_NE"}


@register_runner
class CoreMLRunner(Runner):
    backend = "coreml"
    module = "coremltools"
    distribution = "coremltools"
    session_attrs = ("model",)
    formats = ("coreml",)
    default_batch = 1  # Core ML image inputs take one image per prediction

    @classmethod
    def _platform_check(cls) -> tuple[bool, str]:
        if sys.platform != "darwin":
            return False, (f"Core ML prediction needs macOS (this is {sys.platform}; coremltools here can convert "
                           f"and inspect .mlpackage files but not execute them)")
        return True, "ok"

    def load(self, path: Path | str) -> CoreMLRunner:
        path = Path(path)
        if path.exists():
            self.spec = read_spec(path)  # contract check first, on every OS
        return super().load(path)

    def _load(self, path: Path) -> None:
        import coremltools as ct

        if self.device == "cuda":
            raise RuntimeUnavailable("coreml: no CUDA path; use --device auto, cpu or gpu")
        units = self.options.get("compute_units") or COMPUTE_UNITS[self.device]
        try:
            self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, units))
        except Exception as e:
            raise ArtifactError(f"{path}: Core ML cannot load it ({type(e).__name__}: {e})") from None
        desc = self.model.get_spec().description
        if len(desc.input) != 1 or len(desc.output) != 1:
            raise ArtifactError(f"{path}: expected one input and one output")
        inp = desc.input[0]
        if inp.name != self.spec.input_name:
            raise ArtifactError(f"{path}: model input is named {inp.name!r}, metadata says {self.spec.input_name!r}")
        self._image_input = inp.type.WhichOneof("Type") == "imageType"
        self._out_name = desc.output[0].name
        self.graph_batch = 1
        self._info = {"device": self.device, "provider": f"Core ML ({units})", "artifact": str(path),
                      "input_kind": "image" if self._image_input else "multiarray"}

    def _infer(self, x: np.ndarray) -> np.ndarray:
        if self._image_input:
            from PIL import Image

            hwc = x[0] if self.spec.layout == "NHWC" else x[0].transpose(1, 2, 0)
            feed = Image.fromarray(np.asarray(hwc, dtype=np.uint8))
        else:
            feed = x
        return np.asarray(self.model.predict({self.spec.input_name: feed})[self._out_name])

