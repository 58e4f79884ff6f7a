"""Pictures and HTML for the drift report, the benchmark and the deploy page.

Figures are matplotlib (Agg) PNGs written atomically next to the JSON they illustrate; the HTML references them
by relative path, so a report folder can be zipped, attached to CI or opened from disk as is. The page is plain
HTML + inline CSS (no scripts, nothing fetched from the network).

The deploy page's first screen answers three questions: did it pass (:func:`verdict_banner`), which artifact to ship
for which device (:func:`device_summary`; NPU and MCU rows appear when the summary rows carry ``npu``/``mcu``, see
:data:`ACCELERATOR_KEYS`) and what every artifact costs in accuracy, size and latency (:func:`summary_table`, which
fits a 1280 px window: long reasons are numbered notes, :class:`Footnotes`). Everything else is in collapsible
sections. ``tests/test_report_browser.py`` checks this in headless Chromium.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from egeunet_deploy.model.figures import GT_RGB, PRED_RGB, difference_map, image_grid, plt, save_png  # sets Agg
from egeunet_deploy.model.predict import overlay

STATUS_COLORS = {"passed": "#1a7f37", "failed": "#cf222e", "error": "#cf222e", "skipped": "#9a6700",
                 "export failed": "#cf222e"}
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#1f2328}
h1{font-size:1.6em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #d0d7de;padding:.25em .5em}
th{background:#f6f8fa;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
.status{font-weight:600;color:#fff;border-radius:4px;padding:.1em .5em}img{max-width:100%;border:1px solid #d0d7de}
.note{color:#57606a;font-size:.9em}code{background:#f6f8fa;padding:.1em .3em;border-radius:3px}
body{padding:0 1em;line-height:1.4;margin-top:1em}h1{margin:.2em 0 .4em}h2{margin-top:1em}
.verdict{color:#fff;padding:.5em .8em;border-radius:6px;font-size:1.05em;margin:.4em 0}
.verdict.passed{background:#1a7f37}.verdict.failed{background:#cf222e}
table.summary td,table.devices td,table.drift td{white-space:nowrap}table.devices td:last-child{white-space:normal}
ol.footnotes{color:#57606a;font-size:.85em;margin:.2em 0 .8em}sup a{text-decoration:none}
details{margin:.5em 0;border:1px solid #d0d7de;border-radius:6px;padding:.3em .8em}
summary{cursor:pointer;font-weight:600}ul.worst{padding-left:0;list-style:none}
"""


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


# --- drift figures ----------------------------------------------------------------------------------------------


def _measured(report: dict) -> list[dict]:
    return [r for r in report["artifacts"] if "pooled" in r]


