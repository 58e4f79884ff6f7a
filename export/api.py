"""The two entry points the CLI, the tests and the runtimes call: :func:`export` and :func:`export_all`.

The format table is :mod:`.targets` (one :class:`Target` row per format); the exporter interface is
:mod:`.exporter` (each target module's ``export_<target>(job)``). :func:`export` validates everything first
(unknown names get a close-match hint, an option a target does not support is refused instead of silently
ignored), loads the weights strictly, resolves the calibration set for int8, builds the metadata record once and
lets the target's exporter write the artifact atomically. :func:`export_all` walks the table and keeps going when
one artifact fails: a failure is a row, not a crash.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from egeunet_deploy.model.checkpoint import load_model

from .exporter import ExportJob, ExportUnavailable
from .metadata import build_metadata, read_manifest, update_manifest
from .targets import CALIBRATED, TARGETS, Precision, Target, get_target
from .wrappers import INPUT_NAME, OUTPUT_NAME, IOSpec


@dataclass
class ExportResult:
    """One row of :func:`export_all`'s table."""

    target: str
    precision: str
    status: str  # "ok" | "failed" | "skipped"
    path: Path | None = None
    size_bytes: int | None = None
    seconds: float | None = None
    error: str | None = None


def export_formats() -> list[dict]:
    """The format table as rows (what ``egeunet export --list`` prints and the tests parametrise over)."""
    rows = []
    for t in TARGETS.values():
        ok, reason = t.is_available()
        rows.append({"target": t.name, "format": t.title, "suffix": t.suffix, "precisions": list(t.precisions),
                     "options": sorted(t.options), "layout": t.layout, "runner": t.runner, "extra": t.extra,
                     "int8_recipe": t.quantizer or f"export/{t.name}.py", "available": ok,
                     "reason": reason if not ok else "",
                     "os_only": {p: f"{v[0]}: {v[1]}" for p, v in t.os_only.items()}})
    return rows


def check_precision(precision: str | Precision, target: Target | None = None) -> Precision:
    """A precision name as the :class:`Precision` it names, and one the target exports (the edge check)."""
    precision = Precision.parse(precision)
    if target is not None and precision not in target.precisions:
        extra = " (weight-only int8 is 'int8w' for Core ML)" if precision is Precision.INT8W else ""
        raise ValueError(f"{target.name} does not export precision '{precision}'; it exports "
                         f"{', '.join(target.precisions)}{extra}")
    return precision


def validate_args(target: str, precision: str, raw: bool = False, nhwc: bool = False,
                  dynamic_batch: bool = False) -> Target:
    """Refuse unknown names and options the target cannot honour, naming what is valid (no silent coercion)."""
    t = get_target(target)
    check_precision(precision, t)
    asked = {"raw": raw, "nhwc": nhwc, "dynamic_batch": dynamic_batch}
    bad = [k for k, v in asked.items() if v and k not in t.options]
    if bad:
        flags = ", ".join("--" + b.replace("_", "-") for b in bad)
        raise ValueError(f"{t.name} export does not support {flags} (supported: "
                         f"{', '.join('--' + o.replace('_', '-') for o in sorted(t.options)) or 'none'})")
    return t


def io_spec(t: Target, raw: bool, nhwc: bool, dynamic_batch: bool) -> IOSpec:
    """Deployment I/O in the target's layout; ``--raw`` is the bare network, NCHW unless ``--nhwc``."""
    layout = "NHWC" if nhwc or (not raw and t.layout == "NHWC") else "NCHW"
    return IOSpec(layout=layout, baked=not raw, dynamic_batch=dynamic_batch)


def artifact_name(t: Target, precision: str, spec: IOSpec) -> str:
    """``egeunet_<precision>[_raw][_nhwc|_nchw][_dynamic]<suffix>``: the default artifact has the short name."""
    name = f"egeunet_{precision}"
    if not spec.baked:
        name += "_raw"
    default_layout = t.layout if spec.baked else "NCHW"
    if spec.layout != default_layout:
        name += f"_{spec.layout.lower()}"
    if spec.dynamic_batch:
        name += "_dynamic"
    return name + t.suffix


