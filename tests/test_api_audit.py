"""GET /api/audit: the page's filters and entries over JSON, keyset pages with `next`, administrators only."""
import pytest

from app.accounts import audit
from app.accounts.actor import Actor
from app.accounts.tokens import create_token

from . import test_pages_audit
from .conftest import PASSWORD, sign_in_as
from .test_pages_audit import ALICE_TOKEN, BOB, CLI, add, every_page, ids
from .test_pages_helpers import token

mixed = test_pages_audit.mixed  # the page tests' entries, as a fixture of these tests too


def pages(client, url: str, headers=None) -> list[dict]:
    """Every item of an API list, following `next` to the end."""
    items, cursor = [], None
    while True:
        answer = client.get(url + (f"&cursor={cursor}" if cursor else ""), headers=headers)
        assert answer.status_code == 200, answer.json
        items += answer.json["items"]
        cursor = answer.json["next"]
        if cursor is None:
            return items


def test_entries_as_recorded_newest_first(client, engine, make_user):
    bob = make_user("bob", "viewer")
    with engine.connect() as conn:
        _, row = create_token(conn, bob, "reports", Actor.of_user(bob.id, bob.name, address="10.2.2.2"))
    add(engine, "discard", ALICE_TOKEN, object_type="dead_letters", object_id="2 dead letters", dataset="events",
        detail={"ids": [4, 5], "count": 2})
    items = client.get("/api/audit").json["items"]
    assert [e["id"] for e in items] == sorted((e["id"] for e in items), reverse=True)
    assert items[0] == {"id": items[0]["id"], "at": items[0]["at"], "action": "discard",
                        "action_words": "discarded dead letters", "actor": "Alice (token deploy)", "user_name": "alice",
                        "token_id": 3, "address": "10.0.0.8", "object_type": "dead_letters",
                        "object_id": "2 dead letters", "dataset": "events", "detail": {"ids": [4, 5], "count": 2}}
    assert items[1]["action"] == "token_create" and items[1]["object_id"] == str(row.id)
    assert items[1]["detail"]["name"] == "reports" and items[1]["actor"] == "bob"
    assert items[2]["detail"] == {"role": "viewer"} and items[2]["object_id"] == "bob"


def test_sign_ins_through_the_page_are_in_the_api(client, anon_client, make_user):
    make_user("carol", "viewer")
    form = token(anon_client, "/sign-in")
    anon_client.post("/sign-in", data={"csrf_token": form, "username": "carol", "password": "nope"})
    anon_client.post("/sign-in", data={"csrf_token": form, "username": "CAROL", "password": PASSWORD})
    failed = client.get("/api/audit?action=sign_in_failed").json["items"]
    signed_in = client.get("/api/audit?user=Carol").json["items"]
    assert [(e["actor"], e["object_id"], e["address"]) for e in failed] == [("anonymous", "carol", "127.0.0.1")]
    assert [(e["action"], e["user_name"]) for e in signed_in] == [("sign_in", "carol")]


def test_filters_answer_what_the_page_lists(client, mixed):
    for query in ("user=alice", "user=cli:ops", "action=discard", "from=2026-03-01&to=2026-03-01",
                  "from=2026-03-01T23:59&to=2026-03-02", "to=2026-03-01T10:00", "user=nobody", "action=upload&user=Bob"):
        api = [e["id"] for e in client.get(f"/api/audit?{query}").json["items"]]
        assert api == ids(client, f"/audit?{query}"), query
    assert [e["id"] for e in client.get("/api/audit?user=ALICE").json["items"]] == [mixed["alice_token"],
                                                                                  mixed["alice_upload"]]


def test_next_walks_every_entry_once(client, engine):
    with engine.begin() as conn:
        for n in range(120):
            audit.record(conn, "reopen" if n % 4 else "upload", BOB if n % 2 else CLI, object_type="run",
                         object_id=n + 1)
    every = pages(client, "/api/audit?limit=50")
    assert len(every) == len({e["id"] for e in every}) == 121
    assert [e["id"] for e in every] == every_page(client, "/audit")
    assert client.get("/api/audit?limit=50").json["next"] is not None
    cli_uploads = pages(client, "/api/audit?user=cli:ops&action=upload&limit=7")
    assert len(cli_uploads) == 30 and all(e["actor"] == "cli:ops" and e["action"] == "upload" for e in cli_uploads)


@pytest.mark.parametrize("query, parameter", [
    ("action=nope", "action"), ("from=2026-02-30", "from"), ("to=yesterday", "to"), ("from=2026-03-01T25:00", "from"),
    ("to=0999-01-01", "to"), ("from=2026-03-01T10:00:00.1234567", "from"), ("user=" + "x" * 129, "user"), ("limit=0", "limit"),
])
def test_bad_filters_answer_400(client, query, parameter):
    answer = client.get(f"/api/audit?{query}")
    assert answer.status_code == 400
    assert answer.json["error"]["code"] == "bad_parameter" and f"'{parameter}'" in answer.json["error"]["message"]


def test_a_reversed_range_matches_nothing(client, mixed):
    assert client.get("/api/audit?from=2026-03-02&to=2026-03-01").json == {"items": [], "next": None}


def test_a_cursor_the_api_did_not_write_answers_400(client):
    assert client.get("/api/audit?cursor=abc").json["error"]["code"] == "bad_cursor"
    assert client.get("/api/audit?cursor=WyJ4Il0").status_code == 400  # ["x"]


def test_administrators_only(app, make_user, engine):
    for role in ("viewer", "operator", "admin"):
        user = make_user(f"u-{role}", role)
        with engine.connect() as conn:
            secret, _ = create_token(conn, user, "t", Actor(label="test"))
        answer = app.test_client().get("/api/audit", headers={"Authorization": f"Bearer {secret}"})
        if role == "admin":
            assert answer.status_code == 200 and answer.json["items"][0]["action"] == "token_create"
        else:
            assert answer.status_code == 403 and answer.json["error"]["code"] == "forbidden"
            browser = app.test_client()
            sign_in_as(browser, user)
            assert browser.get("/api/audit").status_code == 403
    anonymous = app.test_client().get("/api/audit")
    assert anonymous.status_code == 401 and anonymous.json["error"]["code"] == "unauthorized"


def test_documented_in_openapi(client):
    operation = client.get("/api/openapi.json").json["paths"]["/api/audit"]["get"]
    names = {p["name"] for p in operation["parameters"]}
    assert names >= {"user", "action", "from", "to", "cursor", "limit"}
    action = next(p for p in operation["parameters"] if p["name"] == "action")
    assert action["schema"]["enum"] == list(audit.ACTIONS)
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/AuditPage")
