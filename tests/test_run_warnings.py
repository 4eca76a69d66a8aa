"""Warnings of a run that succeeded but needs attention (SPEC §5), everywhere a run is shown; backfill in one click."""
import json
import os
import re

import pytest

from app.pipeline import Options, reprocess, run_file

from .conftest import SAMPLE_INPUT, sign_in_as
from .test_pages_helpers import load, text, token

OLD, NEW = "2024-06-01T00:00:00Z", "2025-01-15T12:00:00Z"


def rec(key: str, ts: str = NEW, **extra) -> dict:
    return {"key": key, "name": "n", "value": 1, "ts": ts, **extra}


BAD = {"name": "no key", "value": 1, "ts": NEW}


def codes_everywhere(client, run_id: int) -> dict:
    """A run's warning codes as the run page, runs list, home page, API, summary and live lists' poll show them."""
    page = text(client.get(f"/runs/{run_id}"))
    row = re.compile(rf'<tr data-run="{run_id}".*?</tr>', re.DOTALL)
    marker = re.compile(r'class="warn-marker" data-warnings="([a-z_ ]*)"')

    def marked(body: str) -> list[str]:
        found = marker.search(row.search(body).group(0))
        return found.group(1).split() if found else []

    summary = json.loads(client.get(f"/runs/{run_id}/summary.json").data)
    api = client.get(f"/api/runs/{run_id}").json
    return {
        "page": re.findall(r'<li data-warning="([a-z_]+)"', page),
        "runs": marked(text(client.get("/runs"))),
        "home": marked(text(client.get("/"))),
        "api": [w["code"] for w in api["warnings"]],
        "api_summary": [w["code"] for w in api["summary"]["warnings"]],
        "summary": [w["code"] for w in summary["warnings"]],
        "live": [w["code"] for w in client.get(f"/runs/status.json?ids={run_id}").json["runs"][0]["warnings"]],
    }


def assert_shown(client, run_id: int, codes: list[str]) -> None:
    assert codes_everywhere(client, run_id) == dict.fromkeys(
        ("page", "runs", "home", "api", "api_summary", "summary", "live"), codes)


def test_a_clean_run_has_no_warnings(client, conn):
    summary = run_file(conn, SAMPLE_INPUT)  # the sample: 5 loaded, 2 of 7 rejected
    assert summary["warnings"] == [] and summary["loaded"] == 5
    assert_shown(client, summary["run_id"], [])
    assert "Needs attention" not in text(client.get(f"/runs/{summary['run_id']}"))


def test_every_record_rejected(client, conn, write):
    run_id = load(conn, write, [BAD, BAD | {"ts": OLD}])["run_id"]
    assert_shown(client, run_id, ["all_rejected"])
    assert "Every one of the 2 records was rejected" in text(client.get(f"/runs/{run_id}"))


def test_more_than_half_rejected(client, conn, write):
    run_id = load(conn, write, [rec("a"), BAD, BAD | {"value": 2}])["run_id"]
    assert_shown(client, run_id, ["high_reject_rate"])
    assert "2 of 3 records (67%) were rejected" in text(client.get(f"/runs/{run_id}"))
    # Half is not more than half.
    assert load(conn, write, [rec("b"), BAD], name="half.jsonl")["warnings"] == []


def test_a_reprocess_in_which_every_record_failed_again(client, loaded, engine):
    with engine.connect() as conn:
        summary = reprocess(conn, [1, 2])  # the sample's two dead letters, unchanged: they fail again
    assert (summary["input_records"], summary["rejected"]) == (2, 2)
    assert_shown(client, summary["run_id"], ["reprocess_all_failed"])  # not all_rejected as well
    assert "reprocessed records failed again" in text(client.get(f"/runs/{summary['run_id']}"))


def test_a_dry_run(client, conn):
    summary = run_file(conn, SAMPLE_INPUT, options=Options(dry_run=True))
    assert_shown(client, summary["run_id"], ["dry_run"])
    assert client.get("/api/target").json["items"] == []  # nothing was kept, as it says


def backfill_entries(admin_client) -> list[tuple]:
    """Who backfilled which run into which new one, as the audit log's export says."""
    rows = json.loads(admin_client.get("/audit/export.json?action=run_backfill").data)
    return [(r["actor"], r["action_words"], r["object_id"], r["detail"]) for r in rows]


