"""Dead letters (SPEC §4): the same record again, reprocess unchanged or edited, discard and reopen."""

import json
from datetime import timedelta

import pytest

from app.accounts.actor import Actor
from app.pipeline import DeadLetterError, Settings, discard, parse_edit, reopen, reprocess
from app.pipeline.load import ANALYZE_DEAD_LETTERS
from app.pipeline.validate import canonical, utc_now

from .pipeline_helpers import fetch, load, rec, scalar, target


def dead_letters(conn):
    return fetch(conn, "SELECT * FROM dead_letters ORDER BY id")


def one(conn, dl_id):
    return fetch(conn, "SELECT * FROM dead_letters WHERE id = :i", i=dl_id)[0]


def steps(conn, run_id):
    return [
        tuple(r)
        for r in fetch(
            conn, "SELECT key, step, dead_letter_id FROM lineage WHERE run_id = :r ORDER BY id", r=run_id
        )
    ]


def test_the_same_record_again_counts_a_sighting_instead_of_a_second_dead_letter(conn, write):
    bad = [rec(key="x", value="abc"), {"key": "y", "name": "n", "value": 1}]
    first = load(conn, write, bad + [rec(key="x", value="abc")])  # twice in one file, too
    assert (first["rejected"], first["dead_letters"]) == (3, 2)
    second = load(conn, write, bad)
    assert (second["rejected"], second["dead_letters"]) == (2, 0)
    rows = dead_letters(conn)
    assert [(r.key, r.error, r.sightings, r.run_id, r.last_run_id) for r in rows] == [
        ("x", "invalid_value", 3, first["run_id"], second["run_id"]),
        ("y", "missing_timestamp", 2, first["run_id"], second["run_id"]),
    ]
    # Each sighting still has its lineage entry, linked to the one dead letter.
    assert steps(conn, second["run_id"]) == [("x", "rejected", rows[0].id), ("y", "rejected", rows[1].id)]
    # The same raw with another error, or a differently written record, is another dead letter.
    third = load(conn, write, [{"value": "abc", "key": "x", "name": "n", "ts": "2025-01-15T12:00:00"}])
    assert third["dead_letters"] == 1
    # Once the first is no longer open, the same record makes a new one.
    discard(conn, [rows[0].id])
    assert load(conn, write, bad[:1])["dead_letters"] == 1
    assert len(dead_letters(conn)) == 4


def test_reprocess_unchanged_resolves_with_the_outcome(conn, write):
    soon = canonical(utc_now() + timedelta(hours=2))
    first = load(conn, write, [rec(key="a", ts=soon)], settings=Settings(future_tolerance=timedelta(0)))
    (dl,) = dead_letters(conn)
    assert dl.error == "future_timestamp"
    summary = reprocess(conn, [dl.id])  # the default tolerance accepts it now
    assert (
        summary["status"],
        summary["input_records"],
        summary["staged"],
        summary["inserted"],
        summary["dead_letters"],
    ) == ("succeeded", 1, 1, 1, 0)
    dl = one(conn, dl.id)
    assert (dl.status, dl.outcome, dl.resolved_run_id, dl.attempts, dl.run_id) == (
        "resolved",
        "inserted",
        summary["run_id"],
        1,
        first["run_id"],
    )
    assert steps(conn, summary["run_id"]) == [
        ("a", "reprocessed", dl.id),
        ("a", "staged", None),
        ("a", "inserted", None),
    ]
    assert fetch(
        conn, "SELECT kind, status, dead_letter_id FROM runs WHERE id = :r", r=summary["run_id"]
    ) == [("reprocess", "succeeded", dl.id)]
    assert target(conn)["a"][2] == soon


def test_reprocess_with_an_edit_loads_it_under_the_new_key(conn, write):
    load(conn, write, [rec(key="", value="abc", note="kept")])
    (dl,) = dead_letters(conn)
    assert (dl.key, dl.error) == (None, "missing_key")
    edited = parse_edit(
        '{"key": " fixed ", "name": "n", "value": "4.5", "ts": "2025-01-15T12:00:00", "note": "kept"}'
    )
    summary = reprocess(conn, [dl.id], edited=edited)
    assert (summary["inserted"], summary["rejected"]) == (1, 0)
    assert target(conn)["fixed"] == ("n", 4.5, "2025-01-15T12:00:00")
    dl = one(conn, dl.id)
    assert (dl.status, dl.outcome, dl.attempts) == ("resolved", "inserted", 1)
    assert (
        dl.raw == '{"key":"","name":"n","value":"abc","ts":"2025-01-15T12:00:00","note":"kept"}'
    )  # untouched
    assert json.loads(dl.last_raw) == edited
    assert steps(conn, summary["run_id"]) == [
        ("fixed", "reprocessed", dl.id),
        ("fixed", "staged", None),
        ("fixed", "inserted", None),
    ]


