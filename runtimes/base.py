"""One interface for every runtime: load an artifact, run contract images, say what actually ran.

mmdeploy's wrapper/manager split, reduced to one small class per backend: a :class:`Runner` subclass declares the
package it needs (availability is checked with ``importlib.util.find_spec``, never by importing), loads one
artifact, and turns a batch of uint8 NHWC contract images (``model.contract`` step 2) into lesion probabilities
``(N, H, W) float32``. Everything an artifact expects is read from its own metadata (:class:`ArtifactSpec`): the
layout, the input dtype and whether the preprocessing is baked into the graph. The runner then checks the graph's
real input against that record, so an artifact with the wrong layout, or one exported for another preprocessing
contract, is refused with a message instead of silently producing garbage.
"""

from __future__ import annotations

import importlib.util
import platform
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import metadata as _pkg
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from egeunet_deploy.export.targets import TARGETS, target_for_suffix
from egeunet_deploy.model.contract import CONTRACT, INPUT_HW, minmax_normalize

LAYOUTS = ("NCHW", "NHWC")
INPUT_DTYPES = ("uint8", "float32")
DEVICES = ("auto", "cpu", "cuda", "gpu", "android")
"""Every device name the API and the CLI take: ``auto`` (CUDA where present, else CPU, and says which), this host's
``cpu`` or ``cuda``, ``gpu`` (a runtime's GPU delegate: LiteRT), ``android`` (a phone over adb, which ``egeunet
bench`` drives with TFLite's benchmark_model, runtimes/android.py: no Runner). Ethos-U NPUs are Vela's
configurations (runtimes/vela.py), estimates only."""


class RuntimeUnavailable(ValueError):
    """The backend (package, platform, device or delegate) cannot run here; the message says why."""


class ArtifactError(ValueError):
    """An artifact the runtimes refuse: unreadable metadata, another preprocessing contract, a layout or dtype
    that does not match its own graph."""


@dataclass(frozen=True)
class ArtifactSpec:
    """What an artifact expects and returns, taken from its embedded metadata (``export.metadata``)."""

    path: Path
    format: str
    precision: str
    input_name: str
    input_shape: tuple
    input_dtype: str
    layout: str
    output_name: str
    output_shape: tuple
    output_layout: str
    preprocessing_in_graph: bool
    weights_sha256: str | None
    metadata: dict = field(repr=False, compare=False)

    @property
    def hw(self) -> tuple[int, int]:
        """Spatial size the graph takes (from the metadata shape, the contract's when unspecified)."""
        s = self.input_shape
        if len(s) == 4:
            h, w = (s[2], s[3]) if self.layout == "NCHW" else (s[1], s[2])
            if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
                return h, w
        return INPUT_HW


def read_spec(path: Path | str) -> ArtifactSpec:
    """Read and validate an artifact's metadata; refuse another contract, unknown layouts or dtypes."""
    from egeunet_deploy.export.metadata import MetadataError, NotAModelError, read_metadata

    path = Path(path)
    try:
        meta = read_metadata(path)
    except NotAModelError as e:  # a damaged file: the hint below about other exporters would mislead
        raise ArtifactError(str(e)) from None
    except MetadataError as e:
        raise ArtifactError(f"{e}; only artifacts exported by egeunet-deploy carry the contract a runtime "
                            f"needs") from None
    want = CONTRACT.fingerprint()
    got = meta.get("contract_sha256")
    if got != want:
        raise ArtifactError(f"{path}: exported for another preprocessing contract (contract_sha256 {str(got)[:12]}..., "
                            f"this toolkit's is {want[:12]}...); re-export it with this version of egeunet-deploy")
    try:
        inp, out = meta["input"], meta["output"]
        spec = ArtifactSpec(
            path=path, format=str(meta["format"]), precision=str(meta["precision"]),
            input_name=str(inp["name"]), input_shape=tuple(inp["shape"]), input_dtype=str(inp["dtype"]),
            layout=str(inp["layout"]), output_name=str(out["name"]), output_shape=tuple(out["shape"]),
            output_layout=str(out.get("layout", inp["layout"])),
            preprocessing_in_graph=bool(meta["preprocessing_in_graph"]),
            weights_sha256=meta.get("weights_sha256"), metadata=meta)
    except (KeyError, TypeError) as e:
        raise ArtifactError(f"{path}: metadata lacks field {e} (input/output name, shape, dtype, layout)") from None
    if spec.layout not in LAYOUTS or spec.output_layout not in LAYOUTS:
        raise ArtifactError(f"{path}: metadata layout {spec.layout!r}/{spec.output_layout!r}; known: {LAYOUTS}")
    if spec.input_dtype not in INPUT_DTYPES:
        raise ArtifactError(f"{path}: metadata input dtype {spec.input_dtype!r}; known: {INPUT_DTYPES}")
    return spec


