"""The dashboard in real Chromium (Debian's package, driven by Playwright) against a served app with its worker."""
import csv
import io
import json
import os
import re
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from app.pipeline import run_file

from .conftest import PASSWORD, SAMPLE_INPUT

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
SHOTS = os.environ.get("SLUICE_SCREENSHOTS", "/tmp/sluice-screens")


@contextmanager
def served(db_url, tmp_path, monkeypatch, secret_key: str = "browser"):
    """The app on this test's database, served over HTTP in a thread with the embedded worker on: (url, app)."""
    from app import create_app
    from app.extensions import db

    monkeypatch.setenv("SLUICE_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app({"SQLALCHEMY_DATABASE_URI": db_url, "SECRET_KEY": secret_key,
                      "SLUICE_UPLOAD_DIR": str(tmp_path / "uploads"), "SLUICE_EMBEDDED_WORKER": True})
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}", app
    finally:
        http.shutdown()
        thread.join(10)
        executor = app.extensions["sluice_runs"].executor
        if executor is not None:
            executor.stop()
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def server(db_url, tmp_path, monkeypatch, password_hash):
    """The served app (see `served`) with an administrator `admin` (password PASSWORD)."""
    from app.accounts.actor import Actor
    from app.accounts.users import create_user
    from app.extensions import db

    with served(db_url, tmp_path, monkeypatch) as (url, app):
        with app.app_context(), db.engine.connect() as conn:
            create_user(conn, "admin", "admin", Actor(label="test"), password_hash=password_hash)
        yield url


@pytest.fixture
def refused():
    """What the Content-Security-Policy refused on the pages of a test, as Chromium reports it."""
    return []


