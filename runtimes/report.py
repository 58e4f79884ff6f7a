"""Pictures and HTML for the drift report, the benchmark and the deploy page.

Figures are matplotlib (Agg) PNGs written atomically next to the JSON they illustrate; the HTML references them
by relative path, so a report folder can be zipped, attached to CI or opened from disk as is. The page is plain
HTML + inline CSS (no scripts, nothing fetched from the network).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from egeunet_deploy.model.figures import GT_RGB, PRED_RGB, difference_map, image_grid, plt, save_png  # sets Agg
from egeunet_deploy.model.predict import overlay

STATUS_COLORS = {"passed": "#1a7f37", "failed": "#cf222e", "error": "#cf222e", "skipped": "#9a6700"}
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#1f2328}
h1{font-size:1.6em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #d0d7de;padding:.3em .6em}
th{background:#f6f8fa;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
.status{font-weight:600;color:#fff;border-radius:4px;padding:.1em .5em}img{max-width:100%;border:1px solid #d0d7de}
.note{color:#57606a;font-size:.9em}code{background:#f6f8fa;padding:.1em .3em;border-radius:3px}
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
        ax.set_title(title, fontsize=10)
        if limit_key == "prob_abs_max":
            ax.set_xscale("log")
        if limit_key == "agreement_dsc_min":
            ax.set_xlim(min(min(values), 0.98) - 0.002, 1.0005)
    axes[0].set_yticks(y, names)
    axes[0].invert_yaxis()
    fig.suptitle("Drift vs PyTorch (black ticks: tolerance; green passed, red failed)", fontsize=11, y=1.03)
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
    deltas = [100 * b["dsc_delta"] for b in blame]
    ax.barh(range(len(blame)), deltas, color=["#cf222e" if d < 0 else "#2da44e" for d in deltas])
    ax.set_yticks(range(len(blame)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="#57606a", lw=0.8)
    ax.set_xlabel("pooled DSC change when only this block is int8 (points)")
    ax.set_title(f"int8 blame: {rec['name']}", fontsize=9)
    return save_png(fig, out / f"blame_{tag}_{_safe(rec['name'])}.png")


def worst_overlays(rec: dict, data_set, ref, art, out: Path, tag: str = "") -> str:
    """Rows = the images where the artifact flips most pixels: ground truth, PyTorch, artifact, difference."""
    rows, subtitles = [], []
    for w in rec["worst"]:
        i = w["index"]
        img = data_set.images[i]
        rows.append((overlay(img, data_set.masks[i], color=GT_RGB), overlay(img, ref.masks[i], color=PRED_RGB),
                     overlay(img, art.masks[i], color=PRED_RGB), difference_map(img, art.masks[i], ref.masks[i])))
        subtitles.append((w["name"], f"DSC {w['reference_dsc']:.3f}", f"DSC {w['artifact_dsc']:.3f}",
                          f"{w['flipped_pixels']} px flipped, agree {w['agreement_dsc']:.4f}"))
    titles = ("ground truth", "PyTorch reference", rec["name"], "difference (red: artifact only, blue: ref only)")
    return save_png(image_grid(rows, subtitles, titles), out / f"worst_{tag}_{_safe(rec['name'])}.png")


# --- HTML -------------------------------------------------------------------------------------------------------


def esc(x) -> str:
    return html.escape(str(x))


def table(headers: list[str], rows: list[list], raw_cols: tuple[int, ...] = ()) -> str:
    """An HTML table; numbers right-aligned; columns in ``raw_cols`` are trusted HTML built here."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for j, v in enumerate(row):
            if j in raw_cols:
                cells.append(f"<td>{v}</td>")
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                cells.append(f"<td class='num'>{esc(v)}</td>")
            else:
                cells.append(f"<td>{esc(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def status_badge(status: str | None) -> str:
    s = status or "-"
    return f"<span class='status' style='background:{STATUS_COLORS.get(s, '#57606a')}'>{esc(s.upper())}</span>"


def img(src: str | None, alt: str = "") -> str:
    return f"<p><img src='{esc(src)}' alt='{esc(alt)}'></p>" if src else ""


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>{body}</body></html>\n")


def _f(x, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def drift_table(report: dict) -> str:
    rows = []
    for r in report["artifacts"]:
        rt = r.get("runtime", {})
        runtime = f"{rt.get('backend', '-')} {rt.get('version') or ''} / {rt.get('provider', '-')}"
        if "pooled" in r:
            ci = r["per_image"]["delta_dsc"]["ci95"]
            rows.append([r["name"], r["format"], r["precision"], runtime, _f(r["pooled"]["miou"]),
                         _f(r["pooled"]["dsc"]), _f(r["delta"]["dsc"], "+.5f"), f"[{ci[0]:+.4f}, {ci[1]:+.4f}]",
                         _f(r["agreement"]["dsc"]), _f(100 * r["agreement"]["flipped_fraction"], ".3f"),
                         _f(r["prob_diff"]["max"], ".2e"), _f(r["prob_diff"]["mean"], ".2e"),
                         status_badge(r["status"]), r.get("reason") or ""])
        else:
            rows.append([r["name"], r["format"], r["precision"], runtime] + ["-"] * 8
                        + [status_badge(r["status"]), r.get("reason") or ""])
    return table(["artifact", "format", "precision", "runtime / provider", "mIoU", "DSC", "ΔDSC",
                  "per-image ΔDSC 95% CI", "agreement", "flipped %", "max |Δp|", "mean |Δp|", "status", "reason"],
                 rows, raw_cols=(12,))


def drift_body(report: dict, prefix: str = "") -> str:
    """The drift section; ``prefix`` is the relative folder of the figures (deploy embeds it from one level up)."""
    ref = report["reference"]
    s = report["summary"]
    parts = [f"<p>{report['n_images']} images of <code>{esc(report['data'])}</code> [{esc(report['split'])}]. "
             f"PyTorch reference <code>{esc(Path(ref['file']).name)}</code> (sha256 {esc(ref['weights_sha256'][:12])}"
             f"...): pooled mIoU {ref['pooled']['miou']:.4f}, DSC {ref['pooled']['dsc']:.4f}; per-image mIoU "
             f"{ref['per_image']['miou']:.4f}, DSC {ref['per_image']['dsc']:.4f}.</p>",
             f"<p>{s['passed']} passed, {s['failed']} failed, {s['error']} errors, {s['skipped']} skipped "
             f"(skipped: the runtime cannot execute here; the reason is given).</p>",
             drift_table(report)]
    parts.append(skipped_note(report.get("skipped_files")))
    figs = report.get("figures", {})
    for key in ("summary", "ci", "strata"):
        parts.append(img(prefix + figs[key], key) if key in figs else "")
    parts.append("<h3>Drift by lesion size</h3>")
    rows = []
    for r in _measured(report):
        for st in r["strata"]:
            rows.append([r["name"], st["name"], st["n"], _f(st.get("reference_dsc")), _f(st.get("artifact_dsc")),
                         _f(st.get("delta_dsc"), "+.5f"), _f(st.get("agreement_dsc")),
                         _f(100 * st["flipped_fraction"] if "flipped_fraction" in st else None, ".3f")])
    parts.append(table(["artifact", "lesion size", "images", "reference DSC", "artifact DSC", "ΔDSC", "agreement",
                        "flipped %"], rows))
    blamed = [r for r in _measured(report) if r.get("int8_blame")]
    if blamed:
        parts.append("<h3>int8 blame</h3><p class='note'>Each block of the network quantized alone (the artifact's "
                     "recipe and calibration ranges), ranked by the pooled DSC it costs against the float artifact; "
                     "this ranking chose which blocks the default recipe keeps float.</p>")
    for r in blamed:
        rows = [[b["block"], _f(100 * b["dsc_delta"], "+.3f"), _f(b.get("agreement")),
                 "int8" if b.get("quantized_in_artifact", True) else "float"] for b in r["int8_blame"]]
        parts.append(f"<h4>{esc(r['name'])}</h4>")
        parts.append(table(["block", "ΔDSC when quantized alone (points)", "agreement", "in this artifact"], rows))
        parts.append(img(prefix + r["blame_png"], "int8 blame") if r.get("blame_png") else "")
    parts.append("<h3>Worst images per artifact</h3><p class='note'>The 8 images where the artifact's mask differs "
                 "from PyTorch's in the most pixels.</p>")
    for r in _measured(report):
        checks = ", ".join(f"{c['name']} {c['value']:.4g} {c['op']} {c['limit']:g} "
                           f"{'ok' if c['passed'] else 'FAIL'}" for c in r.get("checks", []))
        parts.append(f"<h4>{esc(r['name'])} {status_badge(r['status'])}</h4><p class='note'>{esc(checks)}</p>")
        parts.append(img(prefix + r["overlay_png"], r["name"]) if r.get("overlay_png") else "")
    return "".join(parts)


def skipped_note(skipped: list[str] | None) -> str:
    """The files ``--skip-bad`` passed over, so a report never hides that it ran on fewer images than the split has."""
    if not skipped:
        return ""
    items = "".join(f"<li><code>{esc(s)}</code></li>" for s in skipped)
    return f"<p class='note'>Skipped {len(skipped)} unpaired or unreadable file(s) (--skip-bad):</p><ul>{items}</ul>"


def drift_html(report: dict) -> str:
    verdict = "PASSED" if report["passed"] else "FAILED"
    return page(f"EGE-UNet drift report: {verdict}", drift_body(report))


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
