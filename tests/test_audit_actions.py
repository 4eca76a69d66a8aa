"""Who did it (SPEC §11): every state-changing action writes its audit entry and fills the "who" columns,
through the page, the API (a bearer token) and the command line; a refused action writes no entry."""
import io
import json
import re
import uuid

import pytest
from sqlalchemy import text as sql

from app.accounts.actor import Actor, os_user
from app.accounts.tokens import create_token
from app.extensions import db

from .conftest import SAMPLE_INPUT
from .test_cli import etl
from .test_pages_dead_letters import BAD, GOOD_TS  # four dead letters (ids 1 to 4)
from .test_pages_helpers import load, token, upload
from .test_run_waits import HeldApplyLock, in_a_thread

SHAPE = {"key": "id", "version": "at", "fields": [{"name": "n", "type": "integer"}]}
CLI = f"cli:{os_user()}"
ADMIN = {"actor": "admin", "user_name": "admin", "token_id": None, "address": "127.0.0.1"}


def who_of(token_id: int, label: str = "oper (token ci)", user: str = "oper") -> dict:
    return {"actor": label, "user_name": user, "token_id": token_id, "address": "127.0.0.1"}


CLI_WHO = {"actor": CLI, "user_name": None, "token_id": None, "address": None}


@pytest.fixture
def bearer(app, make_user):
    """`bearer(name, role)`: (headers with a new token "ci" of a new user, the token's id)."""
    def _bearer(name: str = "oper", role: str = "operator"):
        user = make_user(name, role)
        with app.app_context(), db.engine.connect() as conn:
            secret, row = create_token(conn, user, "ci", Actor(label="test"))
        return {"Authorization": f"Bearer {secret}"}, row.id
    return _bearer


@pytest.fixture
def oper(bearer):
    return bearer()


@pytest.fixture
def api(app):
    """A client with no session: its requests carry a bearer token."""
    return app.test_client()


def entries(engine, action: str) -> list[dict]:
    """The audit entries of one action, oldest first, with `detail` parsed when it is JSON."""
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(
            sql("SELECT * FROM audit_log WHERE action = :a ORDER BY id"), {"a": action})]
    for row in rows:
        if row["detail"].startswith(("{", "[")):
            row["detail"] = json.loads(row["detail"])
    return rows


def the_entry(engine, action: str, who: dict, object_type: str, object_id, dataset: str | None = "events") -> dict:
    """The one entry of `action`; checks who made it and on which object and dataset; returns it."""
    found = entries(engine, action)
    assert len(found) == 1, found
    entry = found[0]
    assert {k: entry[k] for k in who} == who
    assert (entry["object_type"], entry["object_id"], entry["dataset"]) == (object_type, str(object_id), dataset)
    return entry


def value(engine, query: str, **params):
    with engine.connect() as conn:
        return conn.execute(sql(query), params).scalar()


def drain(app):
    return app.extensions["sluice_runs"].drain()


def api_upload(api, headers, content: bytes = b'[{"key": "a", "name": "n", "value": 1, "ts": "2025-01-01T00:00:00Z"}]',
               filename: str = "api.json"):
    response = api.post(f"/api/runs?filename={filename}", data=content, content_type="application/json",
                        headers=headers)
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()


def test_an_upload_by_page_and_by_api_is_audited_with_who_made_it(client, api, app, engine, oper):
    headers, token_id = oper
    assert upload(client, SAMPLE_INPUT.read_bytes(), "sample.json").status_code == 303
    run_id = value(engine, "SELECT max(id) FROM runs")
    entry = the_entry(engine, "upload", ADMIN, "run", run_id)
    assert entry["detail"] == {"file": "sample.json", "size": SAMPLE_INPUT.stat().st_size}
    assert value(engine, "SELECT created_by FROM runs WHERE id = :i", i=run_id) == "admin"

    run = api_upload(api, headers)
    assert run["created_by"] == "oper (token ci)" and run["cancelled_by"] is None
    found = entries(engine, "upload")
    assert len(found) == 2 and {k: found[1][k] for k in who_of(token_id)} == who_of(token_id)
    assert (found[1]["object_id"], found[1]["detail"]["file"]) == (str(run["id"]), "api.json")
    assert client.get(f"/api/runs/{run_id}").get_json()["created_by"] == "admin"