def check_graph_input(spec: ArtifactSpec, shape: tuple | list, dtype: str, what: str) -> None:
    """Compare the graph's real input (shape with None/strings for dynamic dims, numpy dtype name) with the
    metadata: the channel axis must sit where the metadata's layout says, and the dtype must agree."""
    shape = tuple(shape)
    problems = []
    if len(shape) != 4:
        problems.append(f"rank {len(shape)} instead of 4")
    else:
        channel_axis = 1 if spec.layout == "NCHW" else 3
        if shape[channel_axis] != 3:
            problems.append(f"{spec.layout} metadata puts the 3 colour channels on axis {channel_axis}, "
                            f"the graph has {shape[channel_axis]} there")
        h, w = spec.hw
        spatial = (shape[2], shape[3]) if spec.layout == "NCHW" else (shape[1], shape[2])
        if all(isinstance(d, int) and d > 0 for d in spatial) and tuple(spatial) != (h, w):
            problems.append(f"spatial size {spatial} instead of {(h, w)}")
    if dtype != spec.input_dtype:
        problems.append(f"dtype {dtype} instead of the metadata's {spec.input_dtype}")
    if problems:
        raise ArtifactError(f"{spec.path}: {what} input {list(shape)} ({dtype}) contradicts its metadata "
                            f"({spec.layout}, {spec.input_dtype}): " + "; ".join(problems))


def prepare_input(images: np.ndarray, spec: ArtifactSpec) -> np.ndarray:
    """uint8 NHWC contract images -> what this artifact's graph takes (dtype, layout, preprocessing)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images shaped (N, H, W, 3), got {images.dtype} {images.shape}")
    if tuple(images.shape[1:3]) != spec.hw:
        raise ValueError(f"images are {images.shape[1]}x{images.shape[2]}, {spec.path.name} takes {spec.hw} "
                         f"(resize with model.contract.resize_rgb)")
    if spec.preprocessing_in_graph:
        x = images if spec.input_dtype == "uint8" else images.astype(np.float32)
    else:  # --raw artifacts: the per-image min-max of the contract, computed by its one definition
        x = minmax_normalize(torch.from_numpy(images)).numpy()
    if spec.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.dtype(spec.input_dtype))


def to_probabilities(y: np.ndarray, spec: ArtifactSpec, n: int) -> np.ndarray:
    """Graph output in the metadata's layout -> (N, H, W) float32 probabilities."""
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 4:
        axis = 1 if spec.output_layout == "NCHW" else 3
        if y.shape[axis] != 1:
            raise ArtifactError(f"{spec.path}: output {y.shape} has {y.shape[axis]} channels on the "
                                f"{spec.output_layout} channel axis, expected 1")
        y = y.squeeze(axis)
    if y.shape != (n, *spec.hw):
        raise ArtifactError(f"{spec.path}: output shape {y.shape}, expected {(n, *spec.hw)}")
    return y


