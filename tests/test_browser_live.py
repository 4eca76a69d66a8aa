"""The live run page and the finish notice in real Chromium (issue 11): a run held at chosen points by its
progress reporter, so the test sees it running, its counts growing, and its outcome, without a reload."""
import io
import json
import re
import threading

import pytest

from app.accounts.actor import Actor
from app.runs import ProgressReporter

from . import test_browser
from .pipeline_helpers import rec
from .test_browser import SHOTS, chromium_tab, served, sign_in

pytestmark = pytest.mark.browser
refused = test_browser.refused


class Gates:
    """Hold a run's progress reporter, once each, where `points` say: (phase, least records read)."""

    def __init__(self, monkeypatch, *points):
        self.points = list(points)
        self.reached = [threading.Event() for _ in points]
        self.go = [threading.Event() for _ in points]
        original = ProgressReporter.__call__

        def call(reporter, phase, records, nbytes):
            original(reporter, phase, records, nbytes)
            for i, (at, least) in enumerate(self.points):
                if phase == at and records >= least and not self.reached[i].is_set():
                    self.reached[i].set()
                    assert self.go[i].wait(60), "the test never let the run go on"

        monkeypatch.setattr(ProgressReporter, "__call__", call)

    def wait(self, i: int) -> None:
        assert self.reached[i].wait(60), f"the run never reached {self.points[i]}"

    def release(self, i: int) -> None:
        self.go[i].set()

    def release_all(self) -> None:
        for go in self.go:
            go.set()


@pytest.fixture
def site(db_url, tmp_path, monkeypatch, password_hash):
    """The served app (url, its run service) with an administrator `admin`; every progress report is written."""
    from app.accounts.users import create_user
    from app.extensions import db

    with served(db_url, tmp_path, monkeypatch) as (url, app):
        with app.app_context(), db.engine.connect() as conn:
            create_user(conn, "admin", "admin", Actor(label="test"), password_hash=password_hash)
        svc = app.extensions["sluice_runs"]
        svc.progress_interval = 0
        yield url, svc


def jsonl(records) -> io.BytesIO:
    return io.BytesIO("".join(json.dumps(r) + "\n" for r in records).encode())


def cell(page, name: str) -> str:
    return page.locator(f'tr[data-count="{name}"] td').inner_text()


def test_a_live_run_page_shows_it_running_its_counts_growing_and_its_outcome_without_a_reload(
        site, monkeypatch, refused):
    url, svc = site
    # Some 2 MiB of records, every tenth one rejected: the reader reports after each 1 MiB chunk.
    records = [rec(key=f"k{i:06d}", name="n" * 40, value="abc" if i % 10 == 0 else i) for i in range(20_000)]
    gates = Gates(monkeypatch, ("reading", 1), ("classifying", 0))
    svc.submit(jsonl(records), "big.jsonl")
    gates.wait(0)
    try:
        with chromium_tab(refused) as page:
            sign_in(page, url)
            page.goto(url + "/runs/1")
            page.evaluate("window.__marker = 1")
            assert page.locator("#run-status").get_attribute("data-status") == "running"
            assert page.locator("#run-phase").inner_text() == "Reading the file"
            assert page.locator("#run-started time").count() == 1
            first = int(cell(page, "input_records").replace(",", ""))
            assert 0 < first < 20_000 and int(cell(page, "rejected").replace(",", "")) > 0
            page.screenshot(path=f"{SHOTS}/live-run-reading.png", full_page=True)
            gates.release(0)
            gates.wait(1)  # read to the end, held before it is checked against the table
            expect = pytest.importorskip("playwright.sync_api").expect  # polls without eval, which the CSP refuses
            expect(page.locator('tr[data-count="input_records"] td')).to_have_text("20,000")
            assert cell(page, "rejected") == "2,000" and cell(page, "skipped") == "0"
            expect(page.locator("#run-phase")).to_have_text("checking against the table")
            assert page.locator("#run-percent").inner_text() == "100%"
            gates.release(1)
            page.locator('#run-status[data-status="succeeded"]').wait_for()
            assert page.locator("#live").count() == 0
            assert (cell(page, "inserted"), cell(page, "lineage_entries")) == ("18,000", "38,000")
            assert page.locator("#run-finished time").count() == 1
            assert "Download summary (JSON)" in page.locator("main").inner_text()
            assert page.evaluate("window.__marker") == 1  # the outcome came in without a reload
            page.screenshot(path=f"{SHOTS}/live-run-done.png", full_page=True)
    finally:
        gates.release_all()


def test_the_home_page_tells_me_when_my_run_finishes(site, monkeypatch, refused):
    url, svc = site
    gates = Gates(monkeypatch, ("reading", 0))
    svc.submit(jsonl([rec(key="a"), rec(key="b")]), "theirs.jsonl", actor=Actor(label="someone else"))
    mine = svc.submit(jsonl([rec(key="c"), rec(key="d", value="abc"), rec(key="e")]), "mine.jsonl",
                      actor=Actor(label="admin"))
    gates.wait(0)
    try:
        with chromium_tab(refused) as page:
            sign_in(page, url)
            page.goto(url + "/")
            page.evaluate("window.__marker = 1")
            assert page.locator(f'tr[data-run="{mine}"]').get_attribute("data-status") == "queued"
            gates.release(0)
            notice = page.locator(f'#run-notices .run-notice[data-run="{mine}"]')
            notice.wait_for()
            assert re.fullmatch(rf"Run #{mine} finished: succeeded, 2 loaded Dismiss", notice.inner_text())
            assert notice.get_by_role("link", name=f"Run #{mine}").get_attribute("href") == f"/runs/{mine}"
            assert page.locator(".run-notice").count() == 1  # none for the run of someone else
            row = page.locator(f'tr[data-run="{mine}"]')
            assert row.get_attribute("data-status") == "succeeded"
            assert (row.locator('[data-live="loaded"]').inner_text(), row.locator('[data-live="rejected"]')
                    .inner_text()) == ("2", "1")
            assert page.evaluate("window.__marker") == 1
            notice.get_by_role("button", name="Dismiss").click()
            assert page.locator(".run-notice").count() == 0
    finally:
        gates.release_all()
