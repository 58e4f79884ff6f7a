"""The deploy report in a real browser (headless Chromium, Debian's ``chromium`` package; CI installs it in
``.ci/run``): the page renders, its first screen answers the questions, the summary table fits a 1280 px window,
the page stays short at 1400 px, and every image and link it holds resolves.

The page itself has no script; the check copies it beside itself (so relative links still resolve) with a probe
script that writes what the browser measured into the DOM, which ``--dump-dom`` returns.

Run as a script to measure any report and take a screenshot of its first screen:
``python tests/test_report_browser.py deploy_report/report.html --screenshot bench/results/report_first_screen.png``
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--allow-file-access-from-files")

PROBE = """
<script>
window.addEventListener('load', () => {
  const table = document.querySelector('table.summary');
  const box = table ? table.getBoundingClientRect() : null;
  const devices = document.querySelector('table.devices');
  const dbox = devices ? devices.getBoundingClientRect() : null;
  const images = [...document.images].map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}));
  const out = {
    width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight,
    viewport: window.innerWidth, summary_right: box ? box.right : null, summary_bottom: box ? box.bottom : null,
    summary_top: box ? box.top : null, devices_bottom: dbox ? dbox.bottom : null,
    summary_scroll: table ? table.scrollWidth : null, images: images,
    verdict: (document.querySelector('.verdict') || {}).textContent || null,
    devices: (document.querySelector('table.devices') || {}).textContent || null,
  };
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def chromium() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def _run(browser: str, args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="egeunet-chromium-") as profile:
        return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                              timeout=timeout)


def measure(report: Path, width: int, height: int = 900, browser: str | None = None) -> dict:
    """Load ``report`` in headless Chromium at ``width`` x ``height`` and return what the probe measured."""
    browser = browser or chromium()
    report = Path(report).resolve()
    probe = report.with_name(f".probe_{report.name}")
    probe.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    try:
        result = _run(browser, [f"--window-size={width},{height}", "--virtual-time-budget=10000", "--dump-dom",
                                probe.as_uri()])
    finally:
        probe.unlink()
    found = re.search(r"<pre id=\"probe\">(.*?)</pre>", result.stdout, re.S)
    assert found, f"no probe output from {browser}: {result.stderr[-2000:]}"
    import html

    return {**json.loads(html.unescape(found.group(1))), "dom": result.stdout}


def screenshot(report: Path, png: Path, width: int = 1400, height: int = 900) -> None:
    result = _run(chromium(), [f"--window-size={width},{height}", f"--screenshot={Path(png).resolve()}",
                               Path(report).resolve().as_uri()])
    assert Path(png).is_file(), result.stderr[-2000:]


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "img" and a.get("src"):
            self.links.append(a["src"])


def unresolved_links(report: Path) -> list[str]:
    """Relative links and image sources of ``report`` whose file does not exist (anchors must name an element)."""
    text = Path(report).read_text()
    parser = _Links()
    parser.feed(text)
    ids = set(re.findall(r"\bid=['\"]([^'\"]+)['\"]", text))
    bad = []
    for link in parser.links:
        parts = urlsplit(link)
        if parts.scheme or parts.netloc:
            bad.append(f"{link} (not a local file: the report must work offline)")
        elif not parts.path:
            if parts.fragment and parts.fragment not in ids:
                bad.append(f"{link} (no element with that id)")
        elif not (Path(report).parent / unquote(parts.path)).exists():
            bad.append(link)
    return bad


# --- the test ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> str:
    found = chromium()
    if found is None:
        pytest.skip("headless Chromium is not installed (CI installs Debian's `chromium` in .ci/run; "
                    "locally: apt-get install chromium)")
    return found


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> Path:
    """A real deploy on the bundled sample: ONNX fp32 + int8 (calibrated, with its blame ranking) and Core ML fp32
    (exported; skipped by drift off macOS, with a long reason) plus Core ML int8 (not exportable off macOS)."""
    from egeunet_deploy.runtimes.deploy import deploy

    out = tmp_path_factory.mktemp("browser_deploy")
    deploy(out=out, targets=["onnx", "coreml"], precisions=["fp32", "int8"], threads=[1], runs=3, warmup=1,
           progress=False, quiet=True)
    return out


def test_report_renders_answers_first_and_fits(browser, deployed):
    report = deployed / "report.html"
    wide = measure(report, 1400, browser=browser)
    assert "PASSED" in wide["verdict"] or "FAILED" in wide["verdict"]
    # the first screen (900 px): the verdict, the whole device table, and the start of the every-artifact table
    assert wide["devices_bottom"] is not None and wide["devices_bottom"] < 900, wide["devices_bottom"]
    assert wide["summary_top"] is not None and wide["summary_top"] < 900, wide["summary_top"]
    # which artifact for which device, on the first screen too: an ONNX one for desktop CPUs, Core ML for Apple
    assert re.search(r"ONNX Runtime\)egeunet_(fp32|int8)\.onnx", wide["devices"]), wide["devices"]
    assert re.search(r"Core ML\)egeunet_fp32\.mlpackage", wide["devices"]), wide["devices"]
    assert wide["height"] < 6000, wide["height"]
    assert all(i["ok"] for i in wide["images"]), [i["src"] for i in wide["images"] if not i["ok"]]
    narrow = measure(report, 1280, browser=browser)
    assert narrow["summary_right"] <= narrow["viewport"], narrow  # the summary table fits a 1280 px window
    assert narrow["width"] <= narrow["viewport"], narrow  # and nothing makes the page scroll sideways
    assert unresolved_links(report) == []


def test_drift_report_renders_and_fits(browser, deployed):
    report = deployed / "drift" / "report.html"
    m = measure(report, 1280, browser=browser)
    assert m["width"] <= m["viewport"], m
    assert m["height"] < 6000, m["height"]
    assert all(i["ok"] for i in m["images"]), [i["src"] for i in m["images"] if not i["ok"]]
    assert unresolved_links(report) == []


def test_the_check_fails_on_a_broken_page(browser, tmp_path):
    """The measurements can fail: a missing image, a dead link and a table wider than the window are caught."""
    page = tmp_path / "report.html"
    wide_row = "".join(f"<td>column{i}_with_a_long_unbreakable_value</td>" for i in range(12))
    page.write_text(f"<!doctype html><html><body><p class='verdict'>PASSED</p><table class='summary'><tr>{wide_row}"
                    f"</tr></table><img src='missing.png'><a href='drift/report.html'>x</a></body></html>")
    m = measure(page, 1280, browser=browser)
    assert m["summary_right"] > m["viewport"] and m["width"] > m["viewport"]
    assert [i["ok"] for i in m["images"]] == [False]
    assert sorted(unresolved_links(page)) == ["drift/report.html", "missing.png"]


if __name__ == "__main__":  # measure a report by hand: python tests/test_report_browser.py REPORT [--screenshot PNG]
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("report", type=Path)
    ap.add_argument("--screenshot", type=Path, default=None)
    a = ap.parse_args()
    if chromium() is None:
        sys.exit("chromium not found")
    for w in (1280, 1400):
        m = measure(a.report, w)
        m.pop("dom")
        broken = [i["src"] for i in m.pop("images") if not i["ok"]]
        print(f"window {w}px: page {m['width']} x {m['height']} px, summary table right edge {m['summary_right']}, "
              f"top {m['summary_top']}, bottom {m['summary_bottom']}; device table bottom {m['devices_bottom']}; "
              f"broken images {broken}")
    print(f"unresolved links: {unresolved_links(a.report)}")
    if a.screenshot:
        screenshot(a.report, a.screenshot)
        print(f"screenshot: {a.screenshot}")
