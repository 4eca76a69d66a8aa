"""The audit log page: what it lists, newest first; filters by user, action and time; pages; export; who may see it."""
import csv
import html
import io
import re

import pytest

from app.accounts import audit
from app.accounts.actor import Actor
from app.accounts.tokens import create_token

from .conftest import PASSWORD, sign_in_as
from .test_pages_helpers import text, token

ALICE = Actor.of_user(7, "Alice", address="10.0.0.7")
ALICE_TOKEN = Actor.of_user(7, "Alice", token_id=3, token_name="deploy", address="10.0.0.8")
BOB = Actor.of_user(8, "bob", address="10.0.0.9")
CLI = Actor(label="cli:ops")
_ROW = re.compile(r'<tr id="entry-(\d+)">(.*?)</tr>', re.DOTALL)
_NEXT = re.compile(r'href="([^"]+)" rel="next"')
_PREV = re.compile(r'href="([^"]+)" rel="prev"')


def add(engine, action: str, actor: Actor, **what) -> None:
    """Write one audit entry, as an action does, in a transaction of its own."""
    with engine.begin() as conn:
        audit.record(conn, action, actor, **what)


def rows(body: str) -> list[tuple[int, str]]:
    """The entries a page lists, in order: (id, the row's text without tags)."""
    return [(int(i), " ".join(html.unescape(re.sub(r"<[^>]+>", " ", cells)).split())) for i, cells in _ROW.findall(body)]


def ids(client, url: str) -> list[int]:
    return [i for i, _ in rows(text(client.get(url)))]


def every_page(client, url: str) -> list[int]:
    """The ids of every page of a view, following its Next links to the end."""
    found = []
    while url:
        body = text(client.get(url))
        found += [i for i, _ in rows(body)]
        match = _NEXT.search(body)
        url = html.unescape(match.group(1)) if match else None
    return found


@pytest.fixture
def mixed(client, engine):
    """Entries of two users (one through a token) and the command line at known times, after the admin's creation
    (now): their ids by name."""
    made = [("alice_upload", "upload", ALICE, {"object_type": "run", "object_id": 3, "dataset": "events",
                                                "at": "2026-03-01T10:00:00.000000"}),
            ("alice_token", "discard", ALICE_TOKEN, {"object_type": "dead_letter", "object_id": 5, "dataset": "events",
                                                     "at": "2026-03-01T23:59:59.500000"}),
            ("bob_watermark", "watermark_set", BOB, {"object_type": "watermark", "object_id": "events_ts",
                                                     "dataset": "events", "at": "2026-03-02T00:00:00"}),  # canonical: no fraction
            ("cli_dataset", "dataset_create", CLI, {"object_type": "dataset", "object_id": "events",
                                                    "dataset": "events", "at": "2026-03-03T12:00:00.000000"})]
    for _, action, actor, what in made:
        add(engine, action, actor, **what)
    with engine.connect() as conn:
        found = conn.exec_driver_sql("SELECT id FROM audit_log ORDER BY id").scalars().all()
    return dict(zip(["admin_created"] + [name for name, *_ in made], found))  # the client's admin came first


def test_real_actions_are_listed_newest_first_with_who_and_address(client, anon_client, make_user, engine):
    alice = make_user("alice", "operator")
    page = token(anon_client, "/sign-in")
    failed = anon_client.post("/sign-in", data={"csrf_token": page, "username": "Alice", "password": "wrong"})
    assert failed.status_code == 401
    signed_in = anon_client.post("/sign-in", data={"csrf_token": page, "username": "alice", "password": PASSWORD})
    assert signed_in.status_code == 302
    with engine.connect() as conn:
        create_token(conn, alice, "deploy", Actor.of_user(alice.id, alice.name, address="10.1.1.1"))
    listed = rows(text(client.get("/audit")))
    assert [i for i, _ in listed] == sorted((i for i, _ in listed), reverse=True)
    newest = [r for _, r in listed[:3]]
    assert "alice created an API token token" in newest[0]
    assert "10.1.1.1" in newest[0] and '"name":"deploy"' in newest[0]
    assert "alice signed in user alice" in newest[1] and "127.0.0.1" in newest[1]
    assert "anonymous failed to sign in user Alice" in newest[2] and "127.0.0.1" in newest[2]
    assert "created a user user alice" in listed[3][1]