def test_cancel_and_retry_by_page_and_by_api(client, api, app, engine, oper):
    headers, token_id = oper
    first = api_upload(api, headers)["id"]
    assert client.post(f"/runs/{first}/cancel", data={"csrf_token": token(client, f"/runs/{first}")}).status_code == 303
    entry = the_entry(engine, "run_cancel", ADMIN, "run", first)
    assert entry["detail"] == {"was": "queued"}
    retried = api.post(f"/api/runs/{first}/retry", headers=headers)
    assert retried.status_code == 202
    new = retried.get_json()
    assert new["created_by"] == "oper (token ci)"
    entry = the_entry(engine, "run_retry", who_of(token_id), "run", first)
    assert entry["detail"] == {"new_run": new["id"]}
    assert api.get(f"/api/runs/{first}", headers=headers).get_json()["cancelled_by"] == "admin"

    # The other way round: cancelled over the API, retried on the page.
    cancelled = api.post(f"/api/runs/{new['id']}/cancel", headers=headers)
    assert cancelled.status_code == 202 and cancelled.get_json()["cancelled_by"] == "oper (token ci)"
    assert value(engine, "SELECT cancelled_by FROM runs WHERE id = :i", i=new["id"]) == "oper (token ci)"
    response = client.post(f"/runs/{new['id']}/retry", data={"csrf_token": token(client, f"/runs/{new['id']}")})
    assert response.status_code == 303
    latest = value(engine, "SELECT max(id) FROM runs")
    assert value(engine, "SELECT created_by FROM runs WHERE id = :i", i=latest) == "admin"
    assert [(e["actor"], e["object_id"]) for e in entries(engine, "run_retry")] == [
        ("oper (token ci)", str(first)), ("admin", str(new["id"]))]
    # A refused cancel (the run is cancelled already) writes nothing.
    assert api.post(f"/api/runs/{first}/cancel", headers=headers).status_code == 409
    assert len(entries(engine, "run_cancel")) == 2


def test_cancelling_a_running_run_says_who_asked(client, app, engine):
    assert upload(client, SAMPLE_INPUT.read_bytes(), "sample.json").status_code == 303
    svc = app.extensions["sluice_runs"]
    run_id = svc.claim_next()  # running now, by this process
    assert client.post(f"/runs/{run_id}/cancel", data={"csrf_token": token(client, f"/runs/{run_id}")}).status_code == 303
    assert the_entry(engine, "run_cancel", ADMIN, "run", run_id)["detail"] == {"was": "running"}
    svc.execute(run_id)
    assert (value(engine, "SELECT status FROM runs WHERE id = :i", i=run_id),
            value(engine, "SELECT cancelled_by FROM runs WHERE id = :i", i=run_id)) == ("cancelled", "admin")


def _post(client, url: str, page: str, **data):
    return client.post(url, data={"csrf_token": token(client, page), **data})


def test_dead_letter_actions_on_the_pages(client, app, conn, engine, write):
    load(conn, write, BAD)
    # Reprocess as it is: rejected again, but the attempt is the admin's.
    assert _post(client, "/dead-letters/1/reprocess", "/dead-letters/1").status_code == 303
    run_id = value(engine, "SELECT max(id) FROM runs")
    assert the_entry(engine, "reprocess", ADMIN, "dead_letter", 1)["detail"] == {"run": run_id}
    assert value(engine, "SELECT created_by FROM runs WHERE id = :i", i=run_id) == "admin"
    assert value(engine, "SELECT updated_by FROM dead_letters WHERE id = 1") == "admin"
    assert value(engine, "SELECT actor FROM lineage WHERE step = 'reprocessed' AND dead_letter_id = 1") == "admin"
    # Edit and retry.
    edited = json.dumps({"key": "v1", "name": "n", "value": 1, "ts": GOOD_TS})
    assert _post(client, "/dead-letters/1/edit", "/dead-letters/1", raw=edited).status_code == 303
    second = entries(engine, "reprocess")[1]
    assert second["detail"] == {"run": run_id + 1, "edited": True} and second["object_id"] == "1"
    assert value(engine, "SELECT status FROM dead_letters WHERE id = 1") == "resolved"
    # Discard with a reason, then reopen.
    assert _post(client, "/dead-letters/3/discard", "/dead-letters/3", reason="test data").status_code == 303
    assert the_entry(engine, "discard", ADMIN, "dead_letter", 3)["detail"] == {"reason": "test data"}
    assert value(engine, "SELECT updated_by FROM dead_letters WHERE id = 3") == "admin"
    assert value(engine, "SELECT actor FROM lineage WHERE step = 'discarded' AND dead_letter_id = 3") == "admin"
    assert _post(client, "/dead-letters/3/reopen", "/dead-letters/3").status_code == 303
    the_entry(engine, "reopen", ADMIN, "dead_letter", 3)
    assert value(engine, "SELECT actor FROM lineage WHERE step = 'reopened' AND dead_letter_id = 3") == "admin"
    # A refused discard (dead letter 1 is resolved) writes no entry.
    refused = client.post("/dead-letters/1/discard", data={"csrf_token": token(client)}, follow_redirects=True)
    assert "only open ones" in refused.get_data(as_text=True)
    assert len(entries(engine, "discard")) == 1


