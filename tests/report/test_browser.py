"""The report in a real browser: headless Chromium opens it, every image decodes, nothing is fetched, no script error
is raised, and its screenshot is not blank. Skipped, with the reason, when Chromium is not installed (Debian:
``apt-get install -y chromium``; another binary: ``AGSEG_CHROMIUM=/path/to/chrome``)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agseg.report.html import build_report, write_report

REPO = Path(__file__).resolve().parents[2]
CXR = REPO / "docs" / "results" / "cxr_lungs"


def _chromium() -> str | None:
    env = os.environ.get("AGSEG_CHROMIUM")
    if env:
        return env
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless_shell")
    return next((p for n in names if (p := shutil.which(n))), None)


CHROMIUM = _chromium()
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Chromium not found (apt-get install -y chromium, or set AGSEG_CHROMIUM)"
    ),
]

# The flags that work in a sandboxed container as root, with no network and no first-run chores.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
)

# Injected into a copy of the page, first thing in <head>: records script errors, failed loads (capturing phase:
# an <img> error does not bubble) and console.error calls; after the load event writes what it found into the DOM.
CHECK = """<script>(function(){var errors=[];
window.addEventListener('error',function(e){errors.push('error: '+(e.message||(e.target&&(e.target.src||
e.target.href))||'load failed').toString().slice(0,200))},true);
window.addEventListener('unhandledrejection',function(e){errors.push('unhandled rejection: '+e.reason)});
var ce=console.error;console.error=function(){errors.push('console.error: '+Array.prototype.join.call(arguments,' '));
ce.apply(console,arguments)};
window.addEventListener('load',function(){var imgs=Array.prototype.slice.call(document.images);
var bad=imgs.filter(function(i){return !(i.complete&&i.naturalWidth>0&&i.naturalHeight>0)}).map(function(i){
return i.alt});var res=performance.getEntriesByType('resource').map(function(r){return r.name});
var pre=document.createElement('pre');pre.id='agseg-check';pre.textContent=JSON.stringify({images:imgs.length,
bad:bad,errors:errors,resources:res,height:document.documentElement.scrollHeight,
sections:document.querySelectorAll('section').length});document.body.appendChild(pre)})})();</script>"""


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    profile.mkdir(parents=True, exist_ok=True)
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=180, check=False)
    assert res.returncode == 0, f"chromium failed ({res.returncode}): {res.stderr[-2000:]}"
    return res


def check_in_browser(page: Path, tmp_path: Path) -> dict:
    """Open ``page`` in headless Chromium; return what the injected check found and take a screenshot."""
    text = page.read_text(encoding="utf-8")
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace('<meta charset="utf-8">', '<meta charset="utf-8">' + CHECK, 1), encoding="utf-8")
    res = _run(["--virtual-time-budget=15000", "--dump-dom", probe.as_uri()], tmp_path / "profile1")
    found = re.search(r'<pre id="agseg-check">(.*?)</pre>', res.stdout, re.S)
    assert found, f"the check did not run; stderr: {res.stderr[-1500:]}"
    result = json.loads(html.unescape(found.group(1)))
    result["console"] = [ln for ln in res.stderr.splitlines() if "CONSOLE" in ln and "Uncaught" in ln]
    shot = tmp_path / "screenshot.png"
    _run(["--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()], tmp_path / "profile2")
    assert shot.is_file(), "no screenshot written"
    result["screenshot"] = shot
    return result


def assert_rendered(result: dict, min_images: int) -> None:
    assert result["images"] >= min_images, result
    assert result["bad"] == [], f"images that did not decode: {result['bad']}"
    assert result["errors"] == [] and result["console"] == [], (result["errors"], result["console"])
    assert result["resources"] == [], f"the page fetched {result['resources']}"
    with Image.open(result["screenshot"]) as im:
        rgb = np.asarray(im.convert("RGB"))
    assert rgb.shape[:2] == (2400, 1280)
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    assert len(colours) > 50, f"the screenshot has {len(colours)} colour(s): blank"
    inked = (rgb.min(-1) < 200).mean()
    assert 0.01 < inked < 0.9, f"{inked:.1%} of the screenshot is ink"


def test_a_cv_report_renders_in_chromium(seg_cvs, tmp_path):
    rep = build_report([seg_cvs["unet"], seg_cvs["attention"]])
    page = write_report(rep, tmp_path / "report.html")[0]
    result = check_in_browser(page, tmp_path)
    assert_rendered(result, min_images=len(rep.figures))
    assert result["images"] == len(rep.figures) and result["sections"] == len(rep.sections)


def test_a_csv_only_report_renders_in_chromium(tmp_path):
    csvs = [CXR / f"{m}_metrics.csv" for m in ("unet", "attention_single", "attention_multi")]
    rep = build_report(csvs, labels=["U-Net", "single-gating AU-Net", "multi-gating AU-Net"], units="px")
    page = write_report(rep, tmp_path / "report.html")[0]
    assert_rendered(check_in_browser(page, tmp_path), min_images=len(rep.figures))


def test_a_classifier_report_renders_in_chromium(cls_cv, tmp_path):
    rep = build_report([cls_cv])
    page = write_report(rep, tmp_path / "report.html")[0]
    assert_rendered(check_in_browser(page, tmp_path), min_images=len(rep.figures))
