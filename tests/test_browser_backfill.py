"""The all-skipped warning and its one-click backfill, in real Chromium."""
import json
import re

import pytest

from . import test_browser

# The browser tests' fixtures, used here under the same names (pytest finds fixtures among a module's names).
server, refused, page = test_browser.server, test_browser.refused, test_browser.page

pytestmark = pytest.mark.browser


def _upload(page, server: str, path, run_id: int) -> None:
    page.goto(server + "/")
    page.get_by_label("Files (JSON, JSON Lines, or gzip of either)").set_input_files(str(path))
    page.get_by_role("button", name="Upload and run").click()
    page.wait_for_url(re.compile(rf"/runs/{run_id}$"))
    page.locator('#run-status[data-status="succeeded"]').wait_for()


def test_a_file_older_than_the_watermark_warns_and_one_click_backfills_it(server, page, tmp_path):
    new, old = tmp_path / "new.jsonl", tmp_path / "old.jsonl"
    new.write_text(json.dumps({"key": "new", "name": "n", "value": 1, "ts": "2025-01-15T12:00:00Z"}) + "\n")
    old.write_text("".join(json.dumps({"key": f"old-{i}", "name": "o", "value": i, "ts": "2025-01-10T00:00:00Z"})
                           + "\n" for i in (1, 2)))
    _upload(page, server, new, 1)
    _upload(page, server, old, 2)
    warning = page.locator('#run-warnings li[data-warning="all_skipped"]')
    assert "all 2 records were older than the watermark 2025-01-15T12:00:00" in warning.inner_text()
    page.get_by_role("button", name="Run this file again as a backfill").click()
    page.wait_for_url(re.compile(r"/runs/3$"))
    page.locator('#run-status[data-status="succeeded"]').wait_for()
    assert page.locator("#backfill-of").inner_text() == "backfill of run #2"
    assert page.locator('tr[data-count="loaded"] td').inner_text() == "2"
    assert page.locator("#run-warnings").count() == 0
    page.goto(server + "/runs")
    assert page.locator('tr[data-run="2"] .warn-marker').count() == 1
    assert page.locator('tr[data-run="3"] .warn-marker').count() == 0
