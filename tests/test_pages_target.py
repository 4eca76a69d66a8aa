"""The target table page: keyset paging (first, next, previous, last), search, sorts, exports, escaping."""
import csv
import functools
import io
import json
import re

import pytest
from sqlalchemy.exc import OperationalError

from app import queries
from app.pipeline import discard

from .test_pages_helpers import load, text

TS = "2025-01-{:02d}T{:02d}:00:00Z"


def _keys(body: str) -> list[str]:
    return re.findall(r'<a class="key" href="/lineage/[^"]*">([^<]*)</a>', body)


def _link(body: str, rel: str) -> str | None:
    match = re.search(rf'href="([^"]+)" rel="{rel}"', body)
    return match.group(1).replace("&amp;", "&") if match else None


def _records(n: int) -> list[dict]:
    return [{"key": f"k{i:04d}", "name": f"{'alpha' if i % 2 else 'beta'} {i}", "value": (i * 37) % 101 - 50,
             "ts": TS.format(1 + i % 28, i % 24)} for i in range(n)]


def test_paging_forward_to_the_end_and_back_from_the_last_page(client, conn, write):
    load(conn, write, _records(130))
    everything = sorted(f"k{i:04d}" for i in range(130))
    seen, url, pages = [], "/target", 0
    while url and pages < 10:
        body = text(client.get(url))
        seen += _keys(body)
        url, pages = _link(body, "next"), pages + 1
    assert seen == everything and pages == 3
    last = text(client.get("/target?last=1"))
    assert _keys(last) == everything[-50:] and _link(last, "next") is None
    before = text(client.get(_link(last, "prev")))
    assert _keys(before) == everything[30:80]
    first = text(client.get(_link(before, "prev")))
    assert _keys(first) == everything[:30] and _link(first, "prev") is None and _link(first, "next")


def test_sorts_follow_the_column_then_the_key(client, conn, write):
    records = _records(60)
    load(conn, write, records)
    by_value = sorted(records, key=lambda r: (-r["value"], r["key"]))
    assert _keys(text(client.get("/target?sort=value&desc=1"))) == [r["key"] for r in by_value[:50]]
    by_ts = sorted(records, key=lambda r: (r["ts"], r["key"]))
    body = text(client.get("/target?sort=ts"))
    assert _keys(body) == [r["key"] for r in by_ts[:50]]
    assert _keys(text(client.get(_link(body, "next")))) == [r["key"] for r in by_ts[50:]]
    assert _keys(text(client.get("/target?sort=ts&last=1"))) == [r["key"] for r in by_ts[10:]]
    assert 'aria-sort="ascending"' in body


def test_search_by_key_prefix_and_name_prefix(client, conn, write):
    load(conn, write, _records(60))
    assert _keys(text(client.get("/target?key=k003"))) == [f"k{i:04d}" for i in range(30, 40)]
    assert _keys(text(client.get("/target?name=alpha+1&sort=name"))) == ["k0001", "k0011", "k0013", "k0015",
                                                                         "k0017", "k0019"]
    assert "No rows match this search" in text(client.get("/target?key=zzz"))


def test_keys_sort_and_match_in_binary_order(client, conn, write):
    load(conn, write, [{"key": k, "name": "n", "value": 1, "ts": "2025-01-01T00:00:00Z"}
                       for k in ["b", "B", "a", "é", "ab", "a\U0001F600"]])
    assert _keys(text(client.get("/target"))) == ["B", "a", "ab", "a\U0001F600", "b", "é"]
    assert _keys(text(client.get("/target?key=a"))) == ["a", "ab", "a\U0001F600"]


def test_script_keys_and_names_are_escaped(client, conn, write):
    load(conn, write, [{"key": "<script>alert(1)</script>", "name": "<script>alert('n')</script>", "value": 1,
                        "ts": "2025-01-01T00:00:00Z"},
                       {"key": "<script>alert(1)</script>", "name": "<script>alert('n')</script>", "value": "bad",
                        "ts": "2025-01-02T00:00:00Z"}])
    for url in ("/target", "/lineage/<script>alert(1)</script>", "/runs/1", "/dead-letters", "/dead-letters/1"):
        body = text(client.get(url))
        assert "<script>alert" not in body, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body, url