def test_a_retry_that_fails_again_keeps_it_open_with_the_new_error(conn, write):
    load(conn, write, [rec(key="a", value="abc")])
    (dl,) = dead_letters(conn)
    original = dl.raw
    summary = reprocess(conn, [dl.id])  # unchanged: the same error
    assert (summary["rejected"], summary["dead_letters"], summary["staged"]) == (1, 0, 0)
    again = reprocess(
        conn, [dl.id], edited={"key": "a", "name": "n", "value": 1, "ts": "2025-02-30T00:00:00"}
    )
    assert again["rejected"] == 1
    dl = one(conn, dl.id)
    assert (dl.status, dl.error, dl.attempts, dl.raw) == ("open", "invalid_timestamp", 2, original)
    assert dl.detail == "ts '2025-02-30T00:00:00' is not a timestamp like 2025-01-15T12:30:00Z"
    assert json.loads(dl.last_raw)["ts"] == "2025-02-30T00:00:00"
    assert steps(conn, again["run_id"]) == [("a", "reprocessed", dl.id), ("a", "rejected", dl.id)]
    assert len(dead_letters(conn)) == 1
    # The next unchanged retry uses the last attempted JSON.
    fixed = reprocess(
        conn, [dl.id], edited={"key": "a", "name": "n", "value": 1, "ts": "2025-02-28T00:00:00"}
    )
    assert fixed["inserted"] == 1
    assert (one(conn, dl.id).status, one(conn, dl.id).attempts) == ("resolved", 3)


def test_reprocess_ignores_the_watermark_but_keeps_the_stale_rule(conn, write):
    load(
        conn,
        write,
        [
            rec(key="a", value=1, ts="2025-01-15T12:00:00"),
            rec(key="old", value="abc", ts="2025-01-01T00:00:00"),
            rec(key="a", value="abc", ts="2025-01-10T00:00:00"),
        ],
    )
    old_dl, a_dl = dead_letters(conn)
    first = reprocess(conn, [old_dl.id], edited=rec(key="old", value=2, ts="2025-01-01T00:00:00"))
    assert (first["skipped"], first["inserted"]) == (0, 1)  # older than the watermark, yet loaded
    second = reprocess(conn, [a_dl.id], edited=rec(key="a", value=2, ts="2025-01-10T00:00:00"))
    assert second["stale"] == 1
    assert target(conn)["a"] == ("n", 1.0, "2025-01-15T12:00:00")
    a_dl = one(conn, a_dl.id)
    assert (a_dl.status, a_dl.outcome) == (
        "resolved",
        "stale",
    )  # passing validation resolves it, whatever the outcome


def test_reprocessing_a_resolved_dead_letter_is_refused(conn, write):
    load(
        conn,
        write,
        [
            rec(key="k", value="x", ts="2025-01-15T12:00:00"),
            rec(key="k", value="y", ts="2025-01-15T13:00:00"),
            rec(key="bad", value="z"),
        ],
    )
    ids = [r.id for r in dead_letters(conn)]
    first = reprocess(conn, ids[:1], edited=rec(key="k", value=1, ts="2025-01-15T12:00:00"))
    second = reprocess(conn, ids[1:2], edited=rec(key="k", value=2, ts="2025-01-15T13:00:00"))
    assert (first["inserted"], second["updated"]) == (1, 1)
    summary = reprocess(conn, ids[2:])
    assert summary["rejected"] == 1
    with pytest.raises(DeadLetterError) as refused:
        reprocess(conn, ids)
    assert refused.value.code == "conflict"
    assert f"dead letter {ids[0]} is resolved" in str(refused.value)


