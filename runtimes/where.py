"""Where can one artifact run: a phone or desktop CPU, an Arm Ethos-U NPU, a microcontroller?

Each answer comes from running the real tool on the file, not from its name or precision:

- ``cpu``: the runtime the artifact's suffix picks loads it (for .tflite: LiteRT, and whether XNNPACK took the graph:
  its delegate partitions);
- ``npu``: Vela compiles it for the Ethos-U55-256 (:mod:`.vela`); the share of its ops on the NPU, what stays on the
  CPU and Vela's reasons; ``ms`` is Vela's estimate at the configuration's clock, not a measurement;
- ``mcu``: TensorFlow Lite Micro loads it and runs one bundled image with its reference kernels
  (:mod:`.tflm_runner`); the tensor-arena bytes it needs, or the reason it cannot (float ops, a kernel TFLite Micro
  lacks such as GELU).

``npu`` and ``mcu`` have the shape the report renders (``report.ACCELERATOR_KEYS``): ``{"runs": bool, "ms": float |
None, "note": str}`` plus the figures behind the note. Nothing here raises for an artifact that cannot run somewhere:
that is an answer ("runs": False, with the reason).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .base import ArtifactError, RuntimeUnavailable, artifact_kind, runner_class_for

NPU_CONFIG = "ethos-u55-256"


def _sample_image() -> np.ndarray:
    from egeunet_deploy.model.contract import resize_rgb
    from egeunet_deploy.model.imageio import read_rgb

    from .bench import default_image

    return resize_rgb(read_rgb(default_image()))[None]


def cpu_placement(path: Path) -> dict:
    """Does the default runtime for this file load it on the CPU, and (LiteRT) did XNNPACK take the graph?"""
    try:
        runner = runner_class_for(path)(threads=1, device="cpu").load(path)
    except (RuntimeUnavailable, ArtifactError, ValueError, FileNotFoundError) as e:
        return {"runs": False, "ms": None, "note": str(e), "reason": str(e)}
    info = runner.info()
    runner.close()
    parts = info.get("delegate_partitions")
    rec = {"runs": True, "ms": None, "runtime": info.get("backend"), "provider": info.get("provider"),
           "xnnpack": bool(parts) if info.get("backend") == "litert" else None, "delegate_partitions": parts,
           "reason": None}
    rec["note"] = f"{info.get('backend')}: {info.get('provider')}" + (
        f" ({parts} XNNPACK partition{'s' if parts != 1 else ''})" if parts else "")
    return rec


def npu_placement(path: Path, config: str = NPU_CONFIG) -> dict:
    """Vela's verdict for ``config``: the share of ops on the NPU, what the CPU keeps and why, memory, estimate."""
    from . import vela

    if artifact_kind(path) != ".tflite":
        why = f"Vela compiles .tflite files; this is '{artifact_kind(path)}'"
        return {"runs": False, "ms": None, "config": config, "note": why, "reason": why}
    try:
        est = vela.compile_model(path, config, strict=False)
    except (RuntimeUnavailable, ArtifactError, FileNotFoundError, ValueError) as e:
        return {"runs": False, "ms": None, "config": config, "note": str(e), "reason": str(e)}
    share = est["npu_share"] or 0.0
    clock = f"{est['clock_hz'] / 1e6:.0f} MHz" if est.get("clock_hz") else "its clock"
    runs = est["whole_network_on_npu"] and not est["float_ops_in_network"]
    figures = f"Vela, {config}: {100 * share:.1f}% of ops on the NPU ({est['ops_npu']}/{est['ops_total']})"
    if est["ops_npu"]:
        figures += (f", SRAM {est['sram_kib']:.0f} KiB, Flash {est['flash_kib']:.0f} KiB, "
                    f"{est['inference_ms']:.1f} ms at {clock} ({vela.ESTIMATE_LABEL}"
                    f"{'' if runs else ', NPU part only'})")
    if runs:
        kept = sorted(est["cpu_op_types"])
        reason = None
        note = figures + (f"; the CPU keeps only the input preprocessing and I/O ({', '.join(kept)})" if kept else "")
    else:
        top = sorted(est["cpu_reasons"].items(), key=lambda kv: -kv[1])[:3]
        reason = (f"{est['ops_cpu']} ops stay on the CPU, {est['cpu_ops_in_network']} of them past the "
                  f"preprocessing: " + "; ".join(f"{n} x {r}" for r, n in top))
        if est["float_ops_in_network"]:
            reason += f" (float ops: {est['float_ops_in_network']})"
        note = f"{figures}; {reason}"
    return {"runs": runs, "ms": est["inference_ms"] if runs else None, "note": note, "reason": reason, "config": config,
            "npu_share": share, "ops_npu": est["ops_npu"], "ops_total": est["ops_total"],
            "sram_kib": est["sram_kib"], "flash_kib": est["flash_kib"], "macs": est["macs"],
            "cpu_op_types": est["cpu_op_types"], "estimate": vela.ESTIMATE_LABEL}