class Runner(ABC):
    """Runs one artifact. Subclasses set the class attributes and implement ``_load`` and ``_infer``."""

    backend: ClassVar[str]  # registry name, e.g. "onnxruntime"
    module: ClassVar[str]  # import name checked with find_spec
    distribution: ClassVar[str]  # pip distribution whose version is reported
    formats: ClassVar[tuple[str, ...]] = ()  # export targets (export.targets.TARGETS) whose artifacts it loads
    weights_suffixes: ClassVar[tuple[str, ...]] = ()  # PyTorch weights files (the reference runner only)
    suffixes: ClassVar[tuple[str, ...]] = ()  # what it opens: set by register_runner from formats' rows
    default_batch: ClassVar[int] = 16  # images per call when the graph's batch is dynamic

    def __init__(self, threads: int | None = None, device: str = "auto", **options) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if device not in DEVICES:
            raise ValueError(f"unknown device {device!r}; known: {', '.join(DEVICES)}")
        if device == "android":
            raise ValueError("android runs through `egeunet bench --device android` (adb and TFLite's "
                             "benchmark_model), not a host runner")
        self.threads, self.device, self.options = threads, device, options
        self.spec: ArtifactSpec | None = None
        self.path: Path | None = None
        self.graph_batch: int | None = None  # batch size fixed in the loaded graph; None = dynamic
        self._info: dict = {}

    # --- availability (cheap: no import of the backend) ---------------------------------------------------------
    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        if importlib.util.find_spec(cls.module) is None:
            return False, f"python package '{cls.distribution}' is not installed (pip install {cls.distribution})"
        return cls._platform_check()

    @classmethod
    def _platform_check(cls) -> tuple[bool, str]:
        return True, "ok"

    @classmethod
    def version(cls) -> str | None:
        try:
            return _pkg.version(cls.distribution)
        except _pkg.PackageNotFoundError:
            return None

    @classmethod
    def accelerators(cls) -> dict[str, tuple[bool, str]]:
        """Non-CPU paths this backend knows (name -> (present, why)), for ``egeunet doctor``."""
        return {}

    # --- life cycle ------------------------------------------------------------------------------------------
    def load(self, path: Path | str) -> Runner:
        ok, reason = self.is_available()
        if not ok:
            raise RuntimeUnavailable(f"{self.backend}: {reason}")
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact not found: {path}")
        self.path = path
        self._load(path)
        return self

    @abstractmethod
    def _load(self, path: Path) -> None:
        """Read metadata into ``self.spec`` (artifacts), build the session, fill ``self._info``."""

    @abstractmethod
    def _infer(self, x: np.ndarray) -> np.ndarray:
        """Run one prepared batch; return the raw graph output."""

    def batch_size(self) -> int:
        return self.graph_batch or self.default_batch

    def run(self, images: np.ndarray, progress: bool = False, desc: str | None = None) -> np.ndarray:
        """uint8 (N, H, W, 3) contract images -> (N, H, W) float32 probabilities, in batches the graph allows."""
        if self.path is None:
            raise RuntimeError(f"{type(self).__name__}.run() before load()")
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        n, step = len(images), self.batch_size()
        out = np.empty((n, *images.shape[1:3]), dtype=np.float32)
        starts = range(0, n, step)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc=desc or self.path.name, unit="batch", leave=False,
                          total=-(-n // step))
        for i in starts:
            out[i : i + step] = self._run_batch(images[i : i + step])
        return out

    def _run_batch(self, images: np.ndarray) -> np.ndarray:
        x = prepare_input(images, self.spec)
        n, fixed = len(x), self.graph_batch
        if fixed is not None and n != fixed:  # pad a short last batch for fixed-batch graphs
            x = np.concatenate([x, np.repeat(x[-1:], fixed - n, axis=0)])
        return to_probabilities(self._infer(x), self.spec, len(x))[:n]

    def info(self) -> dict:
        """What actually ran: backend, version, device, provider/delegate, threads, and the artifact's I/O."""
        d = {"backend": self.backend, "version": self.version(), "threads": self.threads,
             "requested_device": self.device, **self._info}
        if self.spec is not None:
            d.update({"format": self.spec.format, "precision": self.spec.precision, "layout": self.spec.layout,
                      "input_dtype": self.spec.input_dtype, "preprocessing_in_graph": self.spec.preprocessing_in_graph})
        return d

    session_attrs: ClassVar[tuple[str, ...]] = ()  # attributes holding native sessions, dropped by close()

    def close(self) -> None:
        """Release the session (runners hold native memory; bench loads many)."""
        for name in self.session_attrs:
            setattr(self, name, None)


# --- registry ---------------------------------------------------------------------------------------------------

RUNNERS: dict[str, type[Runner]] = {}


def register_runner(cls: type[Runner]) -> type[Runner]:
    """Add a runner; the suffixes it opens come from its formats' rows in the target table (one place)."""
    if cls.backend in RUNNERS:
        raise ValueError(f"runner {cls.backend!r} registered twice")
    cls.suffixes = (*(s for f in cls.formats for s in TARGETS[f].suffixes), *cls.weights_suffixes)
    RUNNERS[cls.backend] = cls
    return cls


def artifact_kind(path: Path | str) -> str:
    """Lower-case suffix that picks a runner (``.mlpackage`` folders included)."""
    return Path(path).suffix.lower()


def runner_class_for(path: Path | str, backend: str | None = None) -> type[Runner]:
    """The runner for an artifact: the one named by ``backend`` (``--runtime``), else the one its target's row names
    (PyTorch weights: the reference runner)."""
    kind = artifact_kind(path)
    if backend is not None:
        if backend not in RUNNERS:
            raise ValueError(f"unknown runtime {backend!r}; known: {', '.join(sorted(RUNNERS))}")
        cls = RUNNERS[backend]
        if kind not in cls.suffixes:
            raise ValueError(f"{path}: runtime {backend!r} loads {', '.join(cls.suffixes)} files, not '{kind}'")
        return cls
    target = target_for_suffix(kind)
    if target is not None and target.runner in RUNNERS:
        return RUNNERS[target.runner]
    for cls in RUNNERS.values():
        if kind in cls.weights_suffixes:
            return cls
    known = sorted({s for cls in RUNNERS.values() for s in cls.suffixes})
    raise ValueError(f"{path}: no runtime for '{kind}' files (known: {', '.join(known)})")


def runner_for(path: Path | str, threads: int | None = None, device: str = "auto", **options) -> Runner:
    """A loaded runner for an artifact (or a PyTorch weights file), chosen by suffix."""
    return runner_class_for(path)(threads=threads, device=device, **options).load(path)


def check_output_path(path: Path, option: str, folder: bool = False) -> None:
    """Refuse an output path that cannot be written (a folder where a file goes, a file where a folder goes, a file
    among its parents) before minutes of work, instead of failing at the final write."""
    if path.exists() and path.is_dir() != folder:
        raise ValueError(f"{option} {path}: a {'file' if folder else 'folder'} is in the way; a "
                         f"{'folder' if folder else 'file'} is needed there")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {path}: {parent} is a file, not a folder")
            break


CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def host_info() -> dict:
    """Where the numbers were measured (compare latencies only within one host and one run)."""
    import os

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":  # after the first processor's model name: that one is enough
                flags = set(value.split())
                break
    except OSError:
        pass
    return {"system": platform.system(), "machine": platform.machine(), "cpu": cpu,
            # the vector units oneDNN picks kernels by: speed-ups measured on one set do not carry to another
            "cpu_features": [f for f in CPU_FEATURES if f in flags],
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}