def _bulk(client, action: str, count: int, **data):
    page = client.get(f"/dead-letters/bulk?action={action}").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    return client.post("/dead-letters/bulk", data={"csrf_token": csrf, "action": action, "error": "", "run": "",
                                                   "confirm": str(count), **data})


def test_bulk_actions_on_the_pages_are_one_entry_each(client, conn, engine, write):
    load(conn, write, BAD)
    assert _bulk(client, "reprocess", 4).status_code == 303
    run_id = value(engine, "SELECT max(id) FROM runs")
    entry = the_entry(engine, "reprocess", ADMIN, "dead_letters", "4 dead letters")
    assert entry["detail"] == {"ids": [1, 2, 3, 4], "count": 4, "run": run_id}
    assert value(engine, "SELECT count(*) FROM dead_letters WHERE updated_by = 'admin'") == 4
    assert _bulk(client, "discard", 4, reason="junk").status_code == 303
    entry = the_entry(engine, "discard", ADMIN, "dead_letters", "4 dead letters")
    assert entry["detail"] == {"ids": [1, 2, 3, 4], "count": 4, "reason": "junk"}
    assert value(engine, "SELECT count(*) FROM lineage WHERE step = 'discarded' AND actor = 'admin'") == 4


def test_dead_letter_actions_over_the_api(api, conn, engine, write, oper):
    headers, token_id = oper
    who = who_of(token_id)
    load(conn, write, BAD)
    done = api.post("/api/dead-letters/2/reprocess", json={"raw": {"key": "v2", "name": "n", "value": 2,
                                                                   "ts": GOOD_TS}}, headers=headers)
    assert done.status_code == 200
    body = done.get_json()
    assert body["dead_letter"]["updated_by"] == "oper (token ci)"
    assert [h["actor"] for h in body["dead_letter"]["history"] if h["step"] == "reprocessed"] == ["oper (token ci)"]
    entry = the_entry(engine, "reprocess", who, "dead_letter", 2)
    assert entry["detail"] == {"run": body["run"]["run_id"], "edited": True}
    discarded = api.post("/api/dead-letters/3/discard", json={"reason": "dup"}, headers=headers)
    assert discarded.status_code == 200 and discarded.get_json()["updated_by"] == "oper (token ci)"
    assert the_entry(engine, "discard", who, "dead_letter", 3)["detail"] == {"reason": "dup"}
    assert api.post("/api/dead-letters/3/reopen", headers=headers).status_code == 200
    the_entry(engine, "reopen", who, "dead_letter", 3)
    listed = {d["id"]: d for d in api.get("/api/dead-letters", headers=headers).get_json()["items"]}
    assert (listed[3]["updated_by"], listed[4]["updated_by"]) == ("oper (token ci)", None)
    # Refused: dead letter 2 is resolved; the reopen of an open one. Neither writes an entry.
    assert api.post("/api/dead-letters/2/discard", headers=headers).status_code == 409
    assert api.post("/api/dead-letters/4/reopen", headers=headers).status_code == 409
    assert (len(entries(engine, "discard")), len(entries(engine, "reopen"))) == (1, 1)
    bulk = api.post("/api/dead-letters/discard", json={"confirm": 3, "reason": "bulk"}, headers=headers)
    assert bulk.status_code == 200 and bulk.get_json()["count"] == 3
    entry = entries(engine, "discard")[1]
    assert (entry["object_type"], entry["object_id"], entry["actor"]) == ("dead_letters", "3 dead letters",
                                                                          "oper (token ci)")
    assert entry["detail"] == {"ids": [1, 3, 4], "count": 3, "reason": "bulk"}


