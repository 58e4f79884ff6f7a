"""Every export target and every precision, declared once.

A target is one :class:`Target` row (Ultralytics' format table): its artifact suffix, the pip extra that installs
it, its precisions, its exporter (``export/<name>.py``, function ``export_<name>``), the runner that runs its
artifacts by default (``runtimes/<runner>_runner.py``) and the module holding its int8 recipe. Export, drift, bench,
deploy, doctor, the metadata readers and the tests read this table; no other module spells a suffix. Adding a target
is one row here, its exporter module, its runner module, its tests and its extra in ``pyproject.toml``.

A precision is a :class:`Precision`, parsed once where a name enters (the CLI, :func:`Precision.parse`); past that
edge the code compares members, never strings. It is a ``StrEnum``: JSON metadata, file names and messages get the
plain name (``int8-full``).

Only the standard library is imported here: the runtimes and the CLI read this table without loading a converter.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum


def close_match_hint(value: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(known), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


class Precision(StrEnum):
    """What an artifact computes in. The members' values are the names users type and files carry."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    INT8_FULL = "int8-full"
    INT8W = "int8w"

    @property
    def help(self) -> str:
        return _PRECISION_HELP[self]

    @property
    def calibrated(self) -> bool:
        """Needs the calibration set (activation ranges)."""
        return self in (Precision.INT8, Precision.INT8_FULL)

    @property
    def qat_default(self) -> bool:
        """Its default weights are the quantization-aware fine-tune (``model.bundled.QAT_WEIGHTS``)."""
        return self is Precision.INT8_FULL

    @classmethod
    def parse(cls, value: str | Precision) -> Precision:
        """The one place a precision name is checked: unknown names get the list and a close-match hint."""
        try:
            return cls(value)
        except ValueError:
            known = [p.value for p in cls]
            raise ValueError(f"unknown precision {value!r}; known: {', '.join(known)}"
                             f"{close_match_hint(str(value), known)}") from None


_PRECISION_HELP = {
    Precision.FP32: "float32 weights and compute (the reference)",
    Precision.FP16: "float16 weights (TFLite: dequantized at load on CPU; Core ML: float16 compute)",
    Precision.INT8: "int8 calibrated on the calibration set, sensitive ops kept float (phone CPUs)",
    Precision.INT8_FULL: "every op integer but the input's min-max stretch, int8 output (NPUs, TFLite Micro); "
                         "defaults to the QAT weights",
    Precision.INT8W: "int8 weights only, float compute (Core ML linear_quantize_weights)",
}

OPTIONS = ("raw", "nhwc", "dynamic_batch")
GRAPHS = ("fast", "deploy")
"""Which torch module a converter sees: the rewritten network (``export.rewrite``) or the plain DeployEGEUNet."""


@dataclass(frozen=True)
class Target:
    """One row of the format table."""

    name: str
    title: str
    suffix: str
    precisions: tuple[Precision, ...]
    runner: str  # backend name of the runner that runs its artifacts by default (runtimes/<runner>_runner.py)
    layout: str  # layout of the deployment (baked) I/O; ``--raw`` is NCHW unless ``--nhwc``
    packages: tuple[str, ...]  # import names, checked with find_spec (cheap, no import)
    distributions: tuple[str, ...]  # pip names: install hint and the tool versions in the metadata
    options: frozenset[str] = frozenset()
    graphs: tuple[str, ...] = ("fast",)  # modules the exporter can convert (first: the default)
    quantizer: str | None = None  # module with its int8 recipe (calibration/<t>_quant.py), None: in the exporter
    blame: bool = False  # its int8 artifacts carry the per-block blame ranking (calibration/blame.py)
    folder: bool = False  # the artifact is a folder (a Core ML package), not one file
    also_reads: tuple[str, ...] = ()  # older suffixes its runner still opens
    os_only: dict = field(default_factory=dict)  # precision -> (platform, why) where a precision needs one OS

    @property
    def extra(self) -> str:
        """``pip install 'egeunet-deploy[<extra>]'`` installs this target's converters and runtime."""
        return self.name

    @property
    def module(self) -> str:
        return f"{__package__}.{self.name}"

    @property
    def suffixes(self) -> tuple[str, ...]:
        return (self.suffix, *self.also_reads)

    def exporter(self) -> Callable:
        """``export_<name>(job: ExportJob) -> None`` from the target's module (imported now, not before)."""
        return getattr(importlib.import_module(self.module), f"export_{self.name}")

    def is_available(self) -> tuple[bool, str]:
        missing = [d for p, d in zip(self.packages, self.distributions, strict=True)
                   if importlib.util.find_spec(p) is None]
        if missing:
            return False, f"{self.title} export needs {', '.join(missing)} (pip install 'egeunet-deploy[{self.extra}]')"
        return True, "ok"

    def precision_available(self, precision: str | Precision) -> tuple[bool, str]:
        ok, reason = self.is_available()
        if not ok or precision not in self.os_only:
            return ok, reason
        return importlib.import_module(self.module).precision_available(Precision.parse(precision))


P = Precision
TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("onnx", "ONNX", ".onnx", (P.FP32, P.INT8), "onnxruntime", "NCHW",
           ("onnx", "onnxruntime", "onnxslim"), ("onnx", "onnxruntime", "onnxslim"), frozenset(OPTIONS),
           graphs=GRAPHS, quantizer="calibration.onnx_quant", blame=True),
    Target("tflite", "TFLite (LiteRT)", ".tflite", (P.FP32, P.FP16, P.INT8, P.INT8_FULL), "litert", "NHWC",
           ("litert_torch", "ai_edge_litert", "ai_edge_quantizer"),
           ("litert-torch", "ai-edge-litert", "ai-edge-quantizer"), frozenset({"raw", "nhwc"}),
           graphs=GRAPHS, quantizer="calibration.tflite_quant", blame=True),
    Target("coreml", "Core ML (mlprogram)", ".mlpackage", (P.FP32, P.FP16, P.INT8W, P.INT8), "coreml", "NHWC",
           ("coremltools",), ("coremltools",), frozenset({"raw", "nhwc"}), graphs=("deploy",),
           quantizer="calibration.coreml_quant",
           folder=True, also_reads=(".mlmodel",),
           os_only={P.INT8: ("darwin", "activation calibration runs the model: macOS only")}),
    Target("executorch", "ExecuTorch (XNNPACK)", ".pte", (P.FP32, P.INT8), "executorch", "NHWC",
           ("executorch",), ("executorch",), graphs=GRAPHS),
)}
del P

PRECISIONS = tuple(p.value for p in Precision)
CALIBRATED = tuple(p for p in Precision if p.calibrated)
FOLDER_SUFFIXES = tuple(s for t in TARGETS.values() if t.folder for s in t.suffixes)
"""Artifacts that are folders (a Core ML package); every other artifact is one file."""


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise ValueError(f"unknown export target {name!r}; known: {', '.join(TARGETS)}, all"
                         f"{close_match_hint(name, TARGETS)}")
    return TARGETS[name]


def target_for_suffix(suffix: str) -> Target | None:
    """The target whose artifacts carry ``suffix`` (``.onnx``, ``.mlmodel``, ...), None for anything else."""
    suffix = suffix.lower()
    return next((t for t in TARGETS.values() if suffix in t.suffixes), None)


def artifact_suffixes() -> tuple[str, ...]:
    return tuple(s for t in TARGETS.values() for s in t.suffixes)