def test_csv_export_guards_formulas_and_keeps_numbers(client, conn, write):
    load(conn, write, [
        {"key": "=cmd", "name": "+SUM(A1)", "value": -5, "ts": "2025-01-01T00:00:00Z"},
        {"key": "k2", "name": "@x", "value": 2.5, "ts": "2025-01-02T00:00:00Z"},
        {"key": "k3", "name": "-1+2", "value": "1e3", "ts": "2025-01-03T00:00:00Z"},
        {"key": "k4", "name": "plain", "value": 0, "ts": "2025-01-04T00:00:00Z"},
    ])
    response = client.get("/target/export.csv")
    assert response.status_code == 200 and response.is_streamed
    assert response.mimetype == "text/csv" and "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(text(response))))
    assert rows[0] == ["key", "name", "value", "ts", "updated_at", "run_id"]
    assert [r[:4] for r in rows[1:]] == [["'=cmd", "'+SUM(A1)", "-5", "2025-01-01T00:00:00"],
                                         ["k2", "'@x", "2.5", "2025-01-02T00:00:00"],
                                         ["k3", "'-1+2", "1000", "2025-01-03T00:00:00"],
                                         ["k4", "plain", "0", "2025-01-04T00:00:00"]]


def test_exports_follow_the_current_view(client, conn, write):
    load(conn, write, _records(60))
    rows = json.loads(text(client.get("/target/export.json?key=k001&sort=value&desc=1")))
    expected = sorted((r for r in _records(60) if r["key"].startswith("k001")), key=lambda r: (-r["value"], r["key"]))
    assert [r["key"] for r in rows] == [r["key"] for r in expected]
    assert all(isinstance(r["value"], float) for r in rows)
    all_rows = list(csv.reader(io.StringIO(text(client.get("/target/export.csv")))))
    assert len(all_rows) == 61  # the whole view, not one page


@pytest.mark.parametrize("path", ["/target/export.json", "/target/export.json?sort=ts&desc=1",
                                  "/api/target?format=json", "/dead-letters/export.json?status=all",
                                  "/api/dead-letters?format=json"])
def test_an_export_reads_one_snapshot_while_a_run_commits(client, conn, write, monkeypatch, path):
    dead = [{"key": f"bad{i}", "name": "n", "value": "not a number", "ts": TS.format(1, i)} for i in range(6)]
    load(conn, write, _records(6) + dead)
    # Small batches, so that the export goes back to the database several times.
    monkeypatch.setattr(queries, "iter_target", functools.partial(queries.iter_target, batch=2))
    monkeypatch.setattr(queries, "iter_dead_letters", functools.partial(queries.iter_dead_letters, batch=2))
    with client.get(path) as before:
        expected = before.get_data(as_text=True)
    response = client.get(path)  # its first batch is read: the snapshot is taken
    chunks = iter(response.response)
    started = next(chunks)
    # While it streams, a run commits newer rows for old keys, a new key and new dead letters, and the
    # oldest dead letter (exported last, newest first) is discarded.
    later = [{"key": f"k{i:04d}", "name": "later", "value": 1, "ts": TS.format(28, 23)} for i in (0, 5)]
    later += [{"key": "k9999", "name": "new", "value": 2, "ts": TS.format(28, 23)}]
    later += [{"key": f"late{i}", "name": "n", "value": "nan", "ts": TS.format(2, i)} for i in range(4)]
    assert load(conn, write, later, name="later.jsonl")["loaded"] == 3
    discard(conn, [1], reason="while exporting", actor=None)
    body = (started + b"".join(chunks)).decode()
    response.close()
    assert body == expected


def test_an_export_that_cannot_be_read_fails_before_it_starts(client, conn, write, monkeypatch):
    load(conn, write, _records(3))

    def unreadable(conn, **view):
        raise OperationalError("SELECT …", {}, Exception("server closed the connection unexpectedly"))
        yield

    monkeypatch.setattr(queries, "iter_target", unreadable)
    response = client.get("/target/export.json")
    assert response.status_code == 503  # not a 200 whose body stops after "["
    assert "Database unavailable" in text(response)


def test_a_common_prefix_with_another_sort_pages_correctly(client, conn, write, monkeypatch):
    monkeypatch.setattr(queries, "DENSE_PREFIX", 5)  # take the walk-the-sort-index path with few rows
    records = _records(120)
    load(conn, write, records)
    matching = sorted((r for r in records if r["name"].startswith("alpha")), key=lambda r: (r["ts"], r["key"]))
    body = text(client.get("/target?name=alpha&sort=ts"))
    assert _keys(body) == [r["key"] for r in matching[:50]]
    assert _keys(text(client.get(_link(body, "next")))) == [r["key"] for r in matching[50:]]
    assert _keys(text(client.get("/target?name=alpha&sort=ts&last=1"))) == [r["key"] for r in matching[10:]]
    exported = list(csv.reader(io.StringIO(text(client.get("/target/export.csv?name=alpha&sort=ts")))))
    assert [r[0] for r in exported[1:]] == [r["key"] for r in matching]