def drift_figures(report: dict, out: Path) -> dict[str, str]:
    """Summary bars (|dDSC| and agreement against their limits), the paired-difference CIs, and size strata."""
    rows = _measured(report)
    if not rows:
        return {}
    names = [r["name"] for r in rows]
    colors = [STATUS_COLORS.get(r["status"], "#57606a") for r in rows]
    y = np.arange(len(rows))
    figs = {}

    fig, axes = plt.subplots(1, 3, figsize=(15, 0.5 * len(rows) + 1.8), sharey=True)
    panels = (("|pooled DSC - reference|", [abs(r["delta"]["dsc"]) for r in rows], "delta_dsc_abs_max"),
              ("mask agreement with PyTorch (Dice)", [r["agreement"]["dsc"] for r in rows], "agreement_dsc_min"),
              ("max |probability difference|", [r["prob_diff"]["max"] for r in rows], "prob_abs_max"))
    for ax, (title, values, limit_key) in zip(axes, panels, strict=True):
        ax.barh(y, values, color=colors)
        for i, r in enumerate(rows):
            lim = (r.get("tolerance") or {}).get(limit_key)
            if lim is not None:
                ax.plot([lim, lim], [i - 0.4, i + 0.4], color="k", lw=2)
            else:  # say so, rather than leave a reader to wonder where this row's tick went
                ax.annotate("no limit", (values[i], i), xytext=(4, 0), textcoords="offset points", va="center",
                            fontsize=7, color="#57606a")
        ax.set_title(title, fontsize=10)
        if limit_key == "prob_abs_max":
            ax.set_xscale("log")
        if limit_key == "agreement_dsc_min":
            ax.set_xlim(min(min(values), 0.98) - 0.002, 1.0005)
    axes[0].set_yticks(y, names)
    axes[0].invert_yaxis()
    fig.suptitle("Drift vs PyTorch (black ticks: the precision's tolerance, \"no limit\": none set for that measure; "
                 "green passed, red failed)", fontsize=11, y=1.03)
    figs["summary"] = save_png(fig, out / "drift_summary.png")

    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6))
    for i, r in enumerate(rows):
        d = r["per_image"]["delta_dsc"]
        lo, hi = d["ci95"]
        ax.errorbar(d["mean"], i, xerr=[[d["mean"] - lo], [hi - d["mean"]]], fmt="o", color=colors[i], capsize=4)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("per-image DSC, artifact minus PyTorch (mean, 95% bootstrap CI)")
    figs["ci"] = save_png(fig, out / "drift_ci.png")

    strata = [s["name"] for s in rows[0]["strata"]]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        vals = [s.get("delta_dsc", 0.0) for s in r["strata"]]
        ax.bar(np.arange(len(strata)) + i * width - 0.4 + width / 2, vals, width, label=r["name"])
    counts = [s["n"] for s in rows[0]["strata"]]
    ax.set_xticks(np.arange(len(strata)), [f"{s} (n={c})" for s, c in zip(strata, counts, strict=True)])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("pooled DSC, artifact minus PyTorch")
    ax.set_title("Drift by lesion size (share of image area)")
    ax.legend(fontsize=7, ncol=2)
    figs["strata"] = save_png(fig, out / "drift_strata.png")
    return figs