@contextmanager
def chromium_tab(refused: list, **context_options):
    """A tab of Debian's Chromium (skipped without it), its context made with `context_options`, noting CSP refusals."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed")
    os.makedirs(SHOTS, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(**{"accept_downloads": True, "viewport": {"width": 1280, "height": 900},
                                         **context_options})
        context.set_default_timeout(30_000)
        tab = context.new_page()
        # Chromium reports every resource, inline script or style the Content-Security-Policy blocks
        # on the console; the pages must need none of that.
        tab.on("console", lambda message: refused.append(message.text)
               if "Content Security Policy" in message.text else None)
        tab.add_init_script("document.addEventListener('securitypolicyviolation', e => console.error("
                            "'Content Security Policy violation: ' + e.violatedDirective + ' ' + e.blockedURI))")
        yield tab
        context.close()
        browser.close()
    assert refused == [], refused


@pytest.fixture
def page(server, refused):
    """A Chromium tab signed in as the administrator through the sign-in page."""
    with chromium_tab(refused) as tab:
        sign_in(tab, server)
        yield tab


def sign_in(page, server: str, name: str = "admin", password: str = PASSWORD) -> None:
    """Sign in through the real sign-in page, to which a first visit is sent, and come back to the page asked for."""
    page.goto(server + "/runs")
    page.wait_for_url(re.compile(r"/sign-in\?next=(/|%2F)runs$"))
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/runs$"))


def _count(page, name: str) -> str:
    return page.locator(f'tr[data-count="{name}"] td').inner_text()


def test_upload_with_the_picker_and_watch_the_run_finish(server, page):
    page.goto(server + "/")
    page.screenshot(path=f"{SHOTS}/home-empty.png", full_page=True)
    page.get_by_label("Files (JSON, JSON Lines, or gzip of either)").set_input_files(str(SAMPLE_INPUT))
    assert "sample_input.json" in page.locator("#chosen").inner_text()
    page.get_by_role("button", name="Upload and run").click()
    page.wait_for_url(re.compile(r"/runs/1$"))
    page.locator('#run-status[data-status="succeeded"]').wait_for()  # the page reloads itself when the run ends
    assert (_count(page, "input_records"), _count(page, "inserted"), _count(page, "rejected")) == ("7", "5", "2")
    assert _count(page, "lineage_entries") == "12"
    page.screenshot(path=f"{SHOTS}/run-page.png", full_page=True)
    page.goto(server + "/")
    assert page.locator('tr[data-run="1"] .status').inner_text() == "succeeded"
    page.screenshot(path=f"{SHOTS}/home-after.png", full_page=True)


def test_edit_a_dead_letter_and_retry_it(server, page, engine):
    with engine.connect() as conn:
        run_file(conn, SAMPLE_INPUT)
    page.goto(server + "/dead-letters?error=invalid_value")
    page.screenshot(path=f"{SHOTS}/dead-letters.png", full_page=True)
    page.locator("table#dead-letters").get_by_role("link", name="Edit…").click()
    editor = page.get_by_label("Edit the record (JSON), then retry it")
    record = json.loads(editor.input_value())
    assert record["value"] == "abc"
    record["value"] = 17.5
    editor.fill(json.dumps(record, indent=2))
    page.screenshot(path=f"{SHOTS}/dead-letter-edit.png", full_page=True)
    page.get_by_role("button", name="Retry with this record").click()
    page.get_by_text("resolved by run #2: inserted").wait_for()
    assert page.locator("h1 .status").inner_text() == "resolved"
    page.get_by_role("link", name="evt-004").first.click()
    page.wait_for_url(re.compile(r"/lineage/evt-004$"))
    steps = page.locator("#timeline .step").all_inner_texts()
    assert steps[:3] == ["reprocessed", "staged", "inserted"] and steps[-1] == "rejected"  # by run, in order
    assert page.locator("#current-row").get_by_text("17.5").count() == 1
    page.screenshot(path=f"{SHOTS}/lineage.png", full_page=True)


def _rows(n: int) -> list[dict]:
    return [{"key": f"key-{i:04d}", "name": ("=HYPERLINK()" if i == 3 else f"name {i}"), "value": -i,
             "ts": f"2025-01-{1 + i % 28:02d}T00:00:00Z"} for i in range(n)]


def _load(engine, tmp_path, records):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    with engine.connect() as conn:
        run_file(conn, path)


def test_export_the_target_as_csv(server, page, engine, tmp_path):
    _load(engine, tmp_path, _rows(20))
    page.goto(server + "/target?key=key-000")
    with page.expect_download() as info:
        page.get_by_role("link", name="CSV").click()
    download = info.value
    rows = list(csv.reader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert download.suggested_filename == "sluice-target.csv"
    assert rows[0][:3] == ["key", "name", "value"]
    assert [r[0] for r in rows[1:]] == [f"key-{i:04d}" for i in range(10)]
    assert rows[4][1] == "'=HYPERLINK()" and rows[4][2] == "-3"


def test_page_through_the_target_to_the_end(server, page, engine, tmp_path):
    _load(engine, tmp_path, _rows(130))
    page.goto(server + "/target")
    seen = []
    for _ in range(10):
        seen += page.locator("table#target a.key").all_inner_texts()
        following = page.get_by_role("link", name="Next ›")
        if following.count() == 0:
            break
        following.click()
        page.wait_for_load_state()
    assert seen == [f"key-{i:04d}" for i in range(130)]
    page.get_by_role("link", name="« First").click()
    page.get_by_role("link", name="Last »").click()
    assert page.locator("table#target a.key").all_inner_texts() == [f"key-{i:04d}" for i in range(80, 130)]
    page.screenshot(path=f"{SHOTS}/target-last.png", full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(server + "/target")
    page.screenshot(path=f"{SHOTS}/target-phone.png", full_page=True)
    page.goto(server + "/runs")
    page.screenshot(path=f"{SHOTS}/runs-phone.png", full_page=True)


def test_drop_a_file_on_the_upload_area(server, page):
    page.goto(server + "/")
    page.evaluate("""() => {
        const data = new DataTransfer();
        data.items.add(new File(['{"key": "dropped", "name": "n", "value": 1, "ts": "2025-01-01T00:00:00Z"}'],
                                "dropped.json", {type: "application/json"}));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
    }""")
    assert "dropped.json" in page.locator("#chosen").inner_text()
    page.get_by_role("button", name="Upload and run").click()
    page.wait_for_url(re.compile(r"/runs/1$"))
    page.locator('#run-status[data-status="succeeded"]').wait_for()
    assert _count(page, "inserted") == "1"
    page.get_by_label("Jump to a key's lineage").fill("dropped")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/lineage/dropped$"))
    assert page.locator("#timeline .step").all_inner_texts() == ["staged", "inserted"]


def test_the_policy_refuses_inline_code_and_framing(server, page, refused):
    page.goto(server + "/runs")
    page.evaluate("""() => { const s = document.createElement('script'); s.textContent = 'window.ran = 1';
                             document.body.appendChild(s); }""")
    assert page.evaluate("() => window.ran") is None
    page.wait_for_function("() => true")
    assert any("script-src" in text for text in refused), refused
    refused.clear()
    page.set_content(f'<iframe src="{server}/runs" title="framed"></iframe>')
    page.wait_for_timeout(1000)
    assert any("frame-ancestors" in text for text in refused), refused
    refused.clear()


def test_the_runs_chart_is_drawn_under_the_policy(server, page, engine):
    with engine.connect() as conn:
        run_file(conn, SAMPLE_INPUT)
    page.goto(server + "/runs")
    bar = page.locator("figure.chart rect.loaded").first
    assert bar.get_attribute("height") != "0.0" and bar.bounding_box()["height"] > 0
    assert page.locator("figure#runs-chart").evaluate("e => getComputedStyle(e.querySelector('rect.loaded')).fill") \
        not in ("", "none", "rgb(0, 0, 0)")  # the stylesheet's colours apply


def test_create_a_dataset_from_a_proposed_shape_upload_to_it_and_browse_it(server, page, tmp_path):
    name = f"shop_{os.getpid()}_{threading.get_ident() % 1000}"  # PostgreSQL keeps the catalogue between tests
    records = [{"order_id": f"o{i:02d}", "customer": f"{'acme' if i % 2 else 'zenith'} {i}", "total": i * 2.5,
                "paid": i % 2 == 0, "updated_at": f"2025-03-{1 + i:02d}T08:00:00Z"} for i in range(12)]
    sample = tmp_path / "shop.jsonl"
    sample.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    page.goto(server + "/")
    page.get_by_role("link", name="Datasets", exact=True).click()
    page.get_by_role("link", name="New dataset…").click()
    page.get_by_label("Sample file").set_input_files(str(sample))
    page.get_by_role("button", name="Propose a shape").click()
    page.locator("#proposal-notes").wait_for()
    assert page.get_by_label("Key field").input_value() == "order_id"
    assert page.get_by_label("Version field").input_value() == "updated_at"
    # The administrator edits the proposal: a name of their own, customer searchable, total sortable.
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Title").fill("The shop's orders")
    rows = page.locator("#field-rows tbody tr")
    names = [rows.nth(i).locator("input[type=text]").input_value() for i in range(rows.count())]
    customer, total = names.index("customer") + 1, names.index("total") + 1
    page.get_by_label(f"Field {customer} searchable").check()
    page.get_by_label(f"Field {customer} max length").fill("200")  # a searchable string's index needs <= 400
    page.get_by_label(f"Field {total} sortable").check()
    page.screenshot(path=f"{SHOTS}/dataset-proposed.png", full_page=True)
    page.get_by_role("button", name="Create dataset").click()
    if page.locator("#form-errors").count():
        raise AssertionError(page.locator("#form-errors").inner_text())
    page.wait_for_url(re.compile(rf"/datasets/{name}$"))
    page.get_by_text(f"Dataset {name} created").wait_for()
    page.screenshot(path=f"{SHOTS}/dataset-page.png", full_page=True)
    page.get_by_role("link", name="Upload a file to it…").click()
    assert page.get_by_label("Dataset", exact=True).input_value() == name
    page.get_by_label("Files (JSON, JSON Lines, or gzip of either)").set_input_files(str(sample))
    page.get_by_role("button", name="Upload and run").click()
    page.wait_for_url(re.compile(r"/runs/1(\?.*)?$"))
    page.locator('#run-status[data-status="succeeded"]').wait_for()
    assert _count(page, "inserted") == "12"
    # Its target table, through the header's links: its own columns, a search box, a sortable header.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Target").click()
    assert page.locator("table#target").get_attribute("data-dataset") == name
    heads = page.locator("table#target thead th").all_inner_texts()
    assert [h.strip() for h in heads] == ["order_id ▲", "customer", "total", "paid", "updated_at", "Updated", "Run"]
    page.locator("table#target thead").get_by_role("link", name="total").click()
    page.locator("table#target thead").get_by_role("link", name="total ▲").click()
    assert page.locator("table#target a.key").all_inner_texts()[:3] == ["o11", "o10", "o09"]
    page.get_by_label("customer starts with").fill("acme 1")
    page.get_by_role("button", name="Show", exact=True).click()
    assert page.locator("table#target a.key").all_inner_texts() == ["o11", "o01"]
    assert f"dataset={name}" in page.url
    page.screenshot(path=f"{SHOTS}/dataset-target.png", full_page=True)
    # The switcher takes the same page back to events, which has none of it.
    page.locator("#dataset-switcher summary").click()
    page.locator("#dataset-switcher").get_by_role("link", name="events").click()
    assert page.locator("table#target").count() == 0 and "dataset=" not in page.url
