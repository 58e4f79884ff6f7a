"""LiteRT (TensorFlow Lite) interpreter: XNNPACK with a thread count; GPU delegate where the platform has one.

``delegate="xnnpack"`` (default) is the interpreter's default CPU path, the one an Android app gets;
``delegate="none"`` runs the plain builtin kernels (useful to tell an XNNPACK bug from a model bug);
``delegate="reference"`` runs LiteRT's reference kernels (the portable kernels TensorFlow Lite Micro derives from:
``bench/tflm_vs_litert.py`` compares the three with TFLite Micro on one full-integer file);
``delegate="gpu"`` loads the TFLite GPU delegate library (``libtensorflowlite_gpu_delegate.so`` or the path in
``$EGEUNET_TFLITE_GPU_DELEGATE``). The pip wheel ships no GPU delegate for desktop Linux, so there it is a clear
skip, not a silent CPU fallback. Which delegate really took nodes is read back from the interpreter's op list.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import ArtifactError, Runner, RuntimeUnavailable, check_graph_input, read_spec, register_runner

GPU_DELEGATE_ENV = "EGEUNET_TFLITE_GPU_DELEGATE"
GPU_DELEGATE_LIBS = ("libtensorflowlite_gpu_delegate.so", "libtensorflowlite_gpu_gl.so", "libLiteRtGpuAccelerator.so")
DELEGATES = ("xnnpack", "none", "reference", "gpu")


def _load_gpu_delegate():
    import ctypes

    from ai_edge_litert.interpreter import load_delegate

    chosen = os.environ.get(GPU_DELEGATE_ENV)
    candidates = [chosen] if chosen else list(GPU_DELEGATE_LIBS)
    errors = []
    for lib in candidates:
        try:
            ctypes.CDLL(lib)  # probe first: load_delegate on a missing library leaves a noisy half-built object
        except OSError as e:  # the loader's own words: "cannot open shared object file", "invalid ELF header", ...
            errors.append(f"{lib} not found" if not Path(lib).exists() else f"{lib}: {str(e).split(': ')[-1]}")
            continue
        try:
            return lib, load_delegate(lib)
        except (OSError, ValueError, RuntimeError, AttributeError) as e:
            errors.append(f"{lib}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if chosen:
        raise RuntimeUnavailable(f"LiteRT GPU delegate from ${GPU_DELEGATE_ENV} cannot be loaded: {errors[0]}")
    raise RuntimeUnavailable("LiteRT GPU delegate not available on this platform (the ai-edge-litert wheel ships none "
                             f"for desktop Linux; set ${GPU_DELEGATE_ENV} to a built delegate library). Tried: "
                             + "; ".join(errors))


def gpu_delegate_status() -> tuple[bool, str]:
    try:
        lib, _ = _load_gpu_delegate()
        return True, lib
    except RuntimeUnavailable as e:
        return False, str(e)
    except ImportError as e:
        return False, str(e)


@register_runner
class LiteRTRunner(Runner):
    backend = "litert"
    module = "ai_edge_litert"
    distribution = "ai-edge-litert"
    session_attrs = ("interpreter",)
    formats = ("tflite",)

    @classmethod
    def accelerators(cls) -> dict[str, tuple[bool, str]]:
        if not cls.is_available()[0]:
            return {}
        return {"gpu": gpu_delegate_status()}

    def _load(self, path: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.spec = read_spec(path)
        delegate = self.options.get("delegate") or ("gpu" if self.device == "gpu" else "xnnpack")
        if delegate not in DELEGATES:
            raise ValueError(f"unknown LiteRT delegate {delegate!r}; known: {', '.join(DELEGATES)}")
        if self.device == "cuda":
            raise RuntimeUnavailable("litert: no CUDA path in LiteRT; benchmark .tflite files with --device cpu "
                                     "(XNNPACK) or --device android")
        kwargs: dict = {"model_path": str(path), "num_threads": self.threads}
        lib = None
        if delegate == "gpu":
            lib, gpu = _load_gpu_delegate()
            kwargs["experimental_delegates"] = [gpu]
        elif delegate == "none":
            kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        elif delegate == "reference":
            kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_REF
        try:
            self.interpreter = Interpreter(**kwargs)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ArtifactError(f"{path}: LiteRT cannot load it ({e})") from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ArtifactError(f"{path}: expected one input and one output, graph has {len(inputs)} and "
                                f"{len(outputs)}")
        self._in, self._out = inputs[0], outputs[0]
        shape = [int(d) if d > 0 else None for d in self._in.get("shape_signature", self._in["shape"])]
        check_graph_input(self.spec, shape, np.dtype(self._in["dtype"]).name, "interpreter")
        self.graph_batch = int(self._in["shape"][0])
        self._out_scale, self._out_zero = self._out.get("quantization", (0.0, 0))
        delegated = self._delegate_partitions()
        used = {"gpu": f"GPU ({lib})", "none": "none (builtin kernels)",
                "reference": "none (reference kernels)"}.get(delegate, "XNNPACK")
        self._info = {"device": "gpu" if delegate == "gpu" else "cpu", "provider": used, "delegate": delegate,
                      "delegate_partitions": delegated, "artifact": str(path)}
        if delegate in ("xnnpack", "gpu") and delegated == 0:
            self._info["provider"] = f"builtin kernels ({delegate} took no nodes)"

    def _delegate_partitions(self) -> int | None:
        """Number of DELEGATE nodes (XNNPACK/GPU partitions) in the graph, None if not introspectable."""
        try:
            ops = self.interpreter._get_ops_details()
        except Exception:
            return None
        return sum(1 for op in ops if op.get("op_name") == "DELEGATE")

    def _infer(self, x: np.ndarray) -> np.ndarray:
        it = self.interpreter
        it.set_tensor(self._in["index"], x)
        it.invoke()
        y = it.get_tensor(self._out["index"])
        if np.issubdtype(y.dtype, np.integer) and self._out_scale:  # quantized output: back to probabilities
            y = (y.astype(np.float32) - self._out_zero) * self._out_scale
        return y