def blame_figure(rec: dict, out: Path, tag: str = "") -> str:
    """Horizontal bars: the pooled DSC each block costs when it alone is quantized (worst at the top)."""
    blame = rec["int8_blame"]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(blame) + 1.2))
    labels = [f"{b['block']}{'' if b.get('quantized_in_artifact', True) else ' (float here)'}" for b in blame]
    deltas = [b["dsc_delta"] for b in blame]
    ax.barh(range(len(blame)), deltas, color=["#cf222e" if d < 0 else "#2da44e" for d in deltas])
    ax.set_yticks(range(len(blame)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="#57606a", lw=0.8)
    ax.set_xlabel("pooled DSC change when only this block is int8 (ΔDSC, a fraction)")
    ax.set_title(f"int8 blame: {rec['name']}", fontsize=9)
    return save_png(fig, out / f"blame_{tag}_{_safe(rec['name'])}.png")


def worst_overlays(rec: dict, data_set, ref, art, out: Path, tag: str = "") -> str | None:
    """Rows = the images where the artifact flips most pixels: ground truth, PyTorch, artifact, difference. Only
    images that differ at all are drawn (None when none does: "0 px flipped" rows showed nothing)."""
    rows, subtitles = [], []
    if not any(w["flipped_pixels"] > 0 for w in rec["worst"]):
        return None
    for w in (w for w in rec["worst"] if w["flipped_pixels"] > 0):
        i = w["index"]
        img = data_set.images[i]
        rows.append((overlay(img, data_set.masks[i], color=GT_RGB), overlay(img, ref.masks[i], color=PRED_RGB),
                     overlay(img, art.masks[i], color=PRED_RGB), difference_map(img, art.masks[i], ref.masks[i])))
        subtitles.append((w["name"], f"DSC {w['reference_dsc']:.3f}", f"DSC {w['artifact_dsc']:.3f}",
                          f"{w['flipped_pixels']} px flipped, agree {w['agreement_dsc']:.4f}"))
    titles = ("ground truth", "PyTorch reference", rec["name"], "difference (red: artifact only, blue: ref only)")
    return save_png(image_grid(rows, subtitles, titles), out / f"worst_{tag}_{_safe(rec['name'])}.png")


# --- HTML -------------------------------------------------------------------------------------------------------


class Raw(str):
    """Trusted HTML built here: :func:`table` does not escape it."""


def esc(x) -> str:
    return html.escape(str(x))


def table(headers: list[str], rows: list[list], raw_cols: tuple[int, ...] = (), cls: str | None = None) -> str:
    """An HTML table; numbers right-aligned; cells that are :class:`Raw` (or in ``raw_cols``) are trusted HTML."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for j, v in enumerate(row):
            if j in raw_cols or isinstance(v, Raw):
                cells.append(f"<td>{v}</td>")
            elif isinstance(v, (int, float)) and not isinstance(v, bool) or _numeric(v):
                cells.append(f"<td class='num'>{esc(v)}</td>")
            else:
                cells.append(f"<td>{esc(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    klass = f" class='{esc(cls)}'" if cls else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _numeric(v) -> bool:
    """Formatted numbers ('+0.00150', '12.18', '-') are right-aligned like numbers."""
    if not isinstance(v, str) or not v:
        return False
    try:
        float(v)
        return True
    except ValueError:
        return v == "-"


class Footnotes:
    """Long reasons as numbered notes under a table, so that a cell holds a marker instead of a paragraph that
    wraps to one word per line (a skipped Core ML row was 200 px tall). The same text gets the same number."""

    def __init__(self, prefix: str = "note") -> None:
        self.prefix = prefix
        self.texts: list[str] = []

    def mark(self, text: str | None) -> str:
        if not text:
            return ""
        if text not in self.texts:
            self.texts.append(text)
        i = self.texts.index(text) + 1
        return f"<sup><a href='#{self.prefix}{i}'>{i}</a></sup>"

    def html(self) -> str:
        if not self.texts:
            return ""
        items = "".join(f"<li id='{self.prefix}{i}'>{esc(t)}</li>" for i, t in enumerate(self.texts, 1))
        return f"<ol class='footnotes'>{items}</ol>"


def status_badge(status: str | None) -> str:
    s = status or "-"
    return f"<span class='status' style='background:{STATUS_COLORS.get(s, '#57606a')}'>{esc(s.upper())}</span>"


def img(src: str | None, alt: str = "") -> str:
    return f"<p><img src='{esc(src)}' alt='{esc(alt)}'></p>" if src else ""


def details(summary: str, body: str, open_: bool = False) -> str:
    """A collapsible section: ``summary`` is trusted HTML, shown closed unless ``open_``."""
    return f"<details{' open' if open_ else ''}><summary>{summary}</summary>{body}</details>"


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>{body}</body></html>\n")


def _f(x, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def _d(x, digits: int = 5) -> str:
    """A signed difference ('+0.00132'); one that rounds to zero is '0.00000', not '-0.00000'."""
    if x is None:
        return "-"
    text = format(x, f"+.{digits}f")
    return text[1:] if float(text) == 0 else text


def short_runtime(rt: dict | None) -> str:
    """'onnxruntime CPU', 'litert XNNPACK': the backend and its provider without the provider's boilerplate."""
    if not rt:
        return "-"
    provider = str(rt.get("provider") or "").replace("ExecutionProvider", "")
    return f"{rt.get('backend', '-')} {provider}".strip()


# --- which artifact for which device ------------------------------------------------------------------------------

NEAR_FASTEST = 0.10
"""Artifacts within this fraction of the fastest p50 count as equally fast (a shared 2-core host moves latencies by
about that much between runs); among them the smallest file is chosen."""

DEVICES = (
    ("phone_cpu", "Android phone, CPU (LiteRT, XNNPACK)"),
    ("phone_gpu", "Android phone, GPU delegate (LiteRT)"),
    ("apple", "iPhone, iPad, Mac (Core ML)"),
    ("desktop_cpu", "Desktop or server CPU (ONNX Runtime)"),
    ("npu", "NPU"),
    ("mcu", "Microcontroller (MCU)"),
)
"""The device classes of the first screen, in order; ``npu`` and ``mcu`` appear when some row has that key."""

ACCELERATOR_KEYS = ("npu", "mcu")
"""Optional keys of a summary row, filled by the runners of those targets: ``{"runs": bool, "ms": float | None,
"note": str}`` (can the artifact run there, its latency on that device if measured, and a short note: where it was
measured, or why it cannot run). :func:`device_summary` and :func:`summary_table` render them when present."""


def p50_at(row: dict, threads: int | None = None) -> float | None:
    """p50 latency of a summary row at ``threads`` (default: the fewest measured); JSON turns the keys to strings."""
    p50 = {int(k): v for k, v in (row.get("p50_ms") or {}).items() if v is not None}
    if not p50:
        return None
    return p50.get(threads if threads is not None else min(p50))


def _size(row: dict) -> float:
    return row.get("size_bytes") or float("inf")


def fastest_then_smallest(rows: list[dict], latency=p50_at) -> dict | None:
    """The row to ship among ``rows``: the fastest (p50), or, of those within :data:`NEAR_FASTEST` of it, the
    smallest file; the smallest when none was timed."""
    if not rows:
        return None
    timed = [r for r in rows if latency(r) is not None]
    if not timed:
        return min(rows, key=_size)
    best = min(latency(r) for r in timed)
    near = [r for r in timed if latency(r) <= best * (1 + NEAR_FASTEST)]
    return min(near, key=lambda r: (_size(r), latency(r)))


def _passed(rows: list[dict], target: str) -> list[dict]:
    return [r for r in rows if r.get("target") == target and r.get("drift_status") == "passed"]


def _by_precision(rows: list[dict], order: tuple[str, ...]) -> dict | None:
    for p in order:
        for r in rows:
            if r.get("precision") == p:
                return r
    return None


def device_choices(rows: list[dict]) -> list[dict]:
    """One entry per device class: ``{"key", "device", "row" (the artifact to ship, or None), "why", "checked"}``.
    ``rows`` are the deploy summary rows (one per artifact, drift and latency joined); rows may carry the optional
    :data:`ACCELERATOR_KEYS`, and the NPU and MCU entries exist only when some row does."""
    out = []
    for key, device in DEVICES:
        row, why, checked = None, "", ""
        if key == "phone_cpu":
            row = fastest_then_smallest(_passed(rows, "tflite"))
            why = "fastest here among the TFLite artifacts that passed drift (ties within 10%: the smallest file)"
            checked = "drift passed; CPU latency here" if row else ""
        elif key == "phone_gpu":
            row = _by_precision(_passed(rows, "tflite"), ("fp16", "fp32"))
            why = "GPU delegates compute in 16-bit float: the fp16 artifact is what they run natively"
            checked = "drift passed (CPU); GPU not timed" if row else ""
        elif key == "apple":
            coreml = [r for r in rows if r.get("target") == "coreml" and r.get("export_ok")]
            passed = [r for r in coreml if r.get("drift_status") == "passed"]
            row = _by_precision(passed or coreml, ("fp16", "fp32", "int8w", "int8"))
            why = "fp16: the Neural Engine and GPU compute in 16-bit float"
            checked = ("drift passed" if row and row.get("drift_status") == "passed"
                       else "exported; runs only on macOS" if row else "")
        elif key == "desktop_cpu":
            row = fastest_then_smallest(_passed(rows, "onnx"))
            why = "fastest here among the ONNX artifacts that passed drift (ties within 10%: the smallest file)"
            checked = "drift passed; CPU latency here" if row else ""
        else:  # accelerators whose runners fill the optional keys
            if not any(key in r for r in rows):
                continue
            runs = [r for r in rows if (r.get(key) or {}).get("runs")]
            # never recommend an artifact that failed drift; one drift could not run here is "not checked"
            passed = [r for r in runs if r.get("drift_status") == "passed"]
            unchecked = [r for r in runs if r.get("drift_status") in (None, "skipped")]
            row = fastest_then_smallest(passed or unchecked, latency=lambda r, k=key: (r.get(k) or {}).get("ms"))
            why = (f"fastest on the {key.upper()} among the artifacts that run there and did not fail drift "
                   f"(ties within 10%: the smallest); {(row.get(key) or {}).get('note', '')}" if row else "")
            if row:
                checked = "drift passed" if row in passed else "drift not run here"
            elif runs:
                failed = ", ".join(f"{r.get('file')} (drift {r.get('drift_status')})" for r in runs)
                checked = f"none that passed drift; runs there but failed: {failed}"
            else:
                checked = "no artifact of this run can run there"
        out.append({"key": key, "device": device, "row": row, "why": why if row else "", "checked": checked})
    return out


def accelerator_ms(v: dict) -> str:
    """An NPU/MCU latency cell: Vela's figure is an estimate and says so (``est. 29.39``), never passes for a timing."""
    if v.get("ms") is None:
        return "-"
    return ("est. " if v.get("estimate") else "") + f"{v['ms']:.2f}"


def device_summary(rows: list[dict], notes: Footnotes | None = None) -> str:
    """The first screen's answer to "which artifact do I ship for which device, and what does it cost": one row per
    device class (NPU and MCU rows when the summary rows carry those keys)."""
    notes = notes if notes is not None else Footnotes()
    body = []
    for c in device_choices(rows):
        r = c["row"]
        if r is None:
            body.append([c["device"], "-", "-", "-", "-", "-", c["checked"] or "none exported in this run"])
            continue
        ms = accelerator_ms(r.get(c["key"]) or {}) if c["key"] in ACCELERATOR_KEYS else _f(p50_at(r), ".2f")
        body.append([c["device"], Raw(f"<b>{esc(r.get('file'))}</b>{notes.mark(c['why'])}"),
                     _d(r.get("delta_dsc")), _f(r.get("agreement")),
                     _f(r["size_bytes"] / 1024, ".0f") if r.get("size_bytes") else "-", ms, c["checked"]])
    return table(["device", "ship", "ΔDSC vs PyTorch", "mask agreement", "size KB", "p50 ms (1 thread)",
                  "checked"], body, cls="devices")


def summary_table(rows: list[dict], notes: Footnotes) -> str:
    """Every artifact in one table that fits a 1280 px window: size, accuracy, latency and the drift verdict; long
    reasons go to ``notes``. NPU and MCU columns appear when rows carry those keys."""
    threads = sorted({int(t) for r in rows for t in (r.get("p50_ms") or {})})
    extra = [k for k in ACCELERATOR_KEYS if any(k in r for r in rows)]
    body = []
    for r in rows:
        status = r.get("drift_status") if r.get("export_ok") else r.get("export_status", "failed")
        reason = r.get("drift_reason") or (r.get("export_error") if not r.get("export_ok") else "") or ""
        verdict = "reference" if status == "reference" else status_badge(status if status else "not run")
        if not r.get("export_ok"):  # "skipped": this OS cannot build it; "failed": the converter failed
            verdict = status_badge("not built" if status == "skipped" else "export failed")
        cells = [Raw(esc(r.get("file") or f"{r.get('target')} {r.get('precision')}")), r.get("precision"),
                 _f(r["size_bytes"] / 1024, ".0f") if r.get("size_bytes") else "-", _f(r.get("dsc")),
                 _d(r.get("delta_dsc")), _f(r.get("agreement")),
                 *[_f(p50_at(r, t), ".2f") for t in threads], Raw(verdict + notes.mark(reason))]
        for k in extra:  # "yes" gets its note as a footnote; "no" (most rows) keeps its reason in a tooltip
            v = r.get(k)
            if v is None:
                cells.append("-")
            elif v.get("runs"):
                ms = f", {accelerator_ms(v)} ms" if v.get("ms") is not None else ""
                cells.append(Raw(f"yes{ms}{notes.mark(v.get('note'))}"))
            else:
                cells.append(Raw(f"<span title='{esc(v.get('note') or '')}'>no</span>"))
        body.append(cells)
    headers = ["artifact", "precision", "size KB", "DSC", "ΔDSC", "agreement",
               *[f"p50 ms, {t} thr" for t in threads], "drift", *[k.upper() for k in extra]]
    return table(headers, body, cls="summary")


# --- the drift report ----------------------------------------------------------------------------------------------


def drift_table(report: dict, notes: Footnotes | None = None) -> str:
    notes = notes if notes is not None else Footnotes("drift-note")
    rows = []
    for r in report["artifacts"]:
        runtime = short_runtime(r.get("runtime"))
        status = Raw(status_badge(r["status"]) + notes.mark(r.get("reason")))
        if "pooled" in r:
            ci = r["per_image"]["delta_dsc"]["ci95"]
            rows.append([r["name"], r["precision"], runtime, _f(r["pooled"]["miou"]),
                         _f(r["pooled"]["dsc"]), _d(r["delta"]["dsc"]), f"{_d(ci[0], 4)}, {_d(ci[1], 4)}",
                         _f(r["agreement"]["dsc"]), _f(100 * r["agreement"]["flipped_fraction"], ".3f"),
                         _f(r["prob_diff"]["max"], ".1e"), status])
        else:
            rows.append([r["name"], r["precision"], runtime] + ["-"] * 7 + [status])
    return table(["artifact", "precision", "runtime", "mIoU", "DSC", "ΔDSC", "per-image ΔDSC, 95% CI",
                  "agreement", "flipped %", "max |Δp|", "status"], rows, cls="drift") + notes.html()


def blame_section(blamed: list[dict], prefix: str = "") -> str:
    """The int8 blame rankings, saying what they are (a measurement of this artifact) and what they are not (the
    choice of the recipe's float blocks, made earlier on other images: ``calibration.blame.FLOAT_BLOCKS_CHOICE``)."""
    from egeunet_deploy.calibration.blame import FLOAT_BLOCKS_CHOICE

    parts = [f"<p class='note'>Each block of the network quantized alone with this artifact's recipe and calibration "
             f"ranges, ranked by the pooled DSC it changes against the float artifact (ΔDSC as a fraction, like every "
             f"ΔDSC in this report; negative: worse). This ranking is a measurement of the shipped artifact, not "
             f"the choice of which blocks stay float: {esc(FLOAT_BLOCKS_CHOICE)}</p>"]
    for r in blamed:
        info = r.get("int8_blame_info") or {}
        rows = r["int8_blame"]
        quantized = [b for b in rows if b.get("quantized_in_artifact", True)]
        kept = [b for b in rows if not b.get("quantized_in_artifact", True)]
        line = ""
        if quantized and kept:
            worst = quantized[0]  # rows are sorted worst first
            cheaper = [b["block"] for b in kept if b["dsc_delta"] > worst["dsc_delta"]]
            line = (f"Here the costliest block that this artifact quantizes is {worst['block']} "
                    f"({worst['dsc_delta']:+.5f}); {len(cheaper)} of the {len(kept)} float blocks would cost less "
                    f"than it on these images{': ' + ', '.join(cheaper) if cheaper else ''}.")
        measured_on = (f"{info['images']} images: {info.get('source')}" if info.get("images") else "")
        table_html = table(["block", "ΔDSC when quantized alone", "agreement with float", "in this artifact"],
                           [[b["block"], _d(b["dsc_delta"]), _f(b.get("agreement")),
                             "int8" if b.get("quantized_in_artifact", True) else "float"] for b in rows])
        body = (f"<p class='note'>{esc(measured_on)}{'. ' if measured_on else ''}{esc(line)}</p>" + table_html
                + (img(prefix + r["blame_png"], "int8 blame") if r.get("blame_png") else ""))
        parts.append(details(f"{esc(r['name'])}: int8 blame ranking of {len(rows)} blocks", body))
    return "".join(parts)


def differing_worst(rec: dict) -> list[dict]:
    """The worst images that differ from the reference at all (0 flipped pixels is no example of drift)."""
    return [w for w in rec.get("worst") or [] if w["flipped_pixels"] > 0]


def worst_section(report: dict, prefix: str = "") -> str:
    parts = ["<p class='note'>Per artifact, the images where its mask differs from PyTorch's in the most pixels "
             "(up to 8; ground truth, PyTorch, the artifact, and the difference).</p><ul class='worst'>"]
    for r in _measured(report):
        n_diff = r["agreement"].get("images_with_flips")
        shown = differing_worst(r)
        if not shown:
            parts.append(f"<li>{esc(r['name'])}: no image differs from PyTorch's mask</li>")
            continue
        head = (f"{esc(r['name'])}: {n_diff if n_diff is not None else len(shown)} of {report['n_images']} images "
                f"differ; the most: {shown[0]['flipped_pixels']} px flipped")
        body = img(prefix + r["overlay_png"], r["name"]) if r.get("overlay_png") else ""
        parts.append(f"<li>{details(head, body) if body else head}</li>")
    parts.append("</ul>")
    return "".join(parts)


def drift_body(report: dict, prefix: str = "") -> str:
    """The drift section; ``prefix`` is the relative folder of the figures (deploy embeds it from one level up).
    Table and summary figure first; the confidence intervals, the lesion-size breakdown, the int8 blame rankings
    and the worst images are collapsible sections."""
    ref = report["reference"]
    s = report["summary"]
    parts = [f"<p>{report['n_images']} images of <code>{esc(report['data'])}</code> [{esc(report['split'])}]. "
             f"PyTorch reference <code>{esc(Path(ref['file']).name)}</code> (sha256 {esc(ref['weights_sha256'][:12])}"
             f"...): pooled mIoU {ref['pooled']['miou']:.4f}, DSC {ref['pooled']['dsc']:.4f}; per-image mIoU "
             f"{ref['per_image']['miou']:.4f}, DSC {ref['per_image']['dsc']:.4f}. {s['passed']} passed, "
             f"{s['failed']} failed, {s['error']} errors, {s['skipped']} skipped (cannot run here; the reason is "
             f"given).</p>",
             drift_table(report)]
    parts.append(skipped_note(report.get("skipped_files")))
    figs = report.get("figures", {})
    if "summary" in figs:
        parts.append(img(prefix + figs["summary"], "drift summary"))
        parts.append("<p class='note'>Black ticks: the tolerance for the artifact's precision "
                     "(<code>runtimes/tolerances.yaml</code>). \"no limit\": that precision has no limit on that "
                     "measure; fp16 and int8 are judged by ΔDSC and mask agreement only, since their probabilities "
                     "differ from fp32's by design.</p>")
    if "ci" in figs:
        parts.append(details("Per-image ΔDSC: mean and 95% bootstrap interval", img(prefix + figs["ci"], "ci")))
    rows = []
    for r in _measured(report):
        for st in r["strata"]:
            rows.append([r["name"], st["name"], st["n"], _f(st.get("reference_dsc")), _f(st.get("artifact_dsc")),
                         _d(st.get("delta_dsc")), _f(st.get("agreement_dsc")),
                         _f(100 * st["flipped_fraction"] if "flipped_fraction" in st else None, ".3f")])
    if rows:
        strata = (img(prefix + figs["strata"], "strata") if "strata" in figs else "") + table(
            ["artifact", "lesion size", "images", "reference DSC", "artifact DSC", "ΔDSC", "agreement", "flipped %"],
            rows)
        parts.append(details("Drift by lesion size", strata))
    blamed = [r for r in _measured(report) if r.get("int8_blame")]
    if blamed:
        parts.append("<h3>int8 blame</h3>" + blame_section(blamed, prefix))
    if _measured(report):
        parts.append("<h3>Images that differ</h3>" + worst_section(report, prefix))
    return "".join(parts)


def skipped_note(skipped: list[str] | None) -> str:
    """The files ``--skip-bad`` passed over, so a report never hides that it ran on fewer images than the split has."""
    if not skipped:
        return ""
    items = "".join(f"<li><code>{esc(s)}</code></li>" for s in skipped)
    return f"<p class='note'>Skipped {len(skipped)} unpaired or unreadable file(s) (--skip-bad):</p><ul>{items}</ul>"


def verdict_banner(passed: bool, text: str) -> str:
    word = "PASSED" if passed else "FAILED"
    return f"<p class='verdict {word.lower()}'><b>{word}</b>: {esc(text)}</p>"


def drift_html(report: dict) -> str:
    verdict = "PASSED" if report["passed"] else "FAILED"
    s = report["summary"]
    text = (f"{s['passed']} of {len(report['artifacts'])} artifacts within tolerance of PyTorch on "
            f"{report['n_images']} images; {s['failed']} failed, {s['error']} errors, {s['skipped']} not run here")
    return page(f"EGE-UNet drift report: {verdict}", verdict_banner(report["passed"], text) + drift_body(report))


# --- benchmark --------------------------------------------------------------------------------------------------


def bench_figure(results: list[dict], path: Path) -> str:
    """p50 latency per artifact and thread count, whiskers from p10-ish min to p90 (one run, fair ratios)."""
    names = [Path(r["artifact"]).name for r in results]
    threads = sorted({x["threads"] for r in results for x in r["results"]})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names) * len(threads)), 4))
    width = 0.8 / max(1, len(threads))
    for j, t in enumerate(threads):
        p50, err_lo, err_hi = [], [], []
        for r in results:
            row = next((x for x in r["results"] if x["threads"] == t), None)
            lat = (row or {}).get("latency_ms") or {}
            v = lat.get("p50") if lat.get("p50") is not None else lat.get("mean")
            p50.append(v if v is not None else np.nan)
            err_lo.append(max(0.0, (v or 0) - (lat.get("min") or v or 0)))
            err_hi.append(max(0.0, (lat.get("p90") or v or 0) - (v or 0)))
        x = np.arange(len(names)) + j * width - 0.4 + width / 2
        ax.bar(x, p50, width, yerr=[err_lo, err_hi], capsize=3, label=f"{t} thread{'s' if t > 1 else ''}")
    ax.set_xticks(np.arange(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("latency per image (ms), p50; whiskers min..p90")
    dev = ", ".join(sorted({r["device"] for r in results}))
    ax.set_title(f"Inference latency ({dev}); measured interleaved in one process")
    ax.legend()
    return save_png(fig, path)


def bench_table(results: list[dict]) -> str:
    rows = []
    for r in results:
        for x in r["results"]:
            lat, e2e = x.get("latency_ms") or {}, x.get("e2e_ms") or {}
            rows.append([Path(r["artifact"]).name, r["device"], (r.get("runtime") or {}).get("provider", "-"),
                         x["threads"], _f(lat.get("p50"), ".2f"), _f(lat.get("p90"), ".2f"), _f(lat.get("p99"), ".2f"),
                         _f(lat.get("mean"), ".2f"), _f(x.get("throughput_ips"), ".1f"), _f(x.get("init_ms"), ".1f"),
                         _f(x.get("first_inference_ms"), ".1f"), _f(e2e.get("p50"), ".2f"),
                         _f((r.get("size_bytes") or 0) / 1024, ".0f"), _f(x.get("rss_delta_mb"), ".0f"),
                         _f(x.get("peak_rss_mb"), ".0f")])
    return table(["artifact", "device", "provider", "threads", "p50 ms", "p90 ms", "p99 ms", "mean ms", "img/s",
                  "init ms", "first ms", "end-to-end p50 ms", "size KB", "RSS added MB", "process peak RSS MB"],
                 rows)