def test_a_bulk_retry_resolves_duplicates_as_superseded(conn, write):
    soon = canonical(utc_now() + timedelta(hours=2))
    later = canonical(utc_now() + timedelta(hours=3))
    load(
        conn,
        write,
        [rec(key="k", value=1, ts=soon), rec(key="k", value=2, ts=later), rec(key="j", ts=soon)],
        settings=Settings(future_tolerance=timedelta(0)),
    )
    ids = [r.id for r in dead_letters(conn)]
    summary = reprocess(conn, ids)
    assert (summary["input_records"], summary["superseded"], summary["inserted"]) == (3, 1, 2)
    assert [(r.status, r.outcome) for r in dead_letters(conn)] == [
        ("resolved", "superseded"),
        ("resolved", "inserted"),
        ("resolved", "inserted"),
    ]
    assert target(conn)["k"][1] == 2.0


def test_a_malformed_line_can_be_retried_with_an_edit(conn, write):
    from app.pipeline import run_file

    run_file(
        conn,
        write(
            "in.jsonl", '{"key": "a", "name": "n", "value": 1, "ts": "2025-01-15T12:00:00"}\n{"key": "b",\n'
        ),
    )
    (dl,) = dead_letters(conn)
    assert (dl.error, dl.raw, dl.line) == ("malformed_json", '{"key": "b",', 2)
    unchanged = reprocess(conn, [dl.id])
    assert unchanged["rejected"] == 1 and one(conn, dl.id).error == "malformed_json"
    fixed = reprocess(
        conn, [dl.id], edited=parse_edit('{"key": "b", "name": "n", "value": 1, "ts": "2025-01-15T12:00:00"}')
    )
    assert fixed["inserted"] == 1
    assert one(conn, dl.id).status == "resolved"


def test_discard_with_a_reason_and_reopen_are_recorded_in_lineage(conn, write):
    load(conn, write, [rec(key="a", value="abc"), rec(key="", value="abc")])
    a, b = (r.id for r in dead_letters(conn))
    assert discard(conn, [a, b], reason="  test data  ", actor=Actor("ops")) == 2
    rows = dead_letters(conn)
    assert [(r.status, r.reason) for r in rows] == [("discarded", "test data"), ("discarded", "test data")]
    with pytest.raises(DeadLetterError) as refused:
        reprocess(conn, [a])
    assert refused.value.code == "conflict" and "discarded" in str(refused.value)
    with pytest.raises(DeadLetterError) as again:
        discard(conn, [a])
    assert again.value.code == "conflict"
    assert reopen(conn, [a], actor=Actor("ops")) == 1
    assert one(conn, a).status == "open"
    with pytest.raises(DeadLetterError):
        reopen(conn, [a])
    entries = fetch(
        conn,
        "SELECT run_id, key, step, detail, dead_letter_id, actor FROM lineage "
        "WHERE step IN ('discarded', 'reopened') ORDER BY id",
    )
    assert [tuple(e) for e in entries] == [
        (None, "a", "discarded", "discarded: test data", a, "ops"),
        (None, "", "discarded", "discarded: test data", b, "ops"),
        (None, "a", "reopened", "reopened", a, "ops"),
    ]
    assert discard(conn, [a]) == 1
    assert fetch(conn, "SELECT detail FROM lineage WHERE step = 'discarded' ORDER BY id DESC LIMIT 1") == [
        ("discarded",)
    ]
    # A reopened dead letter can be retried.
    reopen(conn, [a])
    assert reprocess(conn, [a], edited=rec(key="a", value=1))["inserted"] == 1


def test_refusals_have_codes_and_change_nothing(conn, write):
    load(conn, write, [rec(key="a", value="abc"), rec(key="b", value="abc")])
    a, b = (r.id for r in dead_letters(conn))
    cases = [
        (lambda: reprocess(conn, [a, 999]), "not_found"),
        (lambda: reprocess(conn, []), "invalid"),
        (lambda: reprocess(conn, [a, b], edited=rec()), "invalid"),
        (lambda: discard(conn, [a, 999]), "not_found"),
        (lambda: discard(conn, []), "invalid"),
        (lambda: reopen(conn, []), "invalid"),
        (lambda: reopen(conn, [a]), "conflict"),
        (lambda: parse_edit('{"key": '), "invalid"),
        (lambda: parse_edit('{"key": "a", "value": NaN}'), "invalid"),
    ]
    for action, code in cases:
        with pytest.raises(DeadLetterError) as refused:
            action()
        assert refused.value.code == code
    assert [(r.status, r.attempts) for r in dead_letters(conn)] == [("open", 0), ("open", 0)]
    assert fetch(conn, "SELECT count(*) FROM runs") == [(1,)]
    assert fetch(conn, "SELECT count(*) FROM lineage WHERE step IN ('discarded', 'reprocessed')") == [(0,)]


