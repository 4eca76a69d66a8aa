"""The watermark page (issue 11): current watermark wording, a warning when a new value moves it back,
no Reset without a watermark, and every time written one way (<time>)."""
import re

from .test_pages_helpers import load, text, token


def rec(key, ts):
    return {"key": key, "name": "n", "value": 1, "ts": ts}


def no_other_times(body: str) -> bool:
    """No timestamp in the page's text outside a <time> element (an input format's example aside)."""
    outside = re.sub(r'<time[^>]*>[^<]*</time>|<code class="example">[^<]*</code>', "", body)
    return not re.search(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d", re.sub(r"<[^>]*>", " ", outside))


def test_current_watermark_to_the_microsecond_in_a_time_element(client, conn, write):
    load(conn, write, [rec("a", "2025-01-10T00:00:00.123456Z"), rec("b", "2025-01-09T00:00:00Z")])
    body = text(client.get("/watermarks"))
    assert "<h2>Current watermark</h2>" in body
    assert ('<p class="big" id="wm-value"><time class="watermark" datetime="2025-01-10T00:00:00.123456Z">'
            "2025-01-10 00:00:00.123456</time></p>") in body
    history = body[body.index('id="wm-history"'):]
    assert '<time class="watermark" datetime="2025-01-10T00:00:00.123456Z">' in history
    assert no_other_times(body)


def test_moving_the_watermark_back_warns_and_says_the_next_run_moves_it_forward(client, conn, write):
    load(conn, write, [rec(f"k{d}", f"2025-01-{d:02d}T00:00:00Z") for d in range(1, 11)])
    back = text(client.get("/watermarks/confirm?value=2025-01-05T00:00:00Z"))
    warning = re.search(r'<p class="flash warn" id="wm-backwards" role="alert">(.*?)</p>', back, re.DOTALL).group(1)
    plain = re.sub(r"<[^>]+>", "", warning)
    assert "moves the watermark back from 2025-01-10 00:00:00 to 2025-01-05 00:00:00" in plain
    assert "next run loads them again" in plain and "next applied run moves the watermark forward again" in plain
    assert no_other_times(back)
    forward = text(client.get("/watermarks/confirm?value=2025-02-01T00:00:00Z"))
    assert "Set the watermark to" in forward and 'id="wm-backwards"' not in forward
    assert '<strong id="wm-current"><time class="watermark" datetime="2025-01-10T00:00:00Z">' in forward


def test_first_watermark_is_not_a_move_back(client):
    page = text(client.get("/watermarks/confirm?value=2025-01-05T00:00:00Z"))
    assert 'id="wm-backwards"' not in page and '<strong id="wm-current"><span class="muted">none</span>' in page


def test_no_reset_offered_when_there_is_no_watermark(client, conn, write):
    body = text(client.get("/watermarks"))
    assert '<p class="big" id="wm-value"><span class="muted">none</span></p>' in body
    assert "There is no watermark" in body and "Reset (remove) the watermark" not in body
    confirm = client.get("/watermarks/confirm?reset=1")
    assert confirm.status_code == 303 and confirm.headers["Location"].endswith("/watermarks")
    assert "There is no watermark to reset" in text(client.get("/watermarks"))

    load(conn, write, [rec("a", "2025-01-01T00:00:00Z")])
    assert "Reset (remove) the watermark" in text(client.get("/watermarks"))


def test_setting_a_value_says_so_without_writing_a_time_another_way(client, conn, write):
    load(conn, write, [rec("a", "2025-01-10T00:00:00Z")])
    response = client.post("/watermarks/set", data={
        "csrf_token": token(client, "/watermarks/confirm?value=2025-01-08T00:00:00Z"),
        "value": "2025-01-08T00:00:00"}, follow_redirects=True)
    body = text(response)
    assert "The watermark was set" in body and no_other_times(body)
    assert '<p class="big" id="wm-value"><time class="watermark" datetime="2025-01-08T00:00:00Z">' in body


def test_lineage_page_writes_times_one_way(client, conn, write):
    load(conn, write, [rec("a", "2025-01-01T00:00:00Z")])
    load(conn, write, [rec("a", "2025-01-02T00:00:00Z") | {"name": "m"}])
    body = text(client.get("/lineage/a"))
    assert "<time" in body
    # Lineage details name timestamps as the pipeline wrote them (canonical text, like the API): the one
    # place a timestamp is data, not a time shown; everything else is a <time>.
    details = re.sub(r'<(div class="detail wrap"|ul class="changes").*?</(div|ul)>', "", body, flags=re.DOTALL)
    assert no_other_times(details)