def test_watermark_set_and_reset_by_page_api_and_cli(client, api, runner, engine, oper):
    headers, token_id = oper
    response = client.post("/watermarks/set", data={
        "csrf_token": token(client, "/watermarks/confirm?value=2025-01-08T00:00:00Z"), "value": "2025-01-08T00:00:00"})
    assert response.status_code == 303
    entry = the_entry(engine, "watermark_set", ADMIN, "watermark", "events_ts")
    assert entry["detail"] == {"from": None, "to": "2025-01-08T00:00:00"}
    put = api.put("/api/watermarks/events_ts", json={"value": "2025-01-09T00:00:00Z"}, headers=headers)
    assert put.status_code == 200
    assert put.get_json()["history"][0]["actor"] == "oper (token ci)"
    assert entries(engine, "watermark_set")[1]["detail"] == {"from": "2025-01-08T00:00:00",
                                                            "to": "2025-01-09T00:00:00"}
    assert api.delete("/api/watermarks/events_ts", headers=headers).status_code == 200
    entry = the_entry(engine, "watermark_reset", who_of(token_id), "watermark", "events_ts")
    assert entry["detail"] == {"from": "2025-01-09T00:00:00", "to": None}
    cli = etl(runner, "watermark", "--set", "2025-01-10T00:00:00Z", "--yes")
    assert cli.exit_code == 0, cli.output
    assert {k: entries(engine, "watermark_set")[2][k] for k in CLI_WHO} == CLI_WHO
    assert f"→ 2025-01-10T00:00:00  via cli by {CLI}" in cli.output
    assert etl(runner, "watermark", "--reset", "--yes").exit_code == 0
    assert client.post("/watermarks/reset", data={
        "csrf_token": token(client, "/")}).status_code == 303  # no Reset is offered when there is none
    with engine.connect() as conn:
        history = [a for (a,) in conn.execute(sql("SELECT actor FROM watermark_history ORDER BY id"))]
    assert history == ["admin", "oper (token ci)", "oper (token ci)", CLI, CLI, "admin"]
    assert [e["actor"] for e in entries(engine, "watermark_reset")] == ["oper (token ci)", CLI, "admin"]
    # A refused value (in the future) writes nothing.
    assert api.put("/api/watermarks/events_ts", json={"value": "2999-01-01T00:00:00Z"},
                   headers=headers).status_code == 422
    assert len(entries(engine, "watermark_set")) == 3


def _dataset_who(engine, name: str) -> tuple:
    return (value(engine, "SELECT created_by FROM datasets WHERE name = :n", n=name),
            value(engine, "SELECT archived_by FROM datasets WHERE name = :n", n=name))


def _version_actors(engine, name: str) -> list:
    with engine.connect() as conn:
        return [a for (a,) in conn.execute(sql("SELECT actor FROM dataset_versions WHERE dataset = :n "
                                               "ORDER BY version"), {"n": name})]


def test_dataset_changes_on_the_pages(client, engine):
    name = f"pg_{uuid.uuid4().hex[:8]}"
    created = client.post("/datasets/new", data={"csrf_token": token(client, "/datasets/new"), "name": name,
                                                  "shape_json": json.dumps(SHAPE),
                                                  "create_from_json": "Create from this JSON"})
    assert created.status_code == 303
    assert the_entry(engine, "dataset_create", ADMIN, "dataset", name, name)["detail"] == {
        "version": 1, "changes": ["created"]}
    evolved = client.post(f"/datasets/{name}", data={"csrf_token": token(client, f"/datasets/{name}"),
                                                     "title": "Now titled", "description": "", "save": "Save",
                                                     "existing-0-name": "n"})
    assert evolved.status_code == 303
    entry = the_entry(engine, "dataset_evolve", ADMIN, "dataset", name, name)
    assert entry["detail"]["version"] == 2 and "title" in entry["detail"]["changes"][0]
    assert _post(client, f"/datasets/{name}/archive", f"/datasets/{name}/archive").status_code == 303
    the_entry(engine, "dataset_archive", ADMIN, "dataset", name, name)
    assert _dataset_who(engine, name) == ("admin", "admin")
    assert _version_actors(engine, name) == ["admin"] * 3


