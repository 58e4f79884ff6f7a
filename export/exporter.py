"""The exporter interface: what every ``export_<target>`` is given, what it must do, and the steps they share.

An exporter is the function ``export_<name>(job: ExportJob) -> None`` in ``export/<name>.py`` (named by its row in
:data:`.targets.TARGETS`). :func:`.api.export` has already, once for every target:

- validated the target, the precision (a :class:`~.targets.Precision` the target lists), the options and the graph;
- loaded the weights strictly (``job.net``, eval mode) and checked the output folder and its manifest;
- resolved the calibration set: ``job.calib_images`` is set exactly when ``job.precision.calibrated``;
- built the metadata record (``job.meta``: the contract, provenance, tool versions).

The exporter then converts (and quantizes) ``job.net`` as ``job.graph`` says, adds its format's facts to
``job.meta`` (``graph``, ``quantization``, ...), embeds the record in the artifact, runs the finished bytes once on
its runtime and judges the output with :func:`check_probabilities`, and writes ``job.path`` atomically
(``atomic_write_bytes``; a folder with ``atomic_replace_folder``), so a file on disk always loads and answers.
For an int8 precision of a target with ``blame``, it hands its quantizer and runner to :func:`rank_int8_blocks`
when ``job.blame`` is set, before embedding the metadata. It raises :class:`ExportError` when the converter made
something wrong and :class:`ExportUnavailable` when it cannot run here; nothing is written then.

Afterwards :func:`.api.export` writes the blame sidecar (``job.blame_record``) and the manifest entry.

Why an exporter runs its own bytes instead of a ``runtimes.Runner``: the check happens before anything exists on
disk, and ``export/`` sits below ``runtimes/`` (data flows model -> calibration -> export -> runtimes); the judgement
of the output is this module's, shared by all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .targets import Precision
from .wrappers import IOSpec


class ExportUnavailable(ValueError):
    """This target or precision cannot be built here (missing package, or needs another OS); says why."""


class ExportError(RuntimeError):
    """A converter produced something that fails the exporter's own checks (never written to disk)."""


@dataclass
class ExportJob:
    """Everything an exporter is given (see the module docstring for what is already checked)."""

    net: object  # model.ege_unet.EGEUNet, eval mode
    path: Path  # where the artifact goes (its folder exists and is writable)
    precision: Precision
    spec: IOSpec  # the artifact's I/O: layout, baked preprocessing, batch
    meta: dict  # the metadata record; the exporter completes it and embeds it
    calib_images: np.ndarray | None = None  # uint8 NHWC calibration images, set iff precision.calibrated
    graph: str = "fast"  # which module to convert (targets.GRAPHS; tflite adds its own "int8")
    blame: object | None = None  # a calibration.blame.BlameSet to rank the int8 blocks on, or None
    log: Callable[[str], None] | None = None
    blame_record: dict | None = None  # set by rank_int8_blocks; written beside the artifact by api.export

    def say(self, message: str) -> None:
        if self.log:
            self.log(message)


def check_probabilities(y: np.ndarray, spec: IOSpec, what: str) -> None:
    """The smoke check's judgement, for every target: the example's output is a finite probability map of the
    declared shape (a dynamic batch axis answers 1)."""
    want = [d if isinstance(d, int) else 1 for d in spec.output_shape]
    shaped = list(y.shape) == want
    if not shaped or not np.isfinite(y).all() or y.min() < 0 or y.max() > 1:
        values = f" in [{np.nanmin(y):.3g}, {np.nanmax(y):.3g}]" if shaped else ""
        raise ExportError(f"{what} returns {y.dtype} {list(y.shape)}{values}"
                          f"{' with nan/inf' if shaped and not np.isfinite(y).all() else ''}, expected probabilities "
                          f"shaped {want}")


def rank_int8_blocks(job: ExportJob, float_model, quantize_only: Callable[[str], object],
                     run: Callable[[object, np.ndarray], np.ndarray], recipe, **extra) -> None:
    """The int8 blame of ``recipe`` (calibration/blame.py), the same for every target: quantize one block at a time
    (``quantize_only(block)``), run it on the blame set (``run(model, fed_inputs)`` -> probabilities) against the
    float model, store the ranking in ``job.meta`` and ``job.blame_record``."""
    from egeunet_deploy.calibration import blame as bl

    data = job.blame
    inputs = job.spec.feed(data.images)
    float_probs = run(float_model, inputs)
    blocks = data.blocks_for(job.spec.baked)
    rows = bl.rank_blocks(blocks, quantize_only, lambda m: run(m, inputs), float_probs, data,
                          quantized=[b for b in blocks if b not in recipe.float_blocks],
                          progress=lambda b: job.say(f"int8 blame: quantizing only {b}"))
    job.blame_record = bl.blame_record(rows, data, recipe.describe(), bl.pooled_dice(float_probs, data.masks), **extra)
    job.meta.update(job.blame_record)
