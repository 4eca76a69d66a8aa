"""Lineage of a key (and the jump box), and the watermark page with preview and confirmation."""
import re

from .test_pages_helpers import load, text, token


def test_lineage_shows_the_row_and_the_timeline_newest_first(client, conn, write):
    load(conn, write, [{"key": "a", "name": "first", "value": 1, "ts": "2025-01-01T00:00:00Z"}], "one.jsonl")
    load(conn, write, [{"key": "a", "name": "second", "value": 2, "ts": "2025-01-02T00:00:00Z"}], "two.jsonl")
    body = text(client.get("/lineage/a"))
    assert 'id="current-row"' in body and "second" in body
    steps = re.findall(r'class="step (\w+)"', body)
    assert steps == ["staged", "updated", "staged", "inserted"]  # by run, newest first; a run's steps in order
    assert "name</span>: <del>&#39;first&#39;</del> → <ins>&#39;second&#39;</ins>" in body
    assert "value</span>: <del>1</del> → <ins>2</ins>" in body
    assert 'href="/runs/2"' in body and 'href="/runs/1"' in body


def test_lineage_pages_through_a_long_timeline(client, conn, write):
    for day in range(1, 29):
        load(conn, write, [{"key": "busy", "name": "n", "value": day, "ts": f"2025-01-{day:02d}T00:00:00Z"}],
             f"d{day}.jsonl")
    first = text(client.get("/lineage/busy"))
    assert len(re.findall(r'class="step ', first)) == 50
    older = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    rest = text(client.get(older))
    assert len(re.findall(r'class="step ', rest)) == 6 and 'rel="next"' not in rest


def test_unknown_key_gets_a_helpful_page(client, conn, write):
    load(conn, write, [{"key": "order-17", "name": "n", "value": 1, "ts": "2025-01-01T00:00:00Z"}])
    response = client.get("/lineage/order-1")
    assert response.status_code == 404
    body = text(response)
    assert "never been seen" in body and 'href="/lineage/order-17"' in body


def test_rejected_key_has_lineage_without_a_row(client, conn, write):
    load(conn, write, [{"key": "bad", "name": "n", "value": "x", "ts": "2025-01-01T00:00:00Z"}])
    body = text(client.get("/lineage/bad"))
    assert "not in the target table" in body and 'href="/dead-letters/1"' in body


def test_jump_box_goes_to_the_key(client):
    response = client.get("/lineage?key=+some/key+")  # as typed: spaces are part of a key
    assert response.status_code == 302 and response.headers["Location"].endswith("/lineage/%20some/key%20")
    assert 'action="/lineage"' in text(client.get("/watermarks"))  # the box is on every page


def test_watermark_set_after_preview_and_confirmation(client, conn, write):
    load(conn, write, [{"key": f"k{d}", "name": "n", "value": 1, "ts": f"2025-01-{d:02d}T00:00:00Z"}
                       for d in range(1, 11)])
    assert '<time class="watermark" datetime="2025-01-10T00:00:00Z">2025-01-10 00:00:00</time>' in text(client.get("/watermarks"))
    preview = client.get("/watermarks/confirm?value=2025-01-08T00:00:00Z")
    assert preview.status_code == 200
    assert ('<strong id="preview-rows">3</strong> target rows lie at or after <time class="watermark" '
            'datetime="2025-01-08T00:00:00Z">2025-01-08 00:00:00</time>') in text(preview)
    response = client.post("/watermarks/set", data={"csrf_token": token(client, "/watermarks/confirm?value=2025-01-08"
                                                                                   "T00:00:00Z"),
                                                    "value": "2025-01-08T00:00:00"})
    assert response.status_code == 303
    body = text(client.get("/watermarks"))
    assert ('<p class="big" id="wm-value"><time class="watermark" datetime="2025-01-08T00:00:00Z">'
            '2025-01-08 00:00:00</time></p>') in body
    history = body[body.index('id="wm-history"'):]
    assert "<td>web</td>" in history and "<td>pipeline</td>" in history


def test_watermark_refuses_invalid_and_future_values(client):
    bad = client.get("/watermarks/confirm?value=tomorrow")
    assert bad.status_code == 400 and "is not a timestamp" in text(bad)
    future = client.get("/watermarks/confirm?value=2999-01-01T00:00:00Z")
    assert future.status_code == 400 and "lies in the future" in text(future)
    response = client.post("/watermarks/set", data={"csrf_token": token(client, "/"),
                                                    "value": "2999-01-01T00:00:00"}, follow_redirects=True)
    assert "was not changed" in text(response) and "none" in text(response)


def test_watermark_reset_after_confirmation(client, conn, write):
    load(conn, write, [{"key": "k", "name": "n", "value": 1, "ts": "2025-01-01T00:00:00Z"}])
    page = text(client.get("/watermarks/confirm?reset=1"))
    assert "Reset the watermark?" in page and '<strong id="preview-rows">1</strong>' in page
    assert client.post("/watermarks/reset").status_code == 400  # no CSRF token
    client.post("/watermarks/reset", data={"csrf_token": token(client, "/watermarks/confirm?reset=1")})
    body = text(client.get("/watermarks"))
    assert '<p class="big" id="wm-value"><span class="muted">none</span></p>' in body and "none (reset)" in body