def test_dataset_changes_over_the_api_and_the_cli(api, runner, engine, write, bearer):
    headers, token_id = bearer("boss", "admin")
    who = who_of(token_id, "boss (token ci)", "boss")
    name = f"api_{uuid.uuid4().hex[:8]}"
    assert api.post("/api/datasets", json={"name": name, "shape": SHAPE}, headers=headers).status_code == 201
    the_entry(engine, "dataset_create", who, "dataset", name, name)
    assert api.patch(f"/api/datasets/{name}", json={"title": "T"}, headers=headers).status_code == 200
    the_entry(engine, "dataset_evolve", who, "dataset", name, name)
    assert api.post(f"/api/datasets/{name}/archive", headers=headers).status_code == 200
    the_entry(engine, "dataset_archive", who, "dataset", name, name)
    assert _dataset_who(engine, name) == ("boss (token ci)",) * 2
    # Refused: a taken name, an archived dataset's archive. Neither writes an entry.
    assert api.post("/api/datasets", json={"name": name, "shape": SHAPE}, headers=headers).status_code == 409
    assert api.post(f"/api/datasets/{name}/archive", headers=headers).status_code == 409
    assert (len(entries(engine, "dataset_create")), len(entries(engine, "dataset_archive"))) == (1, 1)

    other = f"cli_{uuid.uuid4().hex[:8]}"
    shape = write("shape.json", json.dumps(SHAPE))
    assert etl(runner, "dataset", "create", other, "--shape", shape).exit_code == 0
    assert etl(runner, "dataset", "evolve", other, "--title", "T").exit_code == 0
    assert etl(runner, "dataset", "archive", other).exit_code == 0
    for action in ("dataset_create", "dataset_evolve", "dataset_archive"):
        entry = entries(engine, action)[-1]
        assert {k: entry[k] for k in CLI_WHO} == CLI_WHO and entry["object_id"] == other == entry["dataset"]
    assert _dataset_who(engine, other) == (CLI, CLI)
    assert _version_actors(engine, other) == [CLI] * 3


def test_the_command_line_acts_as_cli_and_the_os_user(runner, engine):
    ran = etl(runner, "run", SAMPLE_INPUT)
    assert ran.exit_code == 0, ran.output
    run_id = json.loads(ran.output)["run_id"]
    entry = the_entry(engine, "upload", CLI_WHO, "run", run_id)
    assert entry["detail"] == {"file": SAMPLE_INPUT.name, "size": SAMPLE_INPUT.stat().st_size}
    assert value(engine, "SELECT created_by FROM runs WHERE id = :i", i=run_id) == CLI
    assert etl(runner, "reprocess", 2).exit_code == 0
    the_entry(engine, "reprocess", CLI_WHO, "dead_letter", 2)
    assert value(engine, "SELECT updated_by FROM dead_letters WHERE id = 2") == CLI
    assert etl(runner, "discard", 1, 2, "--reason", "sample").exit_code == 0
    entry = the_entry(engine, "discard", CLI_WHO, "dead_letters", "2 dead letters")
    assert entry["detail"] == {"ids": [1, 2], "count": 2, "reason": "sample"}
    assert etl(runner, "discard", 1).exit_code != 0  # discarded already: refused, no entry
    assert len(entries(engine, "discard")) == 1


def test_an_upload_waiting_for_the_write_lock_is_audited_when_its_run_moves(client, api, app, engine, oper):
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL records every run and its audit entry in `runs` at once")
    headers, _ = oper
    csrf = token(client, "/")
    with HeldApplyLock(engine):
        thread, outcome = in_a_thread(client.post, "/upload", content_type="multipart/form-data", data={
            "csrf_token": csrf, "files": [(io.BytesIO(SAMPLE_INPUT.read_bytes()), "during.json")]})
        thread.join(timeout=60)
        assert not thread.is_alive() and outcome["value"].status_code == 303  # at once, the lock still held
        run_id = int(outcome["value"].headers["Location"].rsplit("/", 1)[1])
        assert client.get(f"/api/runs/{run_id}").get_json()["created_by"] == "admin"  # waiting in the intake
        assert entries(engine, "upload") == []  # written when the run moves into `runs`
        # A second one, cancelled while it waits: its cancel does not wait either.
        other = in_a_thread(api_upload, api, headers)
        other[0].join(timeout=60)
        other_id = other[1]["value"]["id"]
        cancel = in_a_thread(api.post, f"/api/runs/{other_id}/cancel", headers=headers)
        cancel[0].join(timeout=60)
        assert cancel[1]["value"].status_code == 202
    assert drain(app) == [run_id]
    uploads = sorted(entries(engine, "upload"), key=lambda e: int(e["object_id"]))
    assert [(e["object_id"], e["actor"], e["address"]) for e in uploads] == [
        (str(run_id), "admin", "127.0.0.1"), (str(other_id), "oper (token ci)", "127.0.0.1")]
    assert value(engine, "SELECT created_by FROM runs WHERE id = :i", i=run_id) == "admin"
    assert (value(engine, "SELECT status FROM runs WHERE id = :i", i=other_id),
            value(engine, "SELECT cancelled_by FROM runs WHERE id = :i", i=other_id)) == ("cancelled",
                                                                                      "oper (token ci)")
    cancels = entries(engine, "run_cancel")
    assert [(e["object_id"], e["actor"], e["detail"]) for e in cancels] == [
        (str(other_id), "oper (token ci)", {"was": "queued"})]
    assert drain(app) == [] and len(entries(engine, "upload")) == 2  # moved once, written once
