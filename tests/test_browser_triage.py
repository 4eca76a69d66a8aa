"""Dead-letter triage in real Chromium: checkboxes and "all N matching" for bulk reopen, compact rows, phone width,
search inside the raw record."""
import json
import re

import pytest

from app.pipeline import discard, run_file

from . import test_browser
from .test_browser import SHOTS, chromium_tab, sign_in

server, refused, page = test_browser.server, test_browser.refused, test_browser.page

pytestmark = pytest.mark.browser
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def discarded(engine, tmp_path):
    """30 dead letters (invalid_value), all discarded; the 7th's record holds the word `needle`."""
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps({"key": f"k{i:02d}", "name": "needle in it" if i == 7 else f"n{i}",
                                          "value": "x" * 60, "ts": "2025-01-01T00:00:00Z"}) for i in range(1, 31)))
    with engine.connect() as conn:
        run_file(conn, path)
        discard(conn, list(range(1, 31)), reason="triage test")


def _selected(tab) -> str:
    return tab.locator("#selected-count").inner_text()


def test_reopen_checked_rows_then_all_matching(server, refused, discarded):
    with chromium_tab(refused, viewport=LAPTOP) as tab:
        sign_in(tab, server)
        tab.goto(server + "/dead-letters?status=discarded")
        rows = tab.locator("table#dead-letters tbody tr")
        assert rows.count() == 30
        # Compact rows: twenty of them take less than the laptop screen's height.
        top, bottom = rows.nth(0).bounding_box(), rows.nth(19).bounding_box()
        assert bottom["y"] + bottom["height"] - top["y"] < LAPTOP["height"] * 0.8
        tab.screenshot(path=f"{SHOTS}/dead-letters-triage.png")
        assert _selected(tab) == "0 selected"
        tab.get_by_label("Select dead letter 30").check()
        tab.get_by_label("Select dead letter 29").check()
        assert _selected(tab) == "2 selected"
        tab.get_by_role("button", name="Reopen…").click()
        tab.wait_for_url(re.compile(r"/dead-letters/bulk\?"))
        assert tab.locator("#bulk-count").inner_text() == "2"
        tab.get_by_role("button", name="Yes, reopen 2").click()
        tab.get_by_text("Reopened 2 dead letters.").wait_for()
        assert tab.locator("table#dead-letters tbody tr").count() == 28
        # The page's header checkbox picks every row of the page; "all matching" the whole filter.
        tab.get_by_label("Select every dead letter on this page").check()
        assert _selected(tab) == "28 selected"
        tab.get_by_label("Select every dead letter on this page").uncheck()
        tab.get_by_label("all 28 matching this filter").check()
        assert _selected(tab) == "all 28 matching selected"
        tab.get_by_role("button", name="Reopen…").click()
        assert tab.locator("#bulk-count").inner_text() == "28"
        tab.get_by_role("button", name="Yes, reopen 28").click()
        tab.get_by_text("Reopened 28 dead letters.").wait_for()
        assert "No dead letters match this filter." in tab.locator("main").inner_text()
        tab.goto(server + "/dead-letters")
        assert tab.locator("table#dead-letters tbody tr").count() == 30
        assert tab.locator("table#dead-letters tbody .status.open").count() == 30


def test_the_dead_letters_page_does_not_scroll_sideways_on_a_phone(server, refused, discarded):
    with chromium_tab(refused, viewport=PHONE) as tab:
        sign_in(tab, server)
        tab.goto(server + "/dead-letters?status=discarded")
        assert tab.evaluate("document.documentElement.scrollWidth <= innerWidth")
        assert tab.locator("div.scroll").first.evaluate("el => el.scrollWidth > el.clientWidth")  # scrolls inside
        tab.screenshot(path=f"{SHOTS}/phone-dead-letters-triage.png", full_page=True)


def test_search_inside_the_raw_record(server, page, discarded):
    page.goto(server + "/dead-letters?status=all")
    page.get_by_label("Text", exact=True).fill("needle")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"q=needle"))
    assert page.locator("table#dead-letters tbody tr").count() == 1
    assert page.locator("table#dead-letters tbody tr td.k").inner_text() == "k07"
