"""ONNX Runtime: the CPU execution provider, CUDA when present, any other provider by name.

``device="auto"`` picks CUDA when this onnxruntime build has it, else CPU; ``device="cuda"`` insists on it. Other
providers (TensorRT, OpenVINO, CoreML, DirectML ...) are requested with ``provider=NAME``. The provider that really
ran is read back from the session (ORT silently falls back to CPU for nodes a provider rejects), so the report says
what happened, not what was asked.

The graph optimisation level is the artifact's to choose: the exporter measures which level is fastest for the graph
it writes and records it in the metadata (``ort_graph_optimization_level``); the runner honours it unless the caller
passes ``graph_optimization_level=...``, and :meth:`OnnxRunner.info` reports the level used and where it came from.
Why it matters: at ``all`` ONNX Runtime converts convolutions to its blocked NCHWc layout and reorders around every
other op, which cost the rewritten graph ~20% at 1 thread; at ``extended`` it keeps every fusion but that one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import ArtifactError, Runner, RuntimeUnavailable, check_graph_input, read_spec, register_runner

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "gpu": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "qnn": "QNNExecutionProvider",
}
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
DEFAULT_GRAPH_OPTIMIZATION_LEVEL = "all"  # ONNX Runtime's own default, for artifacts that do not name one
METADATA_LEVEL_KEY = "ort_graph_optimization_level"
_ORT_DTYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(float16)": "float16",
               "tensor(int8)": "int8"}


def provider_name(name: str) -> str:
    """'cuda' -> 'CUDAExecutionProvider'; full provider names pass through."""
    if name.endswith("ExecutionProvider"):
        return name
    try:
        return PROVIDER_ALIASES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown ONNX Runtime provider {name!r}; known: {', '.join(PROVIDER_ALIASES)} "
                         f"or a full '...ExecutionProvider' name") from None


def graph_optimization_level(name: str):
    """'extended' -> ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED; unknown names are refused, listing the valid."""
    import onnxruntime as ort

    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    try:
        return levels[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown ONNX Runtime graph optimization level {name!r}; known: "
                         f"{', '.join(GRAPH_OPTIMIZATION_LEVELS)}") from None


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


@register_runner
class OnnxRunner(Runner):
    backend = "onnxruntime"
    module = "onnxruntime"
    distribution = "onnxruntime"
    session_attrs = ("session",)
    formats = ("onnx",)

    @classmethod
    def accelerators(cls) -> dict[str, tuple[bool, str]]:
        if not cls.is_available()[0]:
            return {}
        have = available_providers()
        ok = "CUDAExecutionProvider" in have
        return {"cuda": (ok, "CUDAExecutionProvider" if ok else f"this onnxruntime build has no CUDA EP "
                                                                 f"(providers: {', '.join(have)}; pip install "
                                                                 f"onnxruntime-gpu)")}

    def _providers(self) -> list[str]:
        have = available_providers()
        wanted = self.options.get("provider")
        if wanted is None:
            if self.device in ("cuda", "gpu"):
                wanted = "cuda"
            elif self.device == "auto" and "CUDAExecutionProvider" in have:
                wanted = "cuda"
            else:
                wanted = "cpu"
        name = provider_name(wanted)
        if name not in have:
            raise RuntimeUnavailable(f"onnxruntime {self.version()}: {name} requested but absent "
                                     f"(this build has {', '.join(have)})")
        return [name] if name == "CPUExecutionProvider" else [name, "CPUExecutionProvider"]

    def _load(self, path: Path) -> None:
        import onnxruntime as ort

        self.spec = read_spec(path)
        providers = self._providers()
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        level, source = self._graph_level()
        try:
            so.graph_optimization_level = graph_optimization_level(level)
        except ValueError as e:
            if source == "metadata":
                raise ArtifactError(f"{path}: metadata {METADATA_LEVEL_KEY}: {e}") from None
            raise
        if self.threads is not None:
            so.intra_op_num_threads = self.threads
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as e:  # ORT raises its own exception types for corrupt or unsupported graphs
            raise ArtifactError(f"{path}: onnxruntime cannot load it ({type(e).__name__}: {e})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ArtifactError(f"{path}: expected one input and one output, graph has {len(inputs)} and "
                                f"{len(outputs)}")
        inp = inputs[0]
        if inp.name != self.spec.input_name:
            raise ArtifactError(f"{path}: graph input is named {inp.name!r}, metadata says {self.spec.input_name!r}")
        shape = [d if isinstance(d, int) else None for d in inp.shape]
        check_graph_input(self.spec, shape, _ORT_DTYPES.get(inp.type, inp.type), "graph")
        self.graph_batch = shape[0]
        self._input_name, self._output_name = inp.name, outputs[0].name
        used = self.session.get_providers()
        self._info = {"device": "cuda" if used[0] == "CUDAExecutionProvider" else "cpu", "provider": used[0],
                      "providers": used, "artifact": str(path),
                      "threads_note": "intra_op_num_threads" if self.threads else "onnxruntime default",
                      "graph_optimization_level": level, "graph_optimization_level_from": source}

    def _graph_level(self) -> tuple[str, str]:
        """(level, where it came from): the caller's option, else the artifact's metadata, else ORT's default."""
        if self.options.get("graph_optimization_level") is not None:
            return str(self.options["graph_optimization_level"]), "option"
        recorded = self.spec.metadata.get(METADATA_LEVEL_KEY) if self.spec.metadata else None
        if recorded is not None:
            return str(recorded), "metadata"
        return DEFAULT_GRAPH_OPTIMIZATION_LEVEL, "default"

    def _infer(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self._output_name], {self._input_name: x})[0]

