"""ExecuTorch: runs the executorch target's programs with ExecuTorch's Python runtime (``executorch.runtime``),
XNNPACK delegate.

The program's ``forward`` method takes the uint8 NHWC image (preprocessing baked in) and returns the probability
map; the contract is read from the program's own ``egeunet_deploy`` constant method (``export/executorch.py``), and
the method's real input (shape, dtype) is checked against it. Threads: ExecuTorch's XNNPACK delegate uses one
process-wide thread pool, which ``threads`` resets (``_unsafe_reset_threadpool``) before the program is loaded:
resetting it under a loaded method corrupts the heap (measured: ``malloc(): mismatching next->prev_size``), so a
runner whose pool was changed since it loaded refuses to run instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from egeunet_deploy.export.executorch import METHOD  # also registers the programs' metadata reader

from .base import ArtifactError, Runner, RuntimeUnavailable, check_graph_input, read_spec, register_runner

_ET_DTYPES = {0: "uint8", 1: "int8", 5: "float16", 6: "float32"}
"""ExecuTorch ScalarType codes (as ``TensorInfo.dtype()`` returns them) -> numpy names."""


def _threadpool(threads: int | None) -> int | None:
    """Set the XNNPACK thread pool to ``threads`` (when given); the count in force afterwards."""
    try:
        from executorch.extension.pybindings import portable_lib
    except ImportError:
        return None
    if threads is not None and portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)
    return int(portable_lib._threadpool_get_thread_count())


@register_runner
class ExecuTorchRunner(Runner):
    backend = "executorch"
    module = "executorch"
    distribution = "executorch"
    session_attrs = ("program", "method")
    formats = ("executorch",)

    def _load(self, path: Path) -> None:
        from executorch.runtime import Runtime

        if self.device in ("cuda", "gpu"):
            raise RuntimeUnavailable("executorch: these programs are lowered to XNNPACK (CPU); run them with "
                                     "--device cpu")
        self.spec = read_spec(path)
        self._pool = _threadpool(self.threads)
        try:
            self.program = Runtime.get().load_program(path)
            self.method = self.program.load_method(METHOD)
        except Exception as e:
            raise ArtifactError(f"{path}: the ExecuTorch runtime cannot load it ({type(e).__name__}: {e})") from None
        meta = self.program.metadata(METHOD)
        if meta.num_inputs() != 1 or meta.num_outputs() != 1:
            raise ArtifactError(f"{path}: expected one input and one output, '{METHOD}' has {meta.num_inputs()} "
                                f"and {meta.num_outputs()}")
        inp = meta.input_tensor_meta(0)
        code = int(inp.dtype())
        check_graph_input(self.spec, list(inp.sizes()), _ET_DTYPES.get(code, f"ScalarType {code}"), "program")
        self.graph_batch = int(inp.sizes()[0])
        self._info = {"device": "cpu", "provider": "XNNPACK", "artifact": str(path),
                      "threadpool": self._pool, "threads_note": "XNNPACK thread pool (process-wide)"}

    def _infer(self, x: np.ndarray) -> np.ndarray:
        import torch

        if _threadpool(None) != self._pool:
            raise RuntimeError(f"executorch: the process-wide XNNPACK thread pool was reset to {_threadpool(None)} "
                               f"threads after {self.path} was loaded with {self._pool}; load it again")
        # a read-only or strided batch (e.g. a view of np.load's arrays) would make torch warn on the console: copy it
        (y,) = self.method.execute([torch.from_numpy(np.require(x, requirements=["C", "W"]))])
        return y.numpy().copy()  # the output lives in the method's planned memory, reused by the next call
