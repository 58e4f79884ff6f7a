"""Arm Ethos-U NPUs, compiled and estimated offline with Arm's Vela compiler (``pip install ethos-u-vela``).

Vela needs no hardware: it compiles a full-integer TFLite file for one Ethos-U configuration, places every op it
supports on the NPU (the rest stays for the Cortex-M's TFLite Micro, each with Vela's reason), and estimates SRAM,
Flash/DRAM, cycles and the inference time at the system's clock. Those figures are Vela's model of the hardware, not
a measurement, and everything that prints them says so.

Each configuration below pairs an accelerator with one of the system configurations and memory modes of Arm's own
``Arm/vela.ini`` (shipped with Vela), so the clock and memory bandwidths behind an estimate are named, not Vela's
internal defaults: the Ethos-U55 as the high-end microcontroller subsystem (Cortex-M55, 500 MHz, SRAM shared with
the CPU, weights in off-chip flash), the Ethos-U65 and U85 as the application-processor companions (1 GHz, a
dedicated SRAM cache in front of DRAM).

A non-integer model is refused before Vela runs (:func:`.integer_graph.require_full_integer`): Vela itself would
"compile" an fp32 model by leaving every op on the CPU, which answers nothing. ``strict=False`` compiles it anyway,
for :mod:`.where`'s NPU share of a mixed int8 artifact.
"""

from __future__ import annotations

import csv
import importlib.util
import re
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from importlib import metadata as _pkg
from pathlib import Path

from .base import ArtifactError, RuntimeUnavailable
from .integer_graph import analyse, require_full_integer, uniquely_named

ESTIMATE_LABEL = "Vela's estimate, not a measurement"
VELA_TIMEOUT_S = 600


@dataclass(frozen=True)
class VelaConfig:
    name: str  # the --accelerator-config, also the --device name of `egeunet bench`
    system_config: str  # a [System_Config.*] of Arm/vela.ini
    memory_mode: str  # a [Memory_Mode.*] of Arm/vela.ini
    description: str


CONFIGS: dict[str, VelaConfig] = {c.name: c for c in (
    VelaConfig("ethos-u55-256", "Ethos_U55_High_End_Embedded", "Shared_Sram",
               "Ethos-U55, 256 MACs/cycle, in a Cortex-M55 microcontroller: 500 MHz, SRAM shared with the CPU "
               "(4 GB/s), weights in off-chip flash (0.5 GB/s)"),
    VelaConfig("ethos-u65-512", "Ethos_U65_High_End", "Dedicated_Sram",
               "Ethos-U65, 512 MACs/cycle, beside an application processor: 1 GHz, dedicated SRAM (16 GB/s) as "
               "a cache in front of DRAM (3.75 GB/s)"),
    VelaConfig("ethos-u85-256", "Ethos_U85_SYS_DRAM_Mid", "Dedicated_Sram",
               "Ethos-U85, 256 MACs/cycle: 1 GHz, dedicated SRAM (2 ports, 32 GB/s) as a cache in front of DRAM "
               "(12 GB/s)"),
)}
DEFAULT_CONFIG = "ethos-u55-256"


class VelaError(ArtifactError):
    """Vela failed on a model (its own message is in the text)."""


def is_available() -> tuple[bool, str]:
    if importlib.util.find_spec("ethosu") is None or importlib.util.find_spec("ethosu.vela") is None:
        return False, "python package 'ethos-u-vela' is not installed (pip install ethos-u-vela)"
    return True, "ok"


def vela_version() -> str | None:
    try:
        return _pkg.version("ethos-u-vela")
    except _pkg.PackageNotFoundError:
        return None


def get_config(name: str) -> VelaConfig:
    if name not in CONFIGS:
        raise ValueError(f"unknown Ethos-U configuration {name!r}; known: {', '.join(CONFIGS)}")
    return CONFIGS[name]


_WARNING = re.compile(r"^Warning \(supported operators\) operator: (\w+), ofm: '(.*)'$")
_OPERATORS = re.compile(r"^(NPU|CPU) operators = (\d+) \(([\d.]+)%\)")


def parse_cpu_fallbacks(log: str) -> list[dict]:
    """Vela's ``Warning (supported operators)`` blocks: op type, output tensor, reason (with its detail lines)."""
    out, lines, i = [], log.splitlines(), 0
    while i < len(lines):
        m = _WARNING.match(lines[i].strip())
        i += 1
        if not m:
            continue
        reason = []
        while i < len(lines) and lines[i].strip():
            reason.append(lines[i].strip().removeprefix("Reason: "))
            i += 1
        out.append({"op": m.group(1), "ofm": m.group(2), "reason": "; ".join(reason) or "(no reason given)"})
    return out


