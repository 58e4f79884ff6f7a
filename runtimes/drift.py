"""``egeunet drift``: does each exported artifact still segment like the PyTorch model it came from?

Every artifact and the PyTorch reference (same weights, checked by sha256) run on the same decoded images; the
reference runs once and is reused for every artifact. Per artifact the report holds the paper's pooled mIoU/DSC
(``model.metrics.Confusion``, the one definition), their difference to the reference, per-image means with a 95%
bootstrap confidence interval of the paired difference, mask agreement with the reference (Dice, flipped pixels),
probability differences, drift by lesion size, the worst images as overlays, and pass/fail against tolerances that
are data (``tolerances.yaml``, overridable per format x precision). Any failure makes the command exit non-zero so
it can gate CI. Artifacts whose runtime cannot run here (Core ML off macOS) are listed as skipped, with the reason;
a damaged artifact is an error row and the others still run. The report folder is built beside ``--out`` and swapped
in whole at the end (:func:`write_drift_report`), so it never mixes two runs or holds half a report.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from egeunet_deploy.export.targets import Precision, artifact_suffixes, target_for_suffix
from egeunet_deploy.model.contract import binarize
from egeunet_deploy.model.metrics import SIZE_BINS, Confusion, dice, per_image_scores, size_strata

from .base import RUNNERS, ArtifactError, RuntimeUnavailable, check_output_path, host_info, runner_class_for
from .where import placement_keys

TOLERANCE_FIELDS = ("delta_dsc_abs_max", "delta_miou_abs_max", "agreement_dsc_min", "prob_abs_max")
N_WORST = 8
N_BOOT = 2000


# --- tolerances -------------------------------------------------------------------------------------------------


def default_tolerances() -> dict:
    return yaml.safe_load(resources.files("egeunet_deploy.runtimes").joinpath("tolerances.yaml").read_text())


def _validate_tolerances(tol: dict, source: str) -> None:
    if not isinstance(tol, dict):
        raise ValueError(f"{source}: must be a mapping with 'precision' and/or 'format' keys, got a "
                         f"{type(tol).__name__} ({repr(tol)[:60]})")
    if set(tol) - {"precision", "format"}:
        raise ValueError(f"{source}: top-level keys must be 'precision' and/or 'format', got "
                         f"{sorted(set(tol) - {'precision', 'format'})}")

    def check_limits(limits, where: str) -> None:
        if not isinstance(limits, dict):
            raise ValueError(f"{source}: {where} must map limit names to numbers")
        for k, v in limits.items():
            if k not in TOLERANCE_FIELDS:
                raise ValueError(f"{source}: unknown limit '{k}' at {where}; known: {', '.join(TOLERANCE_FIELDS)}")
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise ValueError(f"{source}: {where}.{k} must be a non-negative number or null, got {v!r}")

    for prec, limits in (tol.get("precision") or {}).items():
        check_limits(limits, f"precision.{prec}")
    for fmt, per in (tol.get("format") or {}).items():
        if not isinstance(per, dict):
            raise ValueError(f"{source}: format.{fmt} must map precisions to limits")
        for prec, limits in per.items():
            check_limits(limits, f"format.{fmt}.{prec}")


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def load_tolerances(path: Path | str | None = None) -> dict:
    """The packaged defaults, with a YAML/JSON override file merged over them key by key."""
    tol = default_tolerances()
    _validate_tolerances(tol, "tolerances.yaml")
    if path is None:
        return tol
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tolerance file not found: {path}")
    try:
        over = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML/JSON ({e})") from None
    if over is None:  # an empty file overrides nothing ([] or 0 do not pass as empty: they are refused below)
        over = {}
    _validate_tolerances(over, str(path))
    return _merge(tol, over)


def tolerance_for(tol: dict, fmt: str, precision: str) -> dict | None:
    """Limits for one format x precision: the precision defaults, then the format's overrides; None if neither."""
    base = (tol.get("precision") or {}).get(precision)
    over = ((tol.get("format") or {}).get(fmt) or {}).get(precision)
    if base is None and over is None:
        return None
    return {k: v for k, v in {**(base or {}), **(over or {})}.items() if v is not None}


