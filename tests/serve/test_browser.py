"""The web page in a real browser: Playwright drives Debian's Chromium (no browser download)
to submit prompts, watch the progress bar move and the images arrive, and save a screenshot.
Skipped only where no Chromium is installed (`.ci/run` installs it with apt)."""

from __future__ import annotations

import os
import shutil

import pytest
from serve_helpers import config, serving

from difflab.serve import Service

CHROMIUM = os.environ.get("DIFFLAB_CHROMIUM") or shutil.which("chromium") or shutil.which(
    "chromium-browser")
SCREENSHOT = os.environ.get("DIFFLAB_SCREENSHOT", "")  # also copy the screenshot here (docs)

pytestmark = pytest.mark.skipif(not CHROMIUM, reason="no Chromium on this machine "
                                "(apt-get install chromium); the browser test needs it")


def test_the_page_generates_with_progress_and_a_speedup(catalog, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    service = Service(catalog, config())
    with serving(service) as client, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 600})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.goto(str(client.base_url))
            page.wait_for_function("() => document.getElementById('plan').options.length == 2")
            page.fill("#prompt", "a red circle\ntwo blue squares")
            page.fill("#n", "2")
            page.fill("#steps", "30")
            page.fill("#seed", "100")
            page.click("#go")
            # the bar moves while sampling runs, then the images arrive
            page.wait_for_function("() => { const v = document.getElementById('progress')"
                                   ".value; return v > 0 && v < 1; }", polling="raf")
            page.wait_for_function("() => document.querySelectorAll('#grid img').length == 4 && "
                                   "[...document.querySelectorAll('#grid img')].every("
                                   "i => i.complete && i.naturalWidth == 32)")
            assert page.eval_on_selector("#progress", "p => p.value") == 1
            page.select_option("#plan", "deepcache-n2")
            page.click("#go")
            page.wait_for_function(
                "() => document.querySelectorAll('#history tbody tr').length == 2")
            speedup = page.inner_text("#history tbody tr:first-child td:last-child")
            assert speedup.endswith("x") and float(speedup[:-1]) > 0
            assert page.inner_text("#history tbody tr:last-child td:last-child") == "1 (no plan)"
            assert "faster than without the plan" in page.inner_text("#status")
            shot = tmp_path / "serve-page.png"
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert errors == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if SCREENSHOT:
        shutil.copy(shot, SCREENSHOT)