def test_object_links_go_to_the_objects_pages(client, mixed, app):
    body = text(client.get("/audit"))
    assert '<a href="/runs/3">3</a>' in body
    assert '<a href="/dead-letters/5">5</a>' in body
    assert '<a href="/watermarks?dataset=events">events_ts</a>' in body
    assert '<a href="/datasets/events">events</a>' in body
    assert any("test created a user user admin" in r for _, r in rows(body))  # the client's admin
    # A user links to the users' page only when there is one.
    assert ('<a href="/users">admin</a>' in body) == ("users.index" in app.view_functions)


def test_user_filter_takes_any_case_and_the_users_tokens_and_cli_labels(client, mixed):
    alice = [mixed["alice_token"], mixed["alice_upload"]]
    assert ids(client, "/audit?user=ALICE") == alice
    assert ids(client, "/audit?user=%20alice%20") == alice
    assert ids(client, "/audit?user=bob") == [mixed["bob_watermark"]]
    assert ids(client, "/audit?user=cli:ops") == [mixed["cli_dataset"]]
    assert ids(client, "/audit?user=CLI:ops") == [mixed["cli_dataset"]]
    assert ids(client, "/audit?user=cli:root") == []
    assert "No audit entries match this filter." in text(client.get("/audit?user=nobody"))
    body = text(client.get("/audit"))
    assert 'href="/audit?user=cli:ops"' in body and 'href="/audit?user=alice"' in body  # Who filters by its actor


def test_action_filter(client, mixed):
    assert ids(client, "/audit?action=discard") == [mixed["alice_token"]]
    assert ids(client, "/audit?action=watermark_set&user=alice") == []
    listed = ids(client, "/audit?action=user_create")
    assert listed and mixed["alice_upload"] not in listed


@pytest.mark.parametrize("query, names", [
    ("from=2026-03-01&to=2026-03-01", ["alice_token", "alice_upload"]),  # `to` takes in its whole day
    ("from=2026-03-01T23:59&to=2026-03-02", ["bob_watermark", "alice_token"]),
    ("from=2026-03-01T10:00:01", ["cli_dataset", "bob_watermark", "alice_token", "admin_created"]),
    ("to=2026-03-01T10:00", ["alice_upload"]),  # the whole minute 10:00
    ("to=2026-03-01T23:59:59", ["alice_token", "alice_upload"]),  # the whole second 23:59:59
    ("from=2026-03-02T00:00:00&to=2026-03-03T11:59:59", ["bob_watermark"]),
    ("from=2026-03-02&user=alice", []),
])
def test_time_filter(client, mixed, query, names):
    assert ids(client, f"/audit?{query}") == [mixed[n] for n in names]


def test_pages_cover_every_entry_once_newest_first_and_go_back(client, engine):
    with engine.begin() as conn:
        for n in range(120):
            audit.record(conn, "upload" if n % 2 else "discard", ALICE, object_type="run", object_id=n + 1)
    every = every_page(client, "/audit")
    assert len(every) == len(set(every)) == 121 and every == sorted(every, reverse=True)  # and the admin's creation
    uploads = every_page(client, "/audit?action=upload&user=alice")
    assert len(uploads) == 60 and uploads == [i for i in every if i in set(uploads)]
    first = text(client.get("/audit"))
    second = text(client.get(html.unescape(_NEXT.search(first).group(1))))
    assert [i for i, _ in rows(second)] == every[50:100]
    back = text(client.get(html.unescape(_PREV.search(second).group(1))))
    assert [i for i, _ in rows(back)] == every[:50]
    assert "action=upload" in html.unescape(_NEXT.search(text(client.get("/audit?action=upload"))).group(1))