def evaluate_checks(rec: dict, limits: dict) -> list[dict]:
    """One row per limit: the measured value, the limit, and whether it holds."""
    measured = {
        "delta_dsc_abs_max": abs(rec["delta"]["dsc"]),
        "delta_miou_abs_max": abs(rec["delta"]["miou"]),
        "agreement_dsc_min": rec["agreement"]["dsc"],
        "prob_abs_max": rec["prob_diff"]["max"],
    }
    checks = []
    for name, limit in limits.items():
        value = measured[name]
        ok = value >= limit if name.endswith("_min") else value <= limit
        checks.append({"name": name, "value": value, "limit": limit, "op": ">=" if name.endswith("_min") else "<=",
                       "passed": bool(ok)})
    return checks


# --- statistics -------------------------------------------------------------------------------------------------


def bootstrap_ci(diff: np.ndarray, n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of paired differences (images resampled with replacement)."""
    diff = np.asarray(diff, dtype=np.float64)
    if diff.size == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(n_boot, diff.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


@dataclass
class Scored:
    """Binary masks and scores of one model on one set (computed once for the reference, reused)."""

    probs: np.ndarray
    masks: np.ndarray
    pooled: dict
    iou: np.ndarray
    dsc: np.ndarray

    @classmethod
    def of(cls, probs: np.ndarray, gt: np.ndarray) -> Scored:
        masks = binarize(probs)
        conf = Confusion()
        conf.add(masks, gt)
        iou, dsc = per_image_scores(masks, gt)
        return cls(probs, masks, conf.summary(), iou, dsc)


def compare(art: Scored, ref: Scored, gt: np.ndarray, names: list[str], n_worst: int = N_WORST) -> dict:
    """Every drift statistic of one artifact against the reference (pure numpy; no runtime involved)."""
    n = len(gt)
    flips = (art.masks != ref.masks).reshape(n, -1)
    flipped_per_image = np.count_nonzero(flips, axis=1)
    agree_per_image = np.array([dice(a, r) for a, r in zip(art.masks, ref.masks, strict=True)])
    absdiff = np.abs(art.probs - ref.probs)
    rec = {
        "pooled": {"miou": art.pooled["miou"], "dsc": art.pooled["dsc"], "accuracy": art.pooled["accuracy"],
                   "sensitivity": art.pooled["sensitivity"], "specificity": art.pooled["specificity"]},
        "delta": {"miou": art.pooled["miou"] - ref.pooled["miou"], "dsc": art.pooled["dsc"] - ref.pooled["dsc"]},
        "per_image": {},
        "agreement": {"dsc": dice(art.masks, ref.masks), "flipped_fraction": float(flips.mean()),
                      "flipped_pixels": int(flipped_per_image.sum()),
                      "images_with_flips": int(np.count_nonzero(flipped_per_image)),
                      "min_image_dsc": float(agree_per_image.min())},
        "prob_diff": {"max": float(absdiff.max()), "mean": float(absdiff.mean()),
                      "p99": float(np.quantile(absdiff.reshape(-1)[:: max(1, absdiff.size // 2_000_000)], 0.99))},
    }
    for key, a, r in (("miou", art.iou, ref.iou), ("dsc", art.dsc, ref.dsc)):
        d = a - r
        lo, hi = bootstrap_ci(d)
        rec["per_image"][key] = float(a.mean())
        rec["per_image"][f"delta_{key}"] = {"mean": float(d.mean()), "ci95": [lo, hi]}
    strata = []
    for name, (lo, hi), idx in size_strata(gt):
        row = {"name": name, "area_fraction": [lo, hi], "n": int(idx.size)}
        if idx.size:
            ca, cr = Confusion(), Confusion()
            ca.add(art.masks[idx], gt[idx])
            cr.add(ref.masks[idx], gt[idx])
            row.update({"reference_dsc": cr.summary()["dsc"], "artifact_dsc": ca.summary()["dsc"],
                        "delta_dsc": ca.summary()["dsc"] - cr.summary()["dsc"],
                        "per_image_delta_dsc": float((art.dsc[idx] - ref.dsc[idx]).mean()),
                        "agreement_dsc": dice(art.masks[idx], ref.masks[idx]),
                        "flipped_fraction": float(flips[idx].mean())})
        strata.append(row)
    rec["strata"] = strata
    order = np.lexsort((agree_per_image, -flipped_per_image))[:n_worst]  # most flipped pixels first
    rec["worst"] = [{"index": int(i), "name": names[i], "flipped_pixels": int(flipped_per_image[i]),
                     "agreement_dsc": float(agree_per_image[i]), "reference_dsc": float(ref.dsc[i]),
                     "artifact_dsc": float(art.dsc[i])} for i in order]
    return rec


# --- running ----------------------------------------------------------------------------------------------------


def find_artifacts(path: Path | str) -> list[Path]:
    """Artifacts in a folder (or the one file given), sorted; PyTorch weights are the reference, not artifacts."""
    path = Path(path)
    suffixes = set(artifact_suffixes())
    if not path.exists():
        raise FileNotFoundError(f"artifacts not found: {path}")
    if path.suffix.lower() in suffixes:
        return [path]
    if not path.is_dir():
        raise ValueError(f"{path}: not an artifact ({', '.join(sorted(suffixes))}) or a folder of artifacts")
    found = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes and not p.name.startswith("."))
    if not found:
        raise ValueError(f"{path}: no artifacts in it (looked for {', '.join(sorted(suffixes))}); "
                         f"create them with `egeunet export --target all --out {path}`")
    return found


def _fmt_prec_guess(path: Path) -> tuple[str, str]:
    """Format/precision for an artifact whose metadata could not be read (for the report row only)."""
    target = target_for_suffix(path.suffix)
    stem = path.stem.lower()
    by_length = sorted(Precision, key=lambda p: -len(p))  # int8-full and int8w before int8
    prec = next((p.value for p in by_length if p in stem), "unknown")
    return (target.name if target else path.suffix.lstrip(".")), prec


def run_artifact(path: Path, images: np.ndarray, gt: np.ndarray, names: list[str], ref: Scored, ref_sha: str,
                 tol: dict, threads: int | None, device: str, progress: bool,
                 runtime: str | None = None) -> tuple[dict, Scored | None]:
    """Run and judge one artifact; runtime or artifact problems become a failed (or skipped) row, never a crash.
    ``runtime`` (``--runtime``) names the runner; artifacts of a kind it does not load are skipped rows."""
    fmt, prec = _fmt_prec_guess(path)
    rec: dict = {"file": str(path), "name": path.name, "format": fmt, "precision": prec, "status": None,
                 "passed": None, "reason": None}
    runner = None
    try:
        if runtime is not None and path.suffix.lower() not in RUNNERS[runtime].suffixes:
            raise RuntimeUnavailable(f"--runtime {runtime} loads {', '.join(RUNNERS[runtime].suffixes)} files only")
        runner = runner_class_for(path, runtime)(threads=threads, device=device)
        runner.load(path)
        spec = runner.spec
        rec.update({"format": spec.format, "precision": spec.precision, "runtime": runner.info()})
        distilled = (spec.metadata.get("distilled_from") or {}).get("sha256")  # QAT weights trained to match ref
        if spec.weights_sha256 and spec.weights_sha256 != ref_sha and distilled != ref_sha:
            raise ArtifactError(f"exported from other weights (sha256 {spec.weights_sha256[:12]}...) than the "
                                f"reference ({ref_sha[:12]}...); pass the same --weights to drift")
        t0 = time.perf_counter()
        probs = runner.run(images, progress=progress, desc=path.name)
        seconds = time.perf_counter() - t0
    except RuntimeUnavailable as e:
        if runner is not None and runner.spec is not None:  # metadata was read (and checked) before the skip
            rec.update({"format": runner.spec.format, "precision": runner.spec.precision})
        rec.update({"status": "skipped", "reason": str(e)})
        return rec, None
    except (ArtifactError, ValueError, FileNotFoundError) as e:
        rec.update({"status": "error", "passed": False, "reason": str(e)})
        return rec, None
    finally:
        if runner is not None:
            runner.close()
    art = Scored.of(probs, gt)
    rec.update(compare(art, ref, gt, names))
    if rec["precision"] == Precision.INT8:
        from egeunet_deploy.calibration.blame import BLAME_INFO_KEY, BLAME_KEY

        blame = read_blame(path)
        rec["int8_blame"] = blame.get(BLAME_KEY) if blame else None
        rec["int8_blame_info"] = blame.get(BLAME_INFO_KEY) if blame else None
    rec["seconds"] = seconds
    rec["images_per_s"] = len(images) / seconds if seconds > 0 else None
    limits = tolerance_for(tol, rec["format"], rec["precision"])
    if limits is None:
        rec.update({"status": "failed", "passed": False,
                    "reason": f"no tolerance for {rec['format']} {rec['precision']}: add it to a --tolerance file"})
        return rec, art
    rec["tolerance"] = limits
    rec["checks"] = evaluate_checks(rec, limits)
    rec["passed"] = all(c["passed"] for c in rec["checks"])
    rec["status"] = "passed" if rec["passed"] else "failed"
    if not rec["passed"]:
        rec["reason"] = "; ".join(f"{c['name']}: {c['value']:.6g} not {c['op']} {c['limit']:g}"
                                  for c in rec["checks"] if not c["passed"])
    return rec, art


def read_blame(artifact: Path | str) -> dict | None:
    """``{"int8_blame": [...], "int8_blame_info": {...}}`` of an artifact: from its metadata, else the sidecar file;
    None when it has none (float artifacts, int8 exported with ``blame=False``)."""
    from egeunet_deploy.calibration.blame import BLAME_INFO_KEY, BLAME_KEY, SIDE_SUFFIX
    from egeunet_deploy.export.metadata import MetadataError, read_metadata

    artifact = Path(artifact)
    try:
        meta = read_metadata(artifact)
        if meta.get(BLAME_KEY):
            return {BLAME_KEY: meta[BLAME_KEY], BLAME_INFO_KEY: meta.get(BLAME_INFO_KEY)}
    except MetadataError:
        pass
    side = Path(str(artifact) + SIDE_SUFFIX)
    if side.is_file():
        return json.loads(side.read_text())
    return None


def run_drift(
    artifacts: Path | str | list[Path],
    data: Path | str,
    split: str = "test",
    out: Path | str | None = None,
    tolerance: Path | str | None = None,
    weights: Path | str | None = None,
    threads: int | None = None,
    device: str = "auto",
    limit: int | None = None,
    progress: bool = True,
    loaded=None,
    skip_bad: bool = False,
    runtime: str | None = None,
) -> dict:
    """Run the reference and every artifact on one split; write drift.json, report.html and PNGs to ``out``
    (replaced whole, see :func:`write_drift_report`).

    ``loaded`` may pass an already decoded ``model.data.LoadedSet`` (``egeunet deploy`` reuses it). ``skip_bad``
    passes over unpaired or unreadable files; the report lists them (``skipped_files``). Everything that can be
    checked in a second (options, tolerances, artifacts, the report folder) is checked before any image is decoded.
    """
    from egeunet_deploy.model.bundled import DEFAULT_WEIGHTS
    from egeunet_deploy.model.data import load_split

    from .bench import parse_threads
    from .torch_runner import TorchRunner

    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1 (got {limit})")
    if runtime is not None and runtime not in RUNNERS:
        raise ValueError(f"unknown --runtime {runtime!r}; known: {', '.join(sorted(RUNNERS))}")
    if threads is not None:
        parse_threads([threads])  # more threads than cores: ONNX Runtime would allocate until memory runs out
    tol = load_tolerances(tolerance)
    paths = artifacts if isinstance(artifacts, list) else find_artifacts(artifacts)
    if out is not None:
        check_report_folder(Path(out), [*paths, data, *([weights] if weights else [])])
    data_set = loaded if loaded is not None else load_split(data, split, skip_bad=skip_bad, progress=progress,
                                                            limit=limit)
    if data_set.masks is None:
        raise ValueError(f"{data} [{split}] has no masks: drift needs ground truth")
    images, gt, names = data_set.images, data_set.masks, data_set.names

    t0 = time.perf_counter()
    ref_runner = TorchRunner(threads=threads, device=device).load(weights or DEFAULT_WEIGHTS)
    ref = Scored.of(ref_runner.run(images, progress=progress, desc="pytorch reference"), gt)
    ref_seconds = time.perf_counter() - t0
    ref_sha = ref_runner.weights_sha256
    report: dict = {
        "schema": 1,
        "data": str(Path(data).resolve()), "split": split, "n_images": len(images),
        "reference": {"file": str(Path(weights or DEFAULT_WEIGHTS).resolve()), "weights_sha256": ref_sha,
                      "runtime": ref_runner.info(), "seconds": ref_seconds,
                      "pooled": {k: ref.pooled[k] for k in ("miou", "dsc", "accuracy", "sensitivity", "specificity")},
                      "per_image": {"miou": float(ref.iou.mean()), "dsc": float(ref.dsc.mean())}},
        "strata_definition": {name: [lo, min(hi, 1.0)] for name, lo, hi in SIZE_BINS},
        "host": host_info(), "tolerances": tol, "artifacts": [],
        "skipped_files": [f"{s.path}: {s.reason}" for s in data_set.skipped],
    }
    scored: dict[str, Scored] = {}
    it = paths
    if progress:
        from tqdm import tqdm

        it = tqdm(paths, desc="drift", unit="artifact")
    for path in it:
        rec, art = run_artifact(Path(path), images, gt, names, ref, ref_sha, tol, threads, device, progress, runtime)
        rec.update(placement_keys(path))  # where else it runs: Ethos-U NPU (Vela) and MCU (TFLite Micro)
        report["artifacts"].append(rec)
        if art is not None:
            scored[rec["name"]] = art
    rows = report["artifacts"]
    report["summary"] = {s: sum(r["status"] == s for r in rows) for s in ("passed", "failed", "error", "skipped")}
    report["passed"] = all(r["passed"] is not False for r in rows)
    if out is not None:
        write_drift_report(report, Path(out), data_set, ref, scored)
    return report


REPORT_MARKER = "drift.json"
"""The file that makes a folder a drift report: :func:`write_drift_report` replaces such a folder whole."""


def check_report_folder(out: Path, inputs: list[Path | str] = ()) -> None:
    """``out`` must be new, empty, or a previous drift report, recognised by its ``drift.json``. The new report
    replaces the folder whole (nothing of a previous report may survive, and anything else left in a folder with a
    drift.json goes with it), so a folder without one, holding files the user put there or an export's artifacts,
    would be deleted with the swap: refuse it instead, before any work. ``inputs`` (artifacts, data, weights) must
    not lie inside ``out`` either, whatever else it holds."""
    check_output_path(out, "--out", folder=True)
    if not out.is_dir():
        return
    if any(out.iterdir()) and not (out / REPORT_MARKER).is_file():
        raise ValueError(f"--out {out} is not empty and not a drift report (no {REPORT_MARKER} in it); the report "
                         f"replaces its folder whole, so give a new or empty folder, or a previous report's")
    inside = [str(p) for p in inputs if Path(p).resolve().is_relative_to(out.resolve())]
    if inside:
        raise ValueError(f"--out {out} holds inputs of this run ({', '.join(inside)}); the report replaces its folder "
                         f"whole, so give another folder")


def write_drift_report(report: dict, out: Path, data_set, ref: Scored, scored: dict[str, Scored]) -> None:
    """Build the whole report (figures, drift.json, report.html) in a temporary folder beside ``out`` and swap it in
    at the end (``checkpoint.atomic_replace_folder``). Why: written in place, Ctrl-C left new figures without
    drift.json, and a second run left the first run's ``worst_*`` images beside the new report. Now ``out`` holds
    the previous complete report until the swap, the new complete one after it, and an interrupted run leaves no
    temporary folder behind."""
    from egeunet_deploy.model.checkpoint import atomic_replace_folder

    check_report_folder(out)

    def fill(staged: Path) -> None:
        staged.mkdir()
        _write_report_files(report, staged, data_set, ref, scored)

    atomic_replace_folder(out, fill)


def _write_report_files(report: dict, out: Path, data_set, ref: Scored, scored: dict[str, Scored]) -> None:
    """drift.json, the figures and report.html into ``out`` (names relative to it, so the folder can move)."""
    from egeunet_deploy.model.checkpoint import atomic_write_bytes

    from . import report as rep

    figures = rep.drift_figures(report, out)
    for index, rec in enumerate(report["artifacts"]):
        art = scored.get(rec["name"])
        if art is not None and rec.get("worst"):
            png = rep.worst_overlays(rec, data_set, ref, art, out, tag=f"{index:02d}")
            if png:
                rec["overlay_png"] = png
        if rec.get("int8_blame"):
            rec["blame_png"] = rep.blame_figure(rec, out, tag=f"{index:02d}")
    report["figures"] = figures
    atomic_write_bytes(out / "drift.json", json.dumps(report, indent=2).encode())
    atomic_write_bytes(out / "report.html", rep.drift_html(report).encode())


def summary_lines(report: dict) -> list[str]:
    """The terminal table: one row per artifact."""
    ref = report["reference"]["pooled"]
    lines = [f"{report['n_images']} images of {report['data']} [{report['split']}]; PyTorch reference: "
             f"pooled mIoU {ref['miou']:.4f} DSC {ref['dsc']:.4f}",
             f"{'artifact':34} {'runtime':22} {'DSC':>7} {'dDSC':>9} {'agree':>7} {'flip%':>7} {'max|dp|':>8}  status"]
    for r in report["artifacts"]:
        rt = r.get("runtime", {})
        runtime = f"{rt.get('backend', '-')}/{rt.get('provider', '-')}"[:22]
        if "pooled" in r:
            lines.append(f"{r['name'][:34]:34} {runtime:22} {r['pooled']['dsc']:7.4f} {r['delta']['dsc']:+9.5f} "
                         f"{r['agreement']['dsc']:7.4f} {100 * r['agreement']['flipped_fraction']:7.3f} "
                         f"{r['prob_diff']['max']:8.2e}  {r['status'].upper()}")
        else:
            lines.append(f"{r['name'][:34]:34} {runtime:22} {'-':>7} {'-':>9} {'-':>7} {'-':>7} {'-':>8}  "
                         f"{r['status'].upper()}")
        if r.get("reason"):
            lines.append(f"    {r['reason']}")
    lines += skipped_lines(report.get("skipped_files"))
    return lines


def skipped_lines(skipped: list[str] | None) -> list[str]:
    """The files ``--skip-bad`` passed over, one per line (nothing when none was)."""
    if not skipped:
        return []
    return [f"skipped {len(skipped)} unpaired or unreadable file(s) (--skip-bad):", *(f"  {s}" for s in skipped)]
