"""Lineage of a key by run (issue 11): newest run first, a run's steps in position order, what changed, did you mean."""
import re

from app.pipeline.dead_letters import discard

from .test_pages_helpers import load, text


def rec(key="a", name="n", value=1, ts="2025-01-01T00:00:00Z"):
    return {"key": key, "name": name, "value": value, "ts": ts}


def groups(body: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Each run group of the page: its heading's run link (or "") and its (step, position) pairs in order."""
    found = []
    for part in body.split('<li class="run-group')[1:]:
        run = re.search(r'<div class="group-head">\s*<strong>Run <a href="/runs/(\d+)"', part)
        steps = re.findall(r'class="step (\w+)">\w+</span>(?: position (\d+))?', part)
        found.append((run.group(1) if run else "", steps))
    return found


def test_runs_newest_first_and_a_runs_steps_in_position_order(client, conn, write):
    load(conn, write, [rec(name="old", ts="2025-01-01T00:00:00Z"), rec(key="b"),
                       rec(name="new", ts="2025-01-02T00:00:00Z")], "one.jsonl")
    load(conn, write, [rec(name="newer", value=2, ts="2025-01-03T00:00:00Z")], "two.jsonl")
    body = text(client.get("/lineage/a"))
    assert groups(body) == [
        ("2", [("staged", "1"), ("updated", "1")]),
        ("1", [("staged", "1"), ("superseded", "1"), ("staged", "3"), ("inserted", "3")]),
    ]
    assert "superseded by the record at position 3 of this run" in body


def test_an_update_shows_each_changed_field_and_the_current_version_its_values(client, conn, write):
    load(conn, write, [rec(name="first", value=1)], "one.jsonl")
    load(conn, write, [rec(name="second", value=1, ts="2025-01-02T00:00:00Z")], "two.jsonl")
    body = text(client.get("/lineage/a"))
    changes = body[body.index('class="changes"'):]
    changes = changes[:changes.index("</ul>")]
    assert "<del>&#39;first&#39;</del> → <ins>&#39;second&#39;</ins>" in changes
    assert '<span class="field">ts</span>' in changes and '<span class="field">value</span>' not in changes
    assert body.count('class="current-version"') == 1 == body.count('class="version-values"')  # the current row's step
    assert body.index('class="current-version"') < body.index('class="version-values"')


def test_values_are_escaped(client, conn, write):
    load(conn, write, [rec(key="<b>k</b>", name="<script>alert(1)</script>")], "one.jsonl")
    load(conn, write, [rec(key="<b>k</b>", name="<img src=x onerror=alert(1)>", ts="2025-01-02T00:00:00Z")], "two.jsonl")
    body = text(client.get("/lineage/%3Cb%3Ek%3C/b%3E"))
    assert "<script>alert" not in body and "<img src=x" not in body and "<b>k</b>" not in body
    assert "<del>&#39;&lt;script&gt;alert(1)&lt;/script&gt;&#39;</del>" in body


def test_a_key_with_many_entries_pages_and_marks_a_run_that_goes_on(client, conn, write):
    load(conn, write, [rec(ts=f"2025-01-01T00:{m:02d}:00Z") for m in range(40)], "many.jsonl")  # 80 entries
    first = text(client.get("/lineage/a"))
    assert len(re.findall(r'class="step ', first)) == 50
    assert "continues on the next page" in first and "continued from the previous page" not in first
    older = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    rest = text(client.get(older))
    assert len(re.findall(r'class="step ', rest)) == 30 and 'rel="next"' not in rest
    assert "continued from the previous page" in rest and "continues on the next page" not in rest
    pairs = [p for _, steps in groups(first) + groups(rest) for p in steps]
    assert sorted(pairs) == sorted([("staged", str(p)) for p in range(1, 41)]
                                   + [("superseded", str(p)) for p in range(1, 40)] + [("inserted", "40")])

    api = client.get("/api/lineage/a?limit=50").get_json()
    assert [(g["run_id"], g["continued"], g["continues"]) for g in api["groups"]] == [(1, False, True)]
    assert api["groups"][0]["items"][0]["pos"] <= api["groups"][0]["items"][-1]["pos"]
    again = client.get(f"/api/lineage/a?limit=50&cursor={api['next']}").get_json()
    assert [(g["continued"], g["continues"]) for g in again["groups"]] == [(True, False)]


def test_an_entry_without_a_run_is_a_group_of_its_own(client, conn, write, app):
    load(conn, write, [rec(value="x")], "bad.jsonl")
    discard(conn, [1], reason="typo")
    load(conn, write, [rec(value="y")], "bad-again.jsonl")
    found = groups(text(client.get("/lineage/a")))
    assert found == [("2", [("rejected", "1")]), ("", [("discarded", "1")]), ("1", [("rejected", "1")])]


def test_api_lists_changes_of_an_update(client, conn, write):
    load(conn, write, [rec(name="first")], "one.jsonl")
    load(conn, write, [rec(name="second", value=3, ts="2025-01-02T00:00:00Z")], "two.jsonl")
    body = client.get("/api/lineage/a").get_json()
    assert [e["step"] for e in body["items"]] == ["updated", "staged", "inserted", "staged"]  # newest first, as before
    newest = body["groups"][0]["items"]
    assert [e["step"] for e in newest] == ["staged", "updated"] and newest[1]["current"] is True
    assert newest[1]["changes"] == [{"field": "name", "old": "'first'", "new": "'second'"},
                                    {"field": "value", "old": "1", "new": "3"},
                                    {"field": "ts", "old": "2025-01-01T00:00:00", "new": "2025-01-02T00:00:00"}]
    assert body["groups"][1]["items"][1]["current"] is False


def test_did_you_mean_a_key_that_differs_by_case_or_spaces(client, conn, write):
    load(conn, write, [rec(key="Order-7"), rec(key="order-70")])
    response = client.get("/lineage/ORDER-7")
    assert response.status_code == 404
    body = text(response)
    variants = body[body.index('id="key-variants"'):]
    assert 'href="/lineage/Order-7"' in variants[:variants.index("</ul>")]
    assert 'href="/lineage/order-70"' not in variants[:variants.index("</ul>")]

    spaced = text(client.get("/lineage/%20Order-7%20"))
    assert re.search(r"Showing <code class=\"typed\">' Order-7 '</code> as typed; did you mean "
                     r"<a href=\"/lineage/Order-7\"><code class=\"typed\">'Order-7'</code></a>\?", spaced)
    assert text(client.get("/lineage/%20order-7")).count('href="/lineage/Order-7"') >= 1  # case and spaces


def test_the_key_box_searches_the_key_as_typed(client, conn, write):
    load(conn, write, [rec(key="padded")])  # the pipeline stores keys trimmed
    jump = client.get("/lineage?key=+padded")
    assert jump.status_code == 302 and jump.headers["Location"].endswith("/lineage/%20padded")
    response = client.get(jump.headers["Location"])
    assert response.status_code == 404
    body = text(response)
    assert 'class="key-title typed"> padded</span>' in body and "never been seen" in body
    assert 'did you mean <a href="/lineage/padded">' in body
    assert "did you mean" not in text(client.get("/lineage/padded"))