def parse_operator_counts(log: str) -> dict:
    """Vela's own 'NPU operators = n (p%)' / 'CPU operators = ...' (its ops after graph rewriting)."""
    counts = {}
    for line in log.splitlines():
        m = _OPERATORS.match(line.strip())
        if m:
            counts[m.group(1).lower()] = {"operators": int(m.group(2)), "percent": float(m.group(3))}
    return counts


def read_summary(csv_path: Path) -> dict:
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise VelaError(f"{csv_path}: Vela's summary is empty")
    return rows[0]


def _f(row: dict, key: str) -> float | None:
    try:
        return float(row[key])
    except (KeyError, TypeError, ValueError):
        return None


def _short_reason(reason: str) -> str:
    """The reason without tensor names in parentheses (one line per kind of refusal)."""
    return re.sub(r" \([^()]*\)", "", reason.split("; ")[0]).strip()


def compile_model(path: Path | str, config: str = DEFAULT_CONFIG, out_dir: Path | str | None = None,
                  strict: bool = True, timeout: int = VELA_TIMEOUT_S) -> dict:
    """Compile one .tflite for one configuration with Vela; return its figures (and write the compiled model and
    Vela's CSVs to ``out_dir`` when given). ``strict``: refuse a model with float ops past the preprocessing."""
    ok, why = is_available()
    if not ok:
        raise RuntimeUnavailable(f"vela: {why}")
    path = Path(path)
    cfg = get_config(config)
    if not path.is_file():
        raise FileNotFoundError(f"artifact not found: {path}")
    if path.suffix.lower() != ".tflite":
        raise ArtifactError(f"{path}: Vela compiles .tflite files, not '{path.suffix}'")
    report = analyse(path)
    if strict:
        require_full_integer(path, f"the Arm Ethos-U NPU compiler (Vela, {cfg.name})", report)
    named = uniquely_named(path)  # Vela names ops by output tensor; exported files have dropped those names
    report = analyse(named)
    with tempfile.TemporaryDirectory(prefix="egeunet-vela-") as tmp:
        tmp = Path(tmp)
        model = tmp / "model.tflite"  # Vela names its outputs after the input; one fixed, plain name
        model.write_bytes(named)
        cmd = [sys.executable, "-m", "ethosu.vela", str(model), "--accelerator-config", cfg.name,
               "--config", "Arm/vela.ini", "--system-config", cfg.system_config, "--memory-mode", cfg.memory_mode,
               "--output-dir", str(tmp / "out"), "--show-cpu-operations"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise VelaError(f"{path}: Vela did not finish within {timeout} s ({cfg.name})") from None
        log = proc.stdout + "\n" + proc.stderr
        if proc.returncode != 0:
            tail = "; ".join(ln.strip() for ln in log.strip().splitlines()[-4:])
            raise VelaError(f"{path}: Vela failed for {cfg.name} (exit {proc.returncode}): {tail}")
        summaries = sorted((tmp / "out").glob("*_summary_*.csv"))
        if not summaries:
            raise VelaError(f"{path}: Vela wrote no summary CSV for {cfg.name}")
        row = read_summary(summaries[0])
        compiled = tmp / "out" / "model_vela.tflite"
        written = None
        if out_dir is not None:
            out_dir = Path(out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            from egeunet_deploy.model.checkpoint import atomic_write_bytes

            written = out_dir / f"{path.stem}_{cfg.name}_vela.tflite"
            atomic_write_bytes(written, compiled.read_bytes())
            atomic_write_bytes(out_dir / f"{path.stem}_{cfg.name}_summary.csv", summaries[0].read_bytes())
    fallbacks = {}
    for f in parse_cpu_fallbacks(log):  # Vela may warn twice about one op: one entry per op, reasons joined
        if f["ofm"] in fallbacks:
            fallbacks[f["ofm"]]["reason"] += "; " + f["reason"]
        else:
            fallbacks[f["ofm"]] = f
    fallbacks = list(fallbacks.values())
    region_of = {}
    for op in report.ops:
        for name in op.outputs:
            region_of[name] = op.region
    cpu_ops = [{**f, "region": region_of.get(f["ofm"], "unknown")} for f in fallbacks]
    n_total = len(report.ops)
    n_cpu = len(cpu_ops)
    counts = parse_operator_counts(log)
    inference_s = _f(row, "inference_time")
    flash = sum(v for v in (_f(row, "on_chip_flash_memory_used"), _f(row, "off_chip_flash_memory_used")) if v)
    network_cpu = [f for f in cpu_ops if f["region"] == "network"]
    return {
        "config": cfg.name, "description": cfg.description, "accelerator": row.get("accelerator_configuration"),
        "system_config": cfg.system_config, "memory_mode": cfg.memory_mode, "vela_version": vela_version(),
        "artifact": str(path), "clock_hz": _f(row, "core_clock"),
        "ops_total": n_total, "ops_cpu": n_cpu, "ops_npu": n_total - n_cpu,
        "npu_share": (n_total - n_cpu) / n_total if n_total else None,
        "vela_operators": counts,  # Vela's own counts, after it rewrote the graph (resizes split, etc.)
        "cpu_ops": cpu_ops,
        "cpu_op_types": dict(Counter(f["op"] for f in cpu_ops)),
        "cpu_reasons": dict(Counter(f"{f['op']}: {_short_reason(f['reason'])}" for f in cpu_ops)),
        "cpu_ops_in_network": len(network_cpu),
        "whole_network_on_npu": not network_cpu,
        "float_ops_in_network": report.describe_float_ops() or None,
        "sram_kib": _f(row, "sram_memory_used"), "flash_kib": flash, "dram_kib": _f(row, "dram_memory_used"),
        "inference_ms": 1e3 * inference_s if inference_s is not None else None,
        "inferences_per_s": _f(row, "inferences_per_second"),
        "cycles_total": _f(row, "cycles_total"), "cycles_npu": _f(row, "cycles_npu"),
        "macs": _f(row, "nn_macs"),
        "compiled_model": str(written) if written else None,
        "note": ESTIMATE_LABEL,
    }


def compile_all(path: Path | str, configs: list[str] | None = None, out_dir: Path | str | None = None,
                strict: bool = True) -> list[dict]:
    """Every configuration (default: all of :data:`CONFIGS`); with ``out_dir``, also the compiled models, Vela's
    summary CSVs and ``<stem>_ethos-u.json`` holding every estimate (a step an export can call after writing the
    full-integer .tflite)."""
    results = [compile_model(path, c, out_dir=out_dir, strict=strict) for c in (configs or list(CONFIGS))]
    if out_dir is not None:
        import json

        from egeunet_deploy.model.checkpoint import atomic_write_bytes

        record = {"artifact": Path(path).name, "note": ESTIMATE_LABEL, "vela_version": vela_version(),
                  "configs": results}
        atomic_write_bytes(Path(out_dir) / f"{Path(path).stem}_ethos-u.json", json.dumps(record, indent=2).encode())
    return results


# --- `egeunet bench --device ethos-u55-256` -------------------------------------------------------------------------


def bench_vela(artifacts: list[Path | str], config: str) -> list[dict]:
    """One record per artifact (the shape ``egeunet bench`` writes): Vela's estimate for ``config``, or the reason
    it cannot compile that artifact."""
    get_config(config)
    records = []
    for a in artifacts:
        p = Path(a)
        rec = {"artifact": str(p), "name": p.name, "device": config, "status": "ok", "reason": None,
               "size_bytes": p.stat().st_size if p.is_file() else None, "results": [], "estimate": None,
               "note": ESTIMATE_LABEL}
        try:
            est = compile_model(p, config)
        except RuntimeUnavailable as e:
            rec.update({"status": "skipped", "reason": str(e)})
        except (ArtifactError, FileNotFoundError) as e:
            rec.update({"status": "error", "reason": str(e)})
        else:
            rec["estimate"] = est
            rec["results"] = [{"estimated_inference_ms": est["inference_ms"], "source": ESTIMATE_LABEL}]
        records.append(rec)
    return records


def summary_lines(records: list[dict]) -> list[str]:
    """The terminal table of :func:`bench_vela`."""
    lines = []
    for r in records:
        e = r.get("estimate")
        if not e:
            lines.append(f"{r['name']}: {r['status'].upper()}: {r['reason']}")
            continue
        clock = f"{e['clock_hz'] / 1e6:.0f} MHz" if e.get("clock_hz") else "its clock"
        lines.append(f"{r['name']} on {e['config']} ({e['system_config']}, {e['memory_mode']}, Vela "
                     f"{e['vela_version']}):")
        lines.append(f"  {e['inference_ms']:.2f} ms per inference at {clock} ({ESTIMATE_LABEL}); "
                     f"{e['inferences_per_s']:.1f} inferences/s; {e['cycles_total']:.0f} cycles; "
                     f"{e['macs'] / 1e6:.1f} M MACs")
        lines.append(f"  ops on the NPU: {e['ops_npu']} of {e['ops_total']} ({100 * e['npu_share']:.1f}%; Vela's own "
                     f"count after its rewrites: {e['vela_operators'].get('npu', {}).get('percent', '-')}%)")
        mem = f"SRAM {e['sram_kib']:.0f} KiB, Flash {e['flash_kib']:.0f} KiB"
        if e.get("dram_kib"):
            mem += f", DRAM {e['dram_kib']:.0f} KiB"
        lines.append(f"  memory: {mem}")
        if e["cpu_ops"]:
            lines.append(f"  left on the CPU ({e['ops_cpu']} ops; {e['cpu_ops_in_network']} past the preprocessing "
                         f"and I/O):")
            for reason, n in sorted(e["cpu_reasons"].items(), key=lambda kv: -kv[1]):
                lines.append(f"    {n} x {reason}")
    return lines
