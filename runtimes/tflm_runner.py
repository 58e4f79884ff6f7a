"""TensorFlow Lite Micro: the microcontroller interpreter and its reference kernels, run on this host.

``pip install tflite-micro`` ships TFLite Micro's C++ interpreter (``tflite_micro.python.tflite_micro.runtime``)
with the portable reference kernels a Cortex-M build falls back to when no optimised (CMSIS-NN) kernel exists. So
this runner answers, on a PC, the two questions an MCU port asks first: does the model load and compute the same
masks as LiteRT (same flatbuffer, different kernels), and how much RAM does it need (the tensor arena, read back from
TFLite Micro's recording allocator after the graph is prepared, then proved sufficient by preparing the graph again in
an arena of exactly that size). Host seconds per image are reported but say nothing about an MCU's latency.

Only full-integer graphs are accepted (:mod:`.integer_graph`): a float model is refused up front with the float ops
named, and when TFLite Micro itself refuses a graph its own words, printed by the C++ code to stderr and never seen by
Python (which gets "TFLM failed to allocate tensors"), are captured and turned into a message that names the op types
TFLite Micro lacks. Never picked by suffix: LiteRT stays the default for .tflite files; choose it with
``--runtime tflm`` (``egeunet drift``, ``egeunet bench``) or ``runner_class_for(path, "tflm")``.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from .base import ArtifactError, Runner, RuntimeUnavailable, check_graph_input, read_spec, register_runner
from .integer_graph import analyse, require_full_integer

PROBE_ARENA_BYTES = 64 * 1024 * 1024
"""Arena for the first preparation, whose recorded use then sets the real one (TFLite Micro allocates it whole)."""
ARENA_SLACK_STEP = 1024
"""When an arena of exactly the recorded bytes does not prepare (alignment), grow it in these steps."""
ARENA_SLACK_MAX = 64 * 1024

_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")
_ARENA_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_FAILED_NODE = re.compile(r"Node (\w+) \(number (\d+)\) failed to (prepare|invoke)")


@contextlib.contextmanager
def captured_stderr():
    """Collect what C/C++ code writes to file descriptor 2 (TFLite Micro's MicroPrintf) into ``box[0]``."""
    box = [""]
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            yield box
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            box[0] = tmp.read().decode(errors="replace")


def explain_tflm_failure(path: Path, log: str, error: Exception) -> str:
    """TFLite Micro's stderr + exception -> one message that says what it lacks."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    missing = sorted(set(_MISSING_OP.findall(log)))
    if missing:
        # TFLite Micro stops at the first op it has no kernel for; list the graph's other op types too, so a user
        # knows what else to check before the next try
        return (f"{path}: TFLite Micro has no kernel for the op type(s) {', '.join(missing)} (\"Didn't find op for "
                f"builtin opcode\"); replace them in the graph (e.g. GELU by its sigmoid form x*sigmoid(1.702x), "
                f"which exports to LOGISTIC + MUL)")
    detail = "; ".join(lines[-3:]) if lines else str(error)
    hint = ""
    if "kMaxInputNum" in log:
        hint = (" TFLite Micro's CONCATENATION takes at most 10 inputs: nest wider ones "
                "(export.tflm_compat.split_wide_concats does it on the flatbuffer without changing a value).")
    elif "UINT8" in log and "CAST" in log:
        hint = (" TFLite Micro's CAST does not take uint8 input: export.tflm_compat.uint8_cast_as_dequantize "
                "turns the input CAST into an equivalent DEQUANTIZE.")
    return f"{path}: TFLite Micro refuses it: {detail}.{hint}"


@register_runner
class TFLMRunner(Runner):
    backend = "tflm"
    module = "tflite_micro"
    distribution = "tflite-micro"
    formats = ("tflite",)  # LiteRT is the tflite row's runner; this one only when asked for (--runtime tflm)
    session_attrs = ("interpreter",)
    default_batch = 1

    @classmethod
    def _platform_check(cls) -> tuple[bool, str]:
        try:
            from tflite_micro.python.tflite_micro import runtime  # noqa: F401  (the C++ extension)
        except ImportError as e:
            return False, f"tflite-micro is installed but its interpreter does not import here ({e})"
        return True, "ok"

    def _new_interpreter(self, arena: int):
        from tflite_micro.python.tflite_micro import runtime

        return runtime.Interpreter.from_bytes(self._model_bytes, arena_size=int(arena))

    def _prepare(self, arena: int):
        """(interpreter or None, TFLite Micro's stderr, exception or None)."""
        with captured_stderr() as log:
            try:
                it, err = self._new_interpreter(arena), None
            except (RuntimeError, ValueError) as e:
                it, err = None, e
        return it, log[0], err

    def _load(self, path: Path) -> None:
        self.spec = read_spec(path)
        if self.device not in ("auto", "cpu"):
            raise RuntimeUnavailable(f"tflm: TFLite Micro runs its reference kernels on this host's CPU; "
                                     f"device {self.device!r} is not one of its paths")
        self.integer = require_full_integer(path, "TFLite Micro", analyse(path))
        self._model_bytes = path.read_bytes()
        probe = int(self.options.get("arena_size") or PROBE_ARENA_BYTES)
        it, log, err = self._prepare(probe)
        if it is None:
            raise ArtifactError(explain_tflm_failure(path, log, err))
        used = self._arena_used(it)
        arena, verified = probe, False
        if used and not self.options.get("arena_size"):  # prove the recorded figure is enough, then use it
            for extra in range(0, ARENA_SLACK_MAX + 1, ARENA_SLACK_STEP):
                small, _, err = self._prepare(used + extra)
                if small is not None:
                    it, arena, verified = small, used + extra, True
                    break
        self.interpreter = it
        self._in, self._out = it.get_input_details(0), it.get_output_details(0)
        shape = [int(d) for d in self._in["shape"]]
        check_graph_input(self.spec, shape, np.dtype(self._in["dtype"]).name, "TFLite Micro")
        self.graph_batch = shape[0]
        q = self._out.get("quantization_parameters") or {}
        scales, zeros = list(q.get("scales", [])), list(q.get("zero_points", []))
        self._out_scale = float(scales[0]) if scales else 0.0
        self._out_zero = int(zeros[0]) if zeros else 0
        meta_q = self.spec.metadata.get("output_quantization") or {}
        if meta_q and self._out_scale and (abs(float(meta_q.get("scale", 0)) - self._out_scale) > 1e-9
                                           or int(meta_q.get("zero_point", 0)) != self._out_zero):
            raise ArtifactError(f"{path}: output quantization {self._out_scale:g}/{self._out_zero} in the graph, "
                                f"{meta_q.get('scale')}/{meta_q.get('zero_point')} in the metadata")
        self._info = {"device": "cpu", "provider": "TFLite Micro reference kernels (host)", "artifact": str(path),
                      "arena_bytes": used, "arena_size_used": arena, "arena_verified": verified,
                      "output_dtype": np.dtype(self._out["dtype"]).name, "threads_note": "single-threaded",
                      "preprocessing_ops": self.integer.preprocessing_ops()}

    @staticmethod
    def _arena_used(it) -> int | None:
        with captured_stderr() as log:
            it.print_allocations()
        m = _ARENA_TOTAL.search(log[0])
        return int(m.group(1)) if m else None

    @property
    def arena_bytes(self) -> int | None:
        """Tensor-arena bytes the model needs (the RAM an MCU must give TFLite Micro), None before load."""
        return self._info.get("arena_bytes")

    def _infer(self, x: np.ndarray) -> np.ndarray:
        it = self.interpreter
        ys = []
        for i in range(0, len(x), self.graph_batch):
            with captured_stderr() as log:
                try:
                    it.set_input(np.ascontiguousarray(x[i : i + self.graph_batch]), 0)
                    it.invoke()
                    err = None
                except RuntimeError as e:
                    err = e
            if err is not None:
                raise ArtifactError(explain_tflm_failure(self.path, log[0], err)) from None
            ys.append(np.array(it.get_output(0)))
        y = np.concatenate(ys)
        if np.issubdtype(y.dtype, np.integer) and self._out_scale:  # integer probability map -> probabilities
            y = (y.astype(np.float32) - self._out_zero) * self._out_scale
        return y

    def info(self) -> dict:
        d = super().info()
        d["threads"] = 1  # TFLite Micro has no thread pool, whatever was asked
        return d