def ensure_writable(out_dir: Path | str) -> Path:
    """Create ``out_dir`` if needed and prove a file can be written there, with an error that names it."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(f"output folder {out_dir} cannot be created: a file is in the way") from None
    except PermissionError:
        raise PermissionError(f"output folder {out_dir} cannot be created: permission denied") from None
    if not out_dir.is_dir():
        raise NotADirectoryError(f"output folder {out_dir} is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as e:
        raise PermissionError(f"output folder {out_dir} is not writable ({e.strerror or e})") from None
    return out_dir


def resolve_calibration(calib: Path | str | None, out_dir: Path, log: Callable[[str], None] | None) -> Path:
    """The calibration set to use: ``calib`` as given, or the bundled-sample fallback built into ``out_dir``."""
    if calib is not None:
        return Path(calib)
    from egeunet_deploy.calibration import bundled_calibration_set

    path = bundled_calibration_set(out_dir)
    if log:
        log(f"int8: no --calib given, calibrating on the bundled sample (64 ISIC 2017 train images): {path}")
    return path


def export(target: str, precision: str | Precision = Precision.FP32, *, weights=None, out_dir: Path,
           calib: Path | None = None, raw: bool = False, nhwc: bool = False, dynamic_batch: bool = False,
           blame: bool = False, blame_data: Path | None = None, blame_split: str = "val", graph: str | None = None,
           log: Callable[[str], None] | None = print) -> Path:
    """Export one artifact and return its path. Every problem a user can fix raises a ValueError/OSError subclass
    that says what and where; a converter failure raises without leaving a file behind. The checks every target
    shares happen here, once; the target's exporter gets an :class:`~.exporter.ExportJob` (see export/exporter.py).

    ``blame`` (int8 of a target whose row has ``blame``: ONNX, TFLite): also rank the network's blocks by the Dice
    quantizing each one alone costs, on ``blame_data`` [``blame_split``] (default: the bundled sample's 32 test
    pairs), and store the ranking in the artifact's metadata (``int8_blame``) and beside it
    (``<artifact>.blame.json``). Off by default here (it re-quantizes once per block: ~1 min for TFLite, ~2 min for
    ONNX on this machine); ``egeunet export`` turns it on for int8 unless ``--no-blame``. ``graph`` (default: the
    target's first) picks the module converted, from the target's ``graphs``: ``deploy`` is the plain DeployEGEUNet
    instead of the rewritten network (float only; the benchmark's baseline)."""
    t = validate_args(target, precision, raw, nhwc, dynamic_batch)
    precision = Precision.parse(precision)
    graph = graph or t.graphs[0]
    if graph not in t.graphs:
        raise ValueError(f"{t.name} converts the graphs {', '.join(t.graphs)}; not {graph!r}")
    if precision is not Precision.FP32 and precision is not Precision.FP16 and graph != t.graphs[0]:
        raise ValueError(f"{precision} quantizes the {t.graphs[0]!r} graph (its recipe addresses that graph's "
                         f"blocks); graph={graph!r} is for float artifacts")
    ok, reason = t.precision_available(precision)
    if not ok:
        raise ExportUnavailable(f"{t.name} {precision}: {reason}")
    net, ckpt = load_model(default_weights(precision, weights))  # before --out: bad weights leave no empty folder
    out_dir = ensure_writable(out_dir)
    read_manifest(out_dir)  # a damaged manifest fails now, not after the conversion has written the artifact
    spec = io_spec(t, raw, nhwc, dynamic_batch)

    calib_images = calib_record = None
    if calib is not None and not precision.calibrated and log:
        log(f"note: --calib is used by {', '.join(CALIBRATED)} only; {precision} ignores it")
    if precision.calibrated:
        from egeunet_deploy.calibration import calibration_sha256, load_calibration_set

        calib_path = resolve_calibration(calib, out_dir, log)
        calib_images, cman = load_calibration_set(calib_path)
        calib_record = {"file": calib_path.name, "sha256": calibration_sha256(calib_path),
                        "n_images": len(calib_images), "source": cman.get("source"),
                        "seed": cman.get("sampling", {}).get("seed"),
                        "images_sha256": cman.get("images_sha256")}

    name = artifact_name(t, precision, spec)
    meta = build_metadata(
        fmt=t.name, precision=precision, input_name=INPUT_NAME, input_shape=spec.input_shape,
        input_dtype=spec.input_dtype, input_layout=spec.layout, output_name=OUTPUT_NAME,
        output_shape=spec.output_shape, preprocessing_in_graph=spec.baked, weights_sha256=ckpt["sha256"],
        calibration_sha256=calib_record["sha256"] if calib_record else None, converter_packages=t.distributions,
        extra={"artifact": name, "weights_file": Path(ckpt["path"]).name, "model_cfg": _cfg(net),
               "gates_folded": True, "dynamic_batch": spec.dynamic_batch, "calibration": calib_record,
               "quantization": None, "distilled_from": ckpt.get("distilled_from")})
    ranked = blame and t.blame and precision is Precision.INT8
    job = ExportJob(net=net, path=out_dir / name, precision=precision, spec=spec, meta=meta,
                    calib_images=calib_images, graph=graph, log=log,
                    blame=_blame_set(blame_data, blame_split) if ranked else None)
    t.exporter()(job)
    if job.blame_record is not None:
        from egeunet_deploy.calibration.blame import write_sidecar

        write_sidecar(job.path, job.blame_record)
    update_manifest(out_dir, job.path, meta)
    return job.path


def default_weights(precision: str | Precision, weights=None):
    """``weights`` as given, else the shipped weights for the precision: the QAT fine-tune for ``int8-full`` when it
    is installed, the fp32 weights otherwise (None)."""
    if weights is not None or not Precision.parse(precision).qat_default:
        return weights
    from egeunet_deploy.model.bundled import QAT_WEIGHTS

    return QAT_WEIGHTS if QAT_WEIGHTS.is_file() else None


def _blame_set(data, split: str):
    """``data``: None (bundled sample test pairs), a dataset folder, or a ready BlameSet (tests, benchmarks)."""
    from egeunet_deploy.calibration.blame import BlameSet, default_blame_set, load_blame_set

    if isinstance(data, BlameSet):
        return data
    return default_blame_set() if data is None else load_blame_set(data, split)


def _cfg(net) -> dict:
    cfg = dict(net.cfg.__dict__)
    cfg["c_list"] = list(cfg["c_list"])
    return cfg


def plan(targets: Iterable[str] | None = None,
         precisions: Iterable[str] | None = None) -> list[tuple[Target, Precision]]:
    """Every (target, precision) pair to build: the table, filtered by the names given (each validated)."""
    ts = [get_target(n) for n in targets] if targets else list(TARGETS.values())
    ps = [check_precision(p) for p in precisions] if precisions else None
    pairs = [(t, p) for t in ts for p in t.precisions if ps is None or p in ps]
    if not pairs:
        raise ValueError(f"no artifact to build: {', '.join(t.name for t in ts)} cannot export "
                         f"{', '.join(ps or [])}")
    return pairs


def export_all(*, weights=None, out_dir: Path, calib: Path | None = None, targets=None, precisions=None,
               blame: bool = False, blame_data: Path | None = None, blame_split: str = "val",
               log: Callable[[str], None] | None = print) -> list[ExportResult]:
    """Build every target x precision this OS supports, isolating failures; prints the summary table via ``log``.

    Problems that would fail every row (bad weights, unwritable folder, unusable calibration set) are raised once
    up front instead of being repeated in every row."""
    pairs = plan(targets, precisions)
    load_model(weights)  # fail once, clearly, on bad weights (before creating --out)
    out_dir = ensure_writable(out_dir)
    read_manifest(out_dir)  # fail once, before any conversion, on a damaged manifest
    runnable = [(t, p) for t, p in pairs if t.precision_available(p)[0]]
    if any(p.calibrated for _, p in runnable):
        from egeunet_deploy.calibration import load_calibration_set

        calib = resolve_calibration(calib, out_dir, log)
        load_calibration_set(calib)  # refuse a bad set once, before any conversion
    results = []
    for t, p in pairs:
        ok, reason = t.precision_available(p)
        if not ok:
            results.append(ExportResult(t.name, p, "skipped", error=reason))
            _log(log, f"{t.name} {p}: skipped ({reason})")
            continue
        _log(log, f"{t.name} {p}: exporting ...")
        start = time.perf_counter()
        try:
            path = export(t.name, p, weights=weights, out_dir=out_dir, calib=calib if p.calibrated else None,
                          blame=blame, blame_data=blame_data, blame_split=blame_split, log=log)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # isolate: one converter's failure must not stop the others
            seconds = time.perf_counter() - start
            results.append(ExportResult(t.name, p, "failed", seconds=seconds, error=_one_line(e)))
            _log(log, f"{t.name} {p}: FAILED after {seconds:.1f}s: {_one_line(e)}")
            if os.environ.get("EGEUNET_EXPORT_TRACEBACK"):
                _log(log, traceback.format_exc())
            continue
        from .metadata import artifact_digest

        seconds = time.perf_counter() - start
        _, size = artifact_digest(path)
        results.append(ExportResult(t.name, p, "ok", path=path, size_bytes=size, seconds=seconds))
        _log(log, f"{t.name} {p}: {path.name} ({size / 1024:.1f} KB, {seconds:.1f}s)")
    _log(log, format_table(results, out_dir))
    return results


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip()


def _log(log: Callable[[str], None] | None, message: str) -> None:
    if log:
        log(message)


STATUS_MARK = {"ok": "✅", "failed": "❌", "skipped": "⏭️"}


def format_table(results: list[ExportResult], out_dir: Path | None = None) -> str:
    """The Ultralytics-like summary: one row per artifact, failures and skips with their reason."""
    head = ("target", "precision", "status", "size KB", "seconds", "artifact / reason")
    rows = [head]
    for r in results:
        rows.append((r.target, r.precision, f"{STATUS_MARK.get(r.status, '?')} {r.status}",
                     f"{r.size_bytes / 1024:.1f}" if r.size_bytes is not None else "-",
                     f"{r.seconds:.1f}" if r.seconds is not None else "-",
                     r.path.name if r.path is not None else (r.error or "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows]
    title = f"Export summary ({out_dir})" if out_dir is not None else "Export summary"
    return "\n".join([title, *lines])
