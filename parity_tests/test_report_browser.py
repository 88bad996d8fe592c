"""The report in a real browser: Debian's Chromium driven by Playwright (never a downloaded browser).

The page is opened from disk (``file://``) with the network unused: no console errors, no request other than the
page itself (and ``data:``/``blob:`` URLs), every chart drawn, one parity cell per framework pair, working links
and CSV downloads. Screenshots: the fixture report's next to it in a temporary directory; the real report's (built
when ``reports/asv/results`` has results) as ``reports/html/report.png``.

CI installs Chromium with ``.ci/install-browser.sh``; without ``/usr/bin/chromium`` these tests skip.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest

from reports import build, sample

CHROMIUM = Path(os.environ.get("REPORT_BROWSER", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parent.parent

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} not found: install it with .ci/install-browser.sh (Debian's chromium package)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


class Visit:
    """A page opened from disk, recording console messages, page errors and requests."""

    def __init__(self, browser, path: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.url = path.resolve().as_uri()
        self.page.goto(self.url, wait_until="load")

    def close(self) -> None:
        self.context.close()


def check_page(v: Visit) -> None:
    page = v.page
    bad_console = [m for m in v.console if m.startswith(("error", "warning"))]
    assert not bad_console and not v.errors, (bad_console, v.errors)
    external = [u for u in v.requests if u != v.url and not u.startswith(("data:", "blob:"))]
    assert not external, f"network requests: {external}"

    charts = page.locator("svg.chart")
    assert charts.count() > 0
    for i in range(charts.count()):
        chart = charts.nth(i)
        label = chart.get_attribute("aria-label")
        drawn = chart.locator("g.bar rect, g.nabar rect, path.trend, circle").count()
        assert drawn > 0, f"chart {label!r} has no bars, n/a slots or lines"
        box = chart.bounding_box()
        assert box and box["width"] > 200 and box["height"] > 80, label
    for section in ("throughput", "efficiency", "memory", "compile"):
        assert page.locator(f"#{section} svg.chart g.bar rect").count() > 0, f"no bars in {section}"


def check_parity(v: Visit, group: str | None = "forward") -> None:
    page = v.page
    matrices = page.locator(f'table.matrix[data-group="{group}"]' if group else "table.matrix")
    assert matrices.count() > 0
    for i in range(matrices.count()):
        m = matrices.nth(i)
        nrows, ncols = int(m.get_attribute("data-rows")), int(m.get_attribute("data-cols"))
        assert m.locator("tbody tr").count() == nrows
        assert m.locator("thead th").count() == ncols + 1
        assert m.locator("td.cell").count() == nrows * ncols  # one cell per pair
        for r in range(nrows):
            assert m.locator("tbody tr").nth(r).locator("td.cell").count() == ncols
    # a cell links to its detail row, which becomes the :target
    link = page.locator("table.matrix td.cell a").first
    target = link.get_attribute("href")
    assert target and target.startswith("#")
    link.click()
    assert page.evaluate("location.hash") == target
    row = page.locator(f"tr{target}")
    assert row.count() == 1 and row.evaluate("e => e.matches(':target')")
    assert row.locator("code").count() >= 2  # case and tensor name


def download_csv(v: Visit, table: str) -> list[list[str]]:
    page = v.page
    button = page.locator(f'button.csv[data-table="{table}"]')
    details = button.locator("xpath=ancestor::details[1]")
    if details.count():
        details.locator("summary").first.click()
    with page.expect_download() as info:
        button.click()
    download = info.value
    assert download.suggested_filename == f"{table}.csv"
    text = Path(download.path()).read_text(encoding="utf-8")
    return list(csv.reader(io.StringIO(text)))


def test_fixture_report_in_browser(browser, tmp_path):
    root = tmp_path / "inputs"
    sample.write_sample(root)
    out = build.build_report(root / "asv" / "results", root / "parity", tmp_path / "html" / "index.html")
    v = Visit(browser, out)
    try:
        check_page(v)
        check_parity(v)
        fwd = v.page.locator('table.matrix[data-group="forward"][data-dtype="float32"]')
        assert fwd.locator("td.cell").count() == 3 * 4  # torch, keras[tensorflow], jax × themselves + reference
        assert v.page.locator("#history svg.chart.line").count() > 0
        assert v.page.get_by_text("never got ready").count() > 0  # the missing framework shows n/a + reason
        rows = download_csv(v, "throughput")
        assert rows[0][:3] == ["variant", "role", "workload"] and len(rows) > 10
        assert any(r[0] == "flax-linen" and "never got ready" in r[-1] for r in rows[1:])
        v.page.screenshot(path=str(out.with_name("report.png")), full_page=True)
        assert out.with_name("report.png").stat().st_size > 10_000
        assert not [u for u in v.requests if not u.startswith(("file:", "data:", "blob:"))]
    finally:
        v.close()


def test_empty_report_in_browser(browser, tmp_path):
    out = build.build_report(tmp_path / "none", tmp_path / "none", tmp_path / "index.html")
    v = Visit(browser, out)
    try:
        assert not v.errors and not [m for m in v.console if m.startswith("error")]
        assert v.page.locator("svg.chart").count() == 0
        assert v.page.locator("#parity").get_by_text("no parity records").count() == 1
    finally:
        v.close()


def test_real_report_in_browser(browser):
    results = ROOT / "reports" / "asv" / "results"
    if not any(results.glob("*/*-*.json")):
        pytest.skip("no asv results in reports/asv/results yet (make bench writes them)")
    out = build.build_report(results, ROOT / "reports" / "parity", ROOT / "reports" / "html" / "index.html")
    v = Visit(browser, out)
    try:
        check_page(v)
        if v.page.locator("table.matrix").count():
            check_parity(v, group=None)  # whichever comparisons the last `make test` recorded
        v.page.screenshot(path=str(out.with_name("report.png")), full_page=True)
    finally:
        v.close()