@pytest.fixture
def all_skipped(client, conn, write) -> int:
    """Run 2 skipped both its records as older than run 1's watermark; its file is kept."""
    load(conn, write, [rec("new")], name="new.jsonl")
    summary = load(conn, write, [rec("old-1", ts=OLD), rec("old-2", ts=OLD)], name="old.jsonl")
    assert (summary["skipped"], summary["loaded"], summary["run_id"]) == (2, 0, 2)
    return summary["run_id"]


def test_all_skipped_offers_a_backfill_that_loads_the_records(client, app, all_skipped, make_user, admin_user):
    assert_shown(client, all_skipped, ["all_skipped"])
    oper = make_user("oper", "operator")
    sign_in_as(client, oper)
    page = text(client.get(f"/runs/{all_skipped}"))
    assert "all 2 records were older than the watermark 2025-01-15T12:00:00" in page
    assert "Run this file again as a backfill</button>" in page
    response = client.post(f"/runs/{all_skipped}/backfill", data={"csrf_token": token(client, f"/runs/{all_skipped}")})
    assert response.status_code == 303 and response.headers["Location"].endswith("/runs/3")
    app.extensions["sluice_runs"].drain()
    page = text(client.get("/runs/3"))
    assert 'id="run-status" data-status="succeeded"' in page and "backfill yes" in page
    assert f'backfill of run <a href="/runs/{all_skipped}">#{all_skipped}</a>' in page
    assert "backfilled by oper" in page
    summary = json.loads(client.get("/runs/3/summary.json").data)
    assert (summary["skipped"], summary["loaded"], summary["warnings"]) == (0, 2, [])
    assert {r["key"] for r in client.get("/api/target").json["items"]} == {"new", "old-1", "old-2"}
    assert client.get("/api/runs/3").json["options"]["backfill_of"] == all_skipped
    assert 'Backfilled by</dt><dd id="backfilled-by"><a href="/runs/3">#3</a>' in text(client.get(f"/runs/{all_skipped}"))
    sign_in_as(client, admin_user)  # the audit log is the administrators'
    assert backfill_entries(client) == [("oper", "backfilled a run", str(all_skipped), {"new_run": 3})]


def test_a_viewer_sees_the_warning_but_cannot_backfill(client, all_skipped, make_user):
    csrf = token(client, f"/runs/{all_skipped}")
    sign_in_as(client, make_user("vera", "viewer"))
    page = text(client.get(f"/runs/{all_skipped}"))
    assert 'data-warning="all_skipped"' in page and "as a backfill</button>" not in page
    assert client.post(f"/runs/{all_skipped}/backfill", data={"csrf_token": csrf}).status_code == 403
    assert client.get("/api/runs").json["items"][0]["id"] == all_skipped  # no run was queued


def test_backfill_needs_the_file_and_an_all_skipped_run(client, conn, all_skipped):
    csrf = token(client, f"/runs/{all_skipped}")
    refused = client.post("/runs/1/backfill", data={"csrf_token": csrf}, follow_redirects=True)
    assert "Run #1 cannot be backfilled" in text(refused)
    with conn.begin():
        path = conn.exec_driver_sql(f"SELECT file_path FROM runs WHERE id = {all_skipped}").scalar()
    os.remove(path)
    page = text(client.get(f"/runs/{all_skipped}"))
    assert "as a backfill</button>" not in page and "upload it again with backfill on" in page
    gone = client.post(f"/runs/{all_skipped}/backfill", data={"csrf_token": csrf}, follow_redirects=True)
    assert "no longer stored" in text(gone)
    assert [r["id"] for r in client.get("/api/runs").json["items"]] == [2, 1]


def test_backfill_over_the_api(client, app, all_skipped, make_user, engine):
    from app.accounts.actor import Actor
    from app.accounts.tokens import create_token

    oper = make_user("oper", "operator")
    with engine.connect() as conn:
        secret = create_token(conn, oper, "ci", Actor.of_user(oper.id, oper.name))[0]
    headers = {"Authorization": f"Bearer {secret}"}
    api = app.test_client()
    response = api.post(f"/api/runs/{all_skipped}/backfill", headers=headers)
    assert response.status_code == 202 and response.headers["Location"].endswith("/api/runs/3")
    assert response.json["options"] == {"ignore_watermark": True, "max_reject_rate": None, "dry_run": False,
                                        "backfill_of": all_skipped}
    assert api.post("/api/runs/1/backfill", headers=headers).status_code == 409
    app.extensions["sluice_runs"].drain()
    assert api.get("/api/runs/3", headers=headers).json["summary"]["loaded"] == 2
    assert backfill_entries(client) == [("oper (token ci)", "backfilled a run", str(all_skipped), {"new_run": 3})]