def _tflm_own_words(path: Path) -> str | None:
    """What TFLite Micro itself says when asked to load the file (e.g. the kernel it lacks), None if it loads."""
    from .tflm_runner import PROBE_ARENA_BYTES, captured_stderr, explain_tflm_failure

    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        return None
    with captured_stderr() as log:
        try:
            runtime.Interpreter.from_file(str(path), arena_size=PROBE_ARENA_BYTES)
            return None
        except (RuntimeError, ValueError) as e:
            err = e
    return explain_tflm_failure(path, log[0], err)


def mcu_placement(path: Path, image: np.ndarray | None = None) -> dict:
    """TFLite Micro loads the file and runs one image: arena bytes and host seconds, or why it cannot."""
    from .integer_graph import FloatOpsError
    from .tflm_runner import TFLMRunner

    if artifact_kind(path) != ".tflite":
        why = f"TFLite Micro runs .tflite files; this is '{artifact_kind(path)}'"
        return {"runs": False, "ms": None, "note": why, "reason": why}
    runner = TFLMRunner(threads=1, device="cpu")
    try:
        runner.load(path)
        t0 = time.perf_counter()
        runner.run(image if image is not None else _sample_image())
        seconds = time.perf_counter() - t0
    except FloatOpsError as e:
        own = _tflm_own_words(path)
        reason = str(e) + (f". Besides, {own.split(': ', 1)[-1]}" if own else "")
        return {"runs": False, "ms": None, "note": reason, "reason": reason}
    except (RuntimeUnavailable, ArtifactError, ValueError) as e:
        return {"runs": False, "ms": None, "note": str(e), "reason": str(e)}
    finally:
        runner.close()
    arena = runner.arena_bytes
    note = (f"TFLite Micro (reference kernels) runs it: tensor arena {arena:,} bytes ({arena / 1024:.0f} KiB)"
            if arena else "TFLite Micro (reference kernels) runs it (arena size not reported)")
    note += f"; {seconds:.2f} s per image on this host's CPU, not an MCU's latency"
    return {"runs": True, "ms": None, "note": note, "reason": None, "arena_bytes": arena,
            "host_s_per_image": seconds}


def where(path: Path | str, image: np.ndarray | None = None) -> dict:
    """``{"cpu": ..., "npu": ..., "mcu": ...}`` for one artifact."""
    path = Path(path)
    return {"artifact": str(path), "cpu": cpu_placement(path), "npu": npu_placement(path),
            "mcu": mcu_placement(path, image)}


def placement_keys(path: Path | str) -> dict:
    """The ``npu`` and ``mcu`` keys of a drift/deploy row (what the report renders); never raises."""
    path = Path(path)
    out = {}
    for key, fn in (("npu", npu_placement), ("mcu", mcu_placement)):
        try:
            out[key] = fn(path)
        except Exception as e:  # a report row must not be lost to an unexpected tool failure; say what happened
            out[key] = {"runs": False, "ms": None, "note": f"not determined: {type(e).__name__}: {e}",
                        "reason": str(e)}
    return out