def test_reopening_beside_an_open_dead_letter_of_the_same_record_merges_them(conn, write):
    bad = [rec(key="x", value="abc")]
    load(conn, write, bad)
    (a,) = (r.id for r in dead_letters(conn))
    discard(conn, [a], reason="noise")
    second = load(conn, write, bad)  # the discarded one does not count it: a new open dead letter
    load(conn, write, bad)
    b = dead_letters(conn)[-1].id
    assert [(r.id, r.status, r.sightings) for r in dead_letters(conn)] == [(a, "discarded", 1), (b, "open", 2)]

    assert reopen(conn, [a], actor=Actor("ops")) == 1
    rows = dead_letters(conn)
    # The older one stays open with every sighting; the other is closed, naming it, and counts none.
    assert [(r.id, r.status, r.sightings) for r in rows] == [(a, "open", 3), (b, "discarded", 0)]
    assert rows[1].reason == f"merged into dead letter {a}"
    assert rows[0].last_run_id == second["run_id"] + 1
    assert sum(r.sightings for r in rows) == 3
    merged = fetch(conn, "SELECT step, detail, actor FROM lineage WHERE dead_letter_id = :b AND run_id IS NULL",
                   b=b)
    assert [tuple(m) for m in merged] == [("discarded", f"merged into dead letter {a}: the same record and error",
                                           "ops")]
    # The next sighting goes to the one open dead letter.
    load(conn, write, bad)
    assert [(r.status, r.sightings) for r in dead_letters(conn)] == [("open", 4), ("discarded", 0)]


def test_reopening_several_of_one_record_at_once_keeps_one_open(conn, write):
    bad = [rec(key="x", value="abc")]
    ids = []
    for _ in range(3):
        load(conn, write, bad)
        ids.append(dead_letters(conn)[-1].id)
        discard(conn, [ids[-1]])
    assert reopen(conn, ids) == 3
    rows = dead_letters(conn)
    assert [(r.status, r.sightings) for r in rows] == [("open", 3), ("discarded", 0), ("discarded", 0)]


def test_a_reject_finds_its_dead_letter_by_one_probe_of_the_fingerprint_index(conn, write):
    # Enough rejects for the run to analyze dead_letters on PostgreSQL (ANALYZE_DEAD_LETTERS): without
    # statistics its planner walked (dataset, status, id) filtering on fingerprint, once per reject.
    n = ANALYZE_DEAD_LETTERS + 100
    summary = load(conn, write, [rec(key=f"k{i}", value="abc") for i in range(n)])
    assert (summary["rejected"], summary["dead_letters"]) == (n, n)
    linked = fetch(conn, "SELECT l.key, d.key FROM lineage l JOIN dead_letters d ON d.id = l.dead_letter_id "
                         "WHERE l.run_id = :r AND l.step = 'rejected'", r=summary["run_id"])
    assert len(linked) == n and all(a == b for a, b in linked)
    fp = scalar(conn, "SELECT fingerprint FROM dead_letters WHERE key = 'k7'")
    lookup = ("SELECT min(d.id) FROM dead_letters d "
              "WHERE d.dataset = 'events' AND d.fingerprint = :fp AND d.status = 'open'")
    if conn.dialect.name == "postgresql":
        plan = json.dumps(scalar(conn, "EXPLAIN (FORMAT JSON) " + lookup, fp=fp))
        assert '"Index Name": "ix_dead_letters_dataset_fingerprint_status_id"' in plan
        assert "ix_dead_letters_dataset_status_id" not in plan
    else:
        plan = " ".join(r[-1] for r in fetch(conn, "EXPLAIN QUERY PLAN " + lookup, fp=fp))
        assert "ix_dead_letters_dataset_fingerprint_status_id (dataset=? AND fingerprint=? AND status=?)" in plan
