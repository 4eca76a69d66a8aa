"""A newcomer's first start in real Chromium: the setup link, sign in, upload, and the audit log showing it."""
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .conftest import SAMPLE_INPUT
from .test_browser import SHOTS, chromium_tab, served

pytestmark = pytest.mark.browser
NAME, SECRET = "ada", "a long first password"


@pytest.fixture
def first_start(db_url, tmp_path, monkeypatch):
    """The served app on a database with no user, as `scripts/serve.sh` starts it: (its URL, its instance folder)."""
    with served(db_url, tmp_path, monkeypatch, secret_key="first start") as (url, _app):
        yield url, tmp_path / "instance"


@pytest.fixture
def tab():
    with chromium_tab([]) as page:
        yield page


def test_first_start_setup_sign_in_upload_and_the_audit_log_shows_it(first_start, tab):
    server, instance = first_start
    # What the newcomer is given: the link serve.sh printed, also in instance/setup-link.txt.
    link = re.search(r"https?://\S+/setup/\S+", Path(instance, "setup-link.txt").read_text()).group(0)
    setup_path = urlsplit(link).path

    tab.goto(server + "/")  # nobody is signed in: the sign-in page, which says how to begin
    tab.wait_for_url(re.compile(r"/sign-in\?next=(/|%2F)$"))
    assert "no users yet" in tab.locator("main").inner_text()

    tab.goto(server + setup_path)
    tab.get_by_label("User name").fill(NAME)
    tab.get_by_label("Password", exact=True).fill(SECRET)
    tab.get_by_label(re.compile("again|repeat", re.IGNORECASE)).fill(SECRET)
    tab.get_by_role("button", name=re.compile("Create the administrator")).click()
    tab.wait_for_url(re.compile(r"/$"))
    assert tab.locator("#who-name").inner_text() == NAME and tab.locator("#who-role").inner_text() == "admin"
    tab.screenshot(path=f"{SHOTS}/first-start-home.png", full_page=True)

    tab.get_by_role("button", name="Sign out").click()
    tab.wait_for_url(re.compile(r"/sign-in$"))
    tab.goto(server + setup_path)  # the link worked once
    assert tab.locator("h1").inner_text() == "Setup link not valid"

    tab.goto(server + "/")
    tab.get_by_label("User name").fill(NAME)
    tab.get_by_label("Password").fill(SECRET)
    tab.get_by_role("button", name="Sign in").click()
    tab.wait_for_url(re.compile(r"/$"))

    tab.get_by_label("Files (JSON, JSON Lines, or gzip of either)").set_input_files(str(SAMPLE_INPUT))
    tab.get_by_role("button", name="Upload and run").click()
    tab.wait_for_url(re.compile(r"/runs/1$"))
    tab.locator('#run-status[data-status="succeeded"]').wait_for()

    tab.get_by_role("link", name="Audit").click()
    tab.wait_for_url(re.compile(r"/audit"))
    tab.screenshot(path=f"{SHOTS}/first-start-audit.png", full_page=True)
    rows = tab.locator("table tbody tr").all_inner_texts()
    upload = next(row for row in rows if "uploaded a file" in row)
    assert NAME in upload and "sample_input.json" in upload and "127.0.0.1" in upload
    assert any("setup link" in row and "created the first administrator" in row for row in rows)
    assert sum(f"{NAME}\tsigned in" in row for row in rows) == 1
    assert sum(f"{NAME}\tsigned out" in row for row in rows) == 1