def test_export_csv_and_json_hold_the_filtered_view(client, engine):
    with engine.begin() as conn:
        for n in range(120):
            audit.record(conn, "discard" if n % 3 else "reopen", BOB if n % 2 else ALICE, object_type="dead_letter",
                         object_id=n + 1, dataset="events", detail={"ids": [n + 1], "count": 1})
    view = every_page(client, "/audit?user=Bob&action=discard")
    assert len(view) == 40
    exported = client.get("/audit/export.csv?user=Bob&action=discard")
    assert exported.mimetype == "text/csv" and "sluice-audit.csv" in exported.headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(text(exported))))
    assert [int(r["id"]) for r in table] == view
    assert table[0]["actor"] == "bob" and table[0]["action_words"] == "discarded dead letters"
    assert table[0]["detail"] == f'{{"ids":[{table[0]["object_id"]}],"count":1}}'
    entries = client.get("/audit/export.json?user=Bob&action=discard").json
    assert [e["id"] for e in entries] == view
    assert entries[-1]["detail"] == {"ids": [int(entries[-1]["object_id"])], "count": 1}
    assert entries[-1]["address"] == "10.0.0.9" and entries[-1]["user_name"] == "bob"
    everything = client.get("/audit/export.json").json
    assert [e["id"] for e in everything] == every_page(client, "/audit")
    body = text(client.get("/audit?user=Bob&action=discard"))
    assert 'href="/audit/export.csv?user=Bob&amp;action=discard"' in body


@pytest.mark.parametrize("role", ["operator", "viewer"])
@pytest.mark.parametrize("url", ["/audit", "/audit/export.csv", "/audit/export.json"])
def test_only_administrators_see_the_log(app, make_user, role, url):
    other = app.test_client()
    sign_in_as(other, make_user(f"someone-{role}", role))
    answer = other.get(url)
    assert answer.status_code == 403 and "This needs the admin role" in text(answer)


@pytest.mark.parametrize("url", ["/audit?action=discard", "/audit/export.csv"])
def test_anonymous_is_sent_to_sign_in(anon_client, url):
    answer = anon_client.get(url)
    assert answer.status_code == 302 and answer.location.startswith("/sign-in?next=")


def test_bad_filters_are_named_and_ignored(client, mixed):
    body = text(client.get("/audit?action=nope&from=2026-02-30&to=2026-3-1&user=alice"))
    problems = html.unescape(re.search(r'id="filter-problems">(.*?)</div>', body, re.DOTALL).group(1))
    assert "The action filter nope was ignored: not an audited action." in re.sub(r"<[^>]+>", "", problems)
    assert "The from filter 2026-02-30 was ignored: 2026-02-30 is not on the calendar." in re.sub(r"<[^>]+>", "", problems)
    assert "The to filter 2026-3-1 was ignored: not a time" in re.sub(r"<[^>]+>", "", problems)
    assert [i for i, _ in rows(body)] == [mixed["alice_token"], mixed["alice_upload"]]  # the good filter holds
    assert 'value="2026-02-30"' in body  # what was typed stays in the form, to be corrected
    assert 'href="/audit/export.csv?user=alice"' in body  # links carry only the filters in force
    reversed_range = text(client.get("/audit?from=2026-03-02&to=2026-03-01"))
    assert "From is after To: no entry can match." in reversed_range and not rows(reversed_range)
    assert "filter-problems" not in text(client.get("/audit?from=2026-03-01T10:00:00&to=2026-03-02T00:00"))
    assert client.get("/audit?cursor=garbage").status_code == 400


def test_every_value_is_escaped(client, engine):
    add(engine, "upload", Actor(label="<b>mallory</b>", address="<i>addr</i>"), object_type="run",
        object_id="<script>alert(1)</script>", dataset="<u>ds</u>", detail="<script>alert(2)</script>")
    add(engine, "reopen", ALICE, detail={"reason": "<script>alert(3)</script>"})
    body = text(client.get("/audit"))
    assert "<script>" not in body and "<b>mallory" not in body and "<i>addr" not in body and "<u>ds" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "&lt;script&gt;alert(2)&lt;/script&gt;" in body
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in body and "&lt;b&gt;mallory&lt;/b&gt;" in body
