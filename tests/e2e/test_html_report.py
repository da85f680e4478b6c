"""`protobench report --html`: the page a small real sweep writes, opened in a real headless browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from protobench.report.html import format_cell, leaves

pytestmark = pytest.mark.slow

#: 2 arms x 2 seeds on digits, three evaluations each: the smallest sweep with a baseline, a proto arm and intervals
#: (the last evaluation on its 100 samples too, not the per-class metrics' 1,280)
SWEEP = ["sweep", "--quiet", "--jobs", "1", "--conditioner", "random,proto-frozen", "--seed", "0,1",
         "--budget", "192", "--eval-every", "64", "--eval-samples", "100", "--metric", "intra-fid", "--metric", "fid",
         "-o", "batch_size=32", "-o", "denoiser.base_channels=8", "-o", "denoiser.num_res_blocks=1",
         "-o", "sampler.steps=5", "-o", "final_eval_samples=100", "-o", "few_final_samples=true"]


def protobench(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "protobench", *args], capture_output=True, text=True, env=env,
                          timeout=900)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, env):
    out = tmp_path_factory.mktemp("html") / "runs"
    done = protobench(*SWEEP, "--out", str(out), env=env)
    assert done.returncode == 0, done.stderr
    rows = json.loads(protobench("report", "--json", "--out", str(out), env=env).stdout)
    return out, done, rows


def test_the_sweep_writes_the_page_and_its_last_line_says_where(sweep):
    out, done, _ = sweep
    last = [line for line in done.stderr.splitlines() if line.strip()][-1]
    assert last == f"report: {out / 'report.html'}"
    assert (out / "report.html").is_file()


def test_the_page_references_nothing_on_the_network(sweep):
    text = (sweep[0] / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"https?://", text)
    assert re.findall(r'src="([^"]*)"', text) and all(s.startswith("data:image/png;base64,")
                                                     for s in re.findall(r'src="([^"]*)"', text))
    assert "<script" not in text


def test_report_html_flag_writes_the_same_table(sweep, env, tmp_path):
    out, _, rows = sweep
    page = tmp_path / "mine.html"
    done = protobench("report", "--out", str(out), "--html", str(page), env=env)
    assert done.returncode == 0, done.stderr
    cells = dict(re.findall(r'data-row="0" data-key="([^"]+)" data-value="[^"]*">([^<]*)<', page.read_text()))
    import html

    assert {k: html.unescape(v) for k, v in cells.items()} == {k: format_cell(v) for k, v in leaves(rows[0])}


def test_the_builder_imports_neither_torch_nor_training(sweep, env, tmp_path):
    """Reading results never imports training: the page is built from the records and the rows alone."""
    out, _, rows = sweep
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    code = ("import json, sys; from protobench.store import records; from protobench.report.html import build_html; "
            f"rows = json.load(open({str(tmp_path / 'rows.json')!r})); "
            f"page = build_html(rows, records({str(out)!r}, status='completed')); "
            "assert 'data:image/png' in page and '<svg' in page; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'protobench.training.run', "
            "'protobench.training.generation'))]; assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


def _browser():
    """A headless Debian Chromium driven by selenium, or a skip naming what is missing."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("needs selenium (pip install selenium) and Debian's chromium and chromium-driver packages")
    if chromium is None or driver is None:
        pytest.skip("needs a browser: apt-get install chromium chromium-driver (Debian packages)")
    return webdriver, Service, chromium, driver


def test_the_page_in_headless_chromium(sweep, tmp_path):
    webdriver, Service, chromium, driver = _browser()
    out, _, rows = sweep
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,1200"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(driver))
    try:
        browser.get((out / "report.html").resolve().as_uri())
        severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert severe == []
        cells = browser.execute_script(
            "return Array.from(document.querySelectorAll('#report td[data-key]')).map(td => "
            "[Number(td.dataset.row), td.dataset.key, td.dataset.value, td.textContent])")
        expected = {(i, key): value for i, row in enumerate(rows) for key, value in leaves(row)}
        assert {(i, key) for i, key, _, _ in cells} == set(expected), "a field of report --json is missing or extra"
        for i, key, value, text in cells:
            assert json.loads(value) == expected[(i, key)], key
            assert text == format_cell(expected[(i, key)]), key
        # the fields a reader looks for first are there, with their numbers
        assert any(key == "best.mean" for _, key, _, _ in cells)
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])")
        assert len(images) >= len(rows)  # a sample grid per arm
        assert all(complete and width > 0 for complete, width, _ in images), images
        assert browser.execute_script("return document.querySelectorAll('svg polyline').length") >= 3 * len(rows)
        assert "prototypes of" in browser.page_source  # the proto arm's picture
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1400, min(height + 40, 8000))
        shot = tmp_path / "report.png"
        assert browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("PROTOBENCH_SCREENSHOT"):  # where a person wants to look at it
            shutil.copyfile(shot, os.environ["PROTOBENCH_SCREENSHOT"])
    finally:
        browser.quit()


def test_a_moved_results_folder_still_shows_its_pictures(sweep, env, tmp_path):
    """The page reads each run's files under --out, not where the run was when it was indexed."""
    out, _, rows = sweep
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    try:
        done = protobench("report", "--out", str(moved), "--html", str(tmp_path / "page.html"), env=env)
        assert done.returncode == 0, done.stderr
        text = (tmp_path / "page.html").read_text()
        assert text.count('src="data:image/png;base64,') == len(rows)
        assert "no sample grid saved" not in text
    finally:  # the sweep is shared by this module's tests
        shutil.move(moved, out)
