"""The HTML report in a real browser: headless Chromium loads it and every figure decodes and every table
renders. CI installs Chromium (Debian's `chromium`); elsewhere the test skips when no browser is found."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from PIL import Image

from robustft.api import fine_tune
from robustft.config import load_config
from robustft.report import render_report

pytestmark = pytest.mark.integration

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
PROBE = """<script>window.addEventListener('load', () => {
  const out = document.createElement('pre'); out.id = 'probe';
  out.textContent = JSON.stringify({
    images: [...document.images].map(i => ({ok: i.complete, w: i.naturalWidth, h: i.naturalHeight})),
    tables: [...document.querySelectorAll('table')].map(t => t.rows.length),
    sections: [...document.querySelectorAll('h2')].map(h => h.textContent)});
  document.body.appendChild(out);
});</script>"""


def _browser() -> str:
    if BROWSER is None:
        if os.environ.get("CI"):
            pytest.fail("CI must test the report in Chromium: install Debian's chromium (scripts/test.sh does)")
        pytest.skip("no Chromium found (apt-get install chromium)")
    return BROWSER


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--virtual-time-budget=10000", *args], capture_output=True, text=True, timeout=120)


def test_report_renders_in_chromium(tiny_overrides, tmp_path):
    _browser()
    runs = []
    for variant in (["objective.name=standard", "schedule.kind=fix", "schedule.t1=null", "schedule.t2=null"],
                    ["schedule.kind=fix", "schedule.t1=null", "schedule.t2=null"], []):
        name = variant[0].split("=")[1] if variant else "hinge"
        cfg = load_config(None, tiny_overrides + ["train.epochs=2", f"train.run_name={name}", *variant])
        runs.append(fine_tune(cfg).path)
    files = render_report(runs, tmp_path / "report")
    page = tmp_path / "probe.html"
    page.write_text(files.html.read_text().replace("</body>", PROBE + "</body>"))
    dom = _chromium("--dump-dom", page.as_uri())
    probe = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S).group(1).replace("&quot;", '"'))
    assert len(probe["images"]) == 4, probe
    assert all(i["ok"] and i["w"] > 200 and i["h"] > 100 for i in probe["images"]), probe["images"]
    assert len(probe["tables"]) == files.markdown.read_text().count("\n|---") and all(n >= 2 for n in probe["tables"])
    assert probe["sections"] == ["Results", "Fix vs schedules: paired t-tests", "Sanity checks",
                                 "Suboptimal-transfer diagnosis", "Figures", "All runs"]
    shot = tmp_path / "report.png"
    _chromium("--window-size=1300,4000", f"--screenshot={shot}", files.html.as_uri())
    with Image.open(shot) as img:
        grey = img.convert("L")
        assert img.size == (1300, 4000) and grey.getextrema()[0] < 60  # dark text and lines, not a blank page
        colours = img.convert("RGB").resize((130, 400)).getcolors(maxcolors=1 << 16)
        assert colours is not None and len(colours) > 50  # the plots' colours are on the page
