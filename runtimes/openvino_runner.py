"""OpenVINO: the runtime most x86 edge boxes use, on the ``.onnx`` artifacts (chosen with ``--runtime openvino``).

The ONNX file is read by OpenVINO's own frontend (no ONNX Runtime involved) and compiled for the ``CPU`` plugin
(``device="gpu"`` asks for OpenVINO's ``GPU`` plugin, an Intel GPU). Latency settings, each overridable by an option
of the same name (``egeunet bench`` and ``drift`` pass none):

- ``PERFORMANCE_HINT=LATENCY`` and ``NUM_STREAMS=1``: one inference at a time, as the app runs it;
- ``INFERENCE_NUM_THREADS`` = the runner's ``threads`` (OpenVINO's default otherwise);
- ``INFERENCE_PRECISION_HINT=f32``: the CPU plugin would otherwise run in bf16 on CPUs with AMX/AVX-512 BF16 (and
  fp16 on some ARM), which changes the masks of an fp32 artifact; an fp32 artifact runs in fp32 everywhere.

What ran is read back from the compiled model (``info()``: the plugin, its precision, streams, threads). ``options
perf_count=True`` turns on OpenVINO's per-node profiling; :meth:`OpenVINORunner.profile` then sums the time by
node type and by the kernel implementation the plugin picked (e.g. ``jit_avx2_FP32``, ``ref_any``, ``reorder``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from .base import ArtifactError, Runner, RuntimeUnavailable, check_graph_input, read_spec, register_runner

DEFAULT_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": "f32"}
"""What the runner compiles with unless an option of the same name says otherwise."""

READ_BACK = ("PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT")
_OV_DTYPES = {"u8": "uint8", "f32": "float32", "f16": "float16", "i8": "int8"}


@register_runner
class OpenVINORunner(Runner):
    backend = "openvino"
    module = "openvino"
    distribution = "openvino"
    session_attrs = ("compiled", "request")
    formats = ("onnx",)  # ONNX Runtime is the onnx row's runner; OpenVINO when named (--runtime openvino)

    @classmethod
    def accelerators(cls) -> dict[str, tuple[bool, str]]:
        if not cls.is_available()[0]:
            return {}
        import openvino as ov

        devices = ov.Core().available_devices
        gpus = [d for d in devices if d.startswith("GPU")]
        return {"gpu": (bool(gpus), ", ".join(gpus) if gpus else f"no OpenVINO GPU device (devices: "
                                                                  f"{', '.join(devices)})")}

    def _config(self) -> dict:
        cfg = dict(DEFAULT_CONFIG)
        if self.threads is not None:
            cfg["INFERENCE_NUM_THREADS"] = str(self.threads)
        for key in (*READ_BACK, "PERF_COUNT"):
            if self.options.get(key) is not None:
                cfg[key] = str(self.options[key])
        if self.options.get("perf_count"):
            cfg["PERF_COUNT"] = "YES"
        return cfg

    def _load(self, path: Path) -> None:
        import openvino as ov

        self.spec = read_spec(path)
        if self.device == "cuda":
            raise RuntimeUnavailable("openvino: no CUDA path; OpenVINO's GPU plugin is for Intel GPUs "
                                     "(--device gpu)")
        core = ov.Core()
        plugin = "GPU" if self.device == "gpu" else "CPU"
        if plugin not in core.available_devices:
            raise RuntimeUnavailable(f"openvino {self.version()}: no {plugin} device here (devices: "
                                     f"{', '.join(core.available_devices)})")
        try:
            model = core.read_model(str(path))
        except Exception as e:  # OpenVINO raises RuntimeError subclasses of its own for unreadable graphs
            raise ArtifactError(f"{path}: OpenVINO cannot read it ({type(e).__name__}: "
                                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ArtifactError(f"{path}: expected one input and one output, graph has {len(model.inputs)} and "
                                f"{len(model.outputs)}")
        inp = model.inputs[0]
        if self.spec.input_name not in inp.get_names():
            raise ArtifactError(f"{path}: graph input is named {inp.get_any_name()!r}, metadata says "
                                f"{self.spec.input_name!r}")
        pshape = inp.get_partial_shape()
        shape = [d.get_length() if d.is_static else None for d in pshape]
        dtype = _OV_DTYPES.get(inp.get_element_type().get_type_name(), inp.get_element_type().get_type_name())
        check_graph_input(self.spec, shape, dtype, "graph")
        self.graph_batch = shape[0]
        config = self._config()
        try:
            self.compiled = core.compile_model(model, plugin, config)
        except Exception as e:
            raise ArtifactError(f"{path}: OpenVINO cannot compile it for {plugin} ({type(e).__name__}: "
                                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
        self.request = self.compiled.create_infer_request()
        used = {}
        for key in READ_BACK:
            try:
                used[key] = str(self.compiled.get_property(key)).replace("<Type: ", "").rstrip(">").strip("'")
            except Exception:  # a plugin without that property
                used[key] = None
        self._info = {"device": "gpu" if plugin == "GPU" else "cpu", "provider": f"OpenVINO {plugin}",
                      "plugin": plugin, "config": config, "compiled": used, "artifact": str(path),
                      "threads_note": "INFERENCE_NUM_THREADS" if self.threads else "openvino default"}

    def _infer(self, x: np.ndarray) -> np.ndarray:
        self.request.infer({0: x})
        return np.array(self.request.get_output_tensor(0).data, copy=True)

    def profile(self) -> dict:
        """Time of the last inference by node type and by kernel implementation (``perf_count=True`` needed):
        ``{"by_type": {type: us}, "by_exec": {impl: us}, "nodes": n, "total_us": t}``."""
        if not self._info.get("config", {}).get("PERF_COUNT") == "YES":
            raise ValueError("OpenVINORunner.profile() needs the runner built with perf_count=True")
        by_type: dict = defaultdict(float)
        by_exec: dict = defaultdict(float)
        n = 0
        for p in self.request.get_profiling_info():
            us = p.real_time.total_seconds() * 1e6
            if us <= 0:
                continue
            n += 1
            by_type[p.node_type] += us
            by_exec[p.exec_type] += us
        order = lambda d: dict(sorted(d.items(), key=lambda kv: -kv[1]))  # noqa: E731
        return {"by_type": order(by_type), "by_exec": order(by_exec), "nodes": n,
                "total_us": float(sum(by_type.values()))}
