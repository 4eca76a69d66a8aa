"""Look and feel in real Chromium: dark mode, local times, the "/" shortcut, and a phone-sized screen."""
import re
from datetime import datetime, timedelta

import pytest

from app.pipeline import run_file

from . import test_browser
from .conftest import SAMPLE_INPUT
from .test_browser import SHOTS, chromium_tab, sign_in

# The browser tests' fixtures, used here under the same names (pytest finds fixtures among a module's names).
server, refused, page = test_browser.server, test_browser.refused, test_browser.page

pytestmark = pytest.mark.browser
PHONE = {"width": 390, "height": 844}
KOLKATA = timedelta(hours=5, minutes=30)  # the zone of the browser in the time test: no summer time


def _lightness(css_colour: str) -> float:
    """The mean of the red, green and blue of a computed `rgb(...)` colour, from 0 (black) to 255 (white)."""
    red, green, blue = (int(n) for n in re.findall(r"\d+", css_colour)[:3])
    return (red + green + blue) / 3


def _style(page, selector: str, prop: str) -> str:
    return page.eval_on_selector(selector, f"el => getComputedStyle(el).{prop}")


@pytest.fixture
def sampled(engine):
    """The sample input loaded by one run: some target rows and two dead letters."""
    with engine.connect() as conn:
        run_file(conn, SAMPLE_INPUT)


def test_dark_mode_follows_the_system_setting(server, page, sampled):
    page.goto(server + "/dead-letters")
    assert _lightness(_style(page, "body", "backgroundColor")) > 200
    page.emulate_media(color_scheme="dark")
    for path, table in (("/dead-letters", "table#dead-letters"), ("/runs", "table#runs")):
        page.goto(server + path)
        assert _lightness(_style(page, "body", "backgroundColor")) < 40
        assert _lightness(_style(page, table, "backgroundColor")) < 60
        assert _lightness(_style(page, f"{table} td", "color")) > 180  # the text stays readable on it
        assert _lightness(_style(page, "form.filters select", "backgroundColor")) < 60
        page.screenshot(path=f"{SHOTS}/dark{path.replace('/', '-')}.png", full_page=True)
    assert _lightness(_style(page, ".chart", "backgroundColor")) < 60
    assert page.locator("table#runs .status").first.inner_text() == "succeeded"
    assert _lightness(_style(page, "table#runs .status", "backgroundColor")) < 80  # a dark badge, not pale


def test_times_switch_to_the_browsers_zone_and_back_and_the_choice_is_remembered(server, refused, sampled):
    with chromium_tab(refused, timezone_id="Asia/Kolkata") as page:
        sign_in(page, server)
        first = page.locator("table#runs time").first
        utc = first.inner_text()
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", utc)
        assert page.locator("footer").get_by_text("All times are UTC.").is_visible()
        page.get_by_role("button", name="Show local times").click()
        shown = first.inner_text()
        stamp = datetime.fromisoformat(first.get_attribute("datetime").removesuffix("Z"))
        expected = (stamp + KOLKATA).strftime("%Y-%m-%d %H:%M:%S")
        assert shown == expected + " GMT+5:30"
        note = re.compile(r"Times are in your time zone \(Asia/(Kolkata|Calcutta)\)")
        assert page.locator("footer").get_by_text(note).is_visible()
        page.reload()
        assert page.locator("table#runs time").first.inner_text() == shown
        page.get_by_role("button", name="Show UTC").click()
        assert page.locator("table#runs time").first.inner_text() == utc
        page.reload()
        assert page.locator("table#runs time").first.inner_text() == utc
        assert page.get_by_role("button", name="Show local times").is_visible()


def test_slash_focuses_the_jump_to_key_box_unless_typing_in_a_field(server, page, sampled):
    page.goto(server + "/dead-letters")
    page.keyboard.press("/")
    box = page.locator("#jump-key")
    assert page.evaluate("document.activeElement.id") == "jump-key"
    assert box.input_value() == ""  # the slash is not typed into it
    page.locator("#f-run").fill("")
    page.locator("#f-run").press("/")
    assert page.evaluate("document.activeElement.id") == "f-run"
    box.fill("evt-001")
    box.press("Enter")
    page.wait_for_url(re.compile(r"/lineage/evt-001$"))


@pytest.mark.parametrize(("path", "label", "field"),
                         [("/dead-letters", "Error", "#f-error"), ("/runs", "Status", "#status-filter")])
def test_a_phone_sized_screen_does_not_scroll_sideways(server, refused, sampled, path, label, field):
    with chromium_tab(refused, viewport=PHONE) as page:
        sign_in(page, server)
        page.goto(server + path)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        wide = page.locator("div.scroll").first  # the wide table scrolls inside its own box
        assert wide.evaluate("el => el.scrollWidth > el.clientWidth")
        filters = page.locator("form.filters")
        assert filters.evaluate("f => f.scrollWidth <= f.clientWidth")
        # the filter form wraps a label together with its field, on one line
        assert filters.get_by_text(label, exact=True).bounding_box()["y"] == pytest.approx(
            page.locator(field).bounding_box()["y"], abs=12)
        page.screenshot(path=f"{SHOTS}/phone{path.replace('/', '-')}.png", full_page=True)
