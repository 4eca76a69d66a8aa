"""Loading (SPEC §2): in-run dedup, upsert outcomes, lineage of each, reject threshold, dry run, counts."""

import hashlib
import json

import pytest

from app.pipeline import Options, RunFailed, run_file

from .pipeline_helpers import fetch, load, rec, snapshot, target


def lineage_of(conn, run_id):
    return [
        tuple(r)
        for r in fetch(
            conn, "SELECT pos, key, step, detail FROM lineage WHERE run_id = :r ORDER BY pos, id", r=run_id
        )
    ]


def conserved(summary) -> bool:
    return (
        summary["input_records"] == summary["skipped"] + summary["rejected"] + summary["staged"]
        and summary["staged"]
        == summary["superseded"]
        + summary["inserted"]
        + summary["updated"]
        + summary["unchanged"]
        + summary["stale"]
    )


def test_in_run_duplicates_the_latest_ts_wins_and_the_others_are_superseded(conn, write):
    summary = load(
        conn,
        write,
        [
            rec(key="a", value=1, ts="2025-01-15T12:00:00"),
            rec(key="a", value=2, ts="2025-01-15T13:00:00"),  # latest ts: wins although not last
            rec(key="a", value=3, ts="2025-01-15T11:00:00"),
            rec(key="b", value=1, ts="2025-01-15T12:00:00"),
            rec(
                key="b", value=2, ts="2025-01-15T14:00:00+02:00"
            ),  # the same instant: a tie goes to the later record
        ],
    )
    assert (summary["staged"], summary["superseded"], summary["inserted"]) == (5, 3, 2)
    assert conserved(summary)
    assert target(conn) == {"a": ("n", 2.0, "2025-01-15T13:00:00"), "b": ("n", 2.0, "2025-01-15T12:00:00")}
    assert lineage_of(conn, summary["run_id"]) == [
        (1, "a", "staged", "valid; ts 2025-01-15T12:00:00"),
        (1, "a", "superseded", "superseded by the record at position 2 of this run"),
        (2, "a", "staged", "valid; ts 2025-01-15T13:00:00"),
        (2, "a", "inserted", "new key"),
        (3, "a", "staged", "valid; ts 2025-01-15T11:00:00"),
        (3, "a", "superseded", "superseded by the record at position 2 of this run"),
        (4, "b", "staged", "valid; ts 2025-01-15T12:00:00"),
        (4, "b", "superseded", "superseded by the record at position 5 of this run"),
        (5, "b", "staged", "valid; ts 2025-01-15T12:00:00"),
        (5, "b", "inserted", "new key"),
    ]
    assert summary["lineage_entries"] == 10


def test_upsert_outcomes_inserted_updated_unchanged_stale(conn, write):
    first = load(
        conn,
        write,
        [
            rec(key="same", value=1),
            rec(key="named", name="old", value=1),
            rec(key="valued", value=1),
            rec(key="later", value=1),
            rec(key="older", value=1),
        ],
    )
    assert (first["inserted"], first["loaded"], first["watermark"]) == (5, 5, "2025-01-15T12:00:00")
    summary = load(
        conn,
        write,
        [
            rec(key="same", value="1.0", ts="2025-01-15T12:00:00Z"),  # equal once parsed: unchanged
            rec(key="named", name="new", value=1),  # a name change at the same ts
            rec(key="valued", value=2.5),
            rec(key="later", value=1, ts="2025-01-15T12:00:01"),  # only the ts moves
            rec(key="older", value=9, ts="2025-01-15 12:00"),  # at the watermark: processed
            rec(key="fresh", value=0),
        ],
    )
    assert (
        summary["inserted"],
        summary["updated"],
        summary["unchanged"],
        summary["stale"],
        summary["loaded"],
    ) == (1, 4, 1, 0, 5)
    details = {
        r.key: (r.step, r.detail)
        for r in fetch(
            conn,
            "SELECT key, step, detail FROM lineage WHERE run_id = :r AND step <> 'staged'",
            r=summary["run_id"],
        )
    }
    assert details == {
        "same": ("unchanged", "same name, value and ts as the stored row"),
        "named": ("updated", "name: 'old' → 'new'"),
        "valued": ("updated", "value: 1 → 2.5"),
        "later": ("updated", "ts: 2025-01-15T12:00:00 → 2025-01-15T12:00:01"),
        "older": ("updated", "value: 1 → 9"),
        "fresh": ("inserted", "new key"),
    }
    rows = {r.key: r.run_id for r in fetch(conn, "SELECT key, run_id FROM target")}
    assert rows["same"] == first["run_id"]  # an unchanged row is not rewritten
    assert rows["valued"] == rows["fresh"] == summary["run_id"]
    stale = load(
        conn,
        write,
        [rec(key="valued", name="x", value=7, ts="2025-01-15T11:00:00")],
        options=Options(ignore_watermark=True),
    )
    assert (stale["stale"], stale["loaded"]) == (1, 0)
    assert target(conn)["valued"] == ("n", 2.5, "2025-01-15T12:00:00")


def test_every_change_is_listed_in_an_updated_detail(conn, write):
    load(conn, write, [rec(key="a", name="before", value=-1.5, ts="2025-01-15T12:00:00")])
    summary = load(conn, write, [rec(key="a", name="after", value=1e20, ts="2025-01-16T08:30:00.25+01:00")])
    detail = fetch(
        conn, "SELECT detail FROM lineage WHERE run_id = :r AND step = 'updated'", r=summary["run_id"]
    )
    assert detail == [
        (
            ("name: 'before' → 'after'; value: -1.5 → 1e+20; "
            "ts: 2025-01-15T12:00:00 → 2025-01-16T07:30:00.250000"),
        )
    ]


def test_a_duplicate_and_an_existing_row_together(conn, write):
    load(conn, write, [rec(key="a", value=1, ts="2025-01-15T12:00:00")])
    summary = load(
        conn,
        write,
        [rec(key="a", value=5, ts="2025-01-15T13:00:00"), rec(key="a", value=6, ts="2025-01-15T12:30:00")],
        options=Options(ignore_watermark=True),
    )
    assert (summary["superseded"], summary["updated"]) == (1, 1)
    assert target(conn)["a"] == ("n", 5.0, "2025-01-15T13:00:00")


def test_the_reject_threshold_fails_the_whole_run_and_records_its_counts(conn, write):
    load(conn, write, [rec(key="old", ts="2025-01-15T12:00:00")])
    before = snapshot(conn)
    records = [
        rec(key="a", ts="2025-01-10T00:00:00"),
        rec(key="b", ts="2025-01-10T00:00:00"),
        rec(key="c", ts="2025-01-10T00:00:00"),  # three skipped
        rec(key="d", value="abc", ts="2025-01-16T00:00:00"),
        rec(key="e", ts="2025-01-16T00:00:00"),
    ]
    # The share is rejected / (input - skipped) = 1 / 2, not 1 / 5.
    with pytest.raises(RunFailed) as failed:
        load(conn, write, records, options=Options(max_reject_rate=0.4))
    assert str(failed.value) == (
        "1 of 2 records were rejected (50.0%), over the reject threshold of 40.0%; nothing was loaded"
    )
    assert snapshot(conn) == before
    run = fetch(
        conn,
        "SELECT status, error, input_records, skipped, rejected, staged, inserted FROM runs WHERE id = :r",
        r=failed.value.run_id,
    )[0]
    assert tuple(run) == ("failed", str(failed.value), 5, 3, 1, 1, 0)
    at_threshold = load(conn, write, records, options=Options(max_reject_rate=0.5))
    assert (at_threshold["status"], at_threshold["rejected"], at_threshold["inserted"]) == ("succeeded", 1, 1)


@pytest.mark.parametrize(
    "records", [[], [rec(key="a", ts="2025-01-01T00:00:00")]], ids=["empty", "all-skipped"]
)
def test_zero_of_zero_never_fails_the_threshold(conn, write, records):
    load(conn, write, [rec(key="old", ts="2025-01-15T12:00:00")])
    summary = load(conn, write, records, options=Options(max_reject_rate=0))
    assert (summary["status"], summary["rejected"]) == ("succeeded", 0)


def test_a_zero_threshold_fails_on_one_rejected_record(conn, write):
    with pytest.raises(RunFailed, match="1 of 3 records were rejected"):
        load(
            conn,
            write,
            [rec(key="a"), rec(key="b"), rec(key="c", value=None)],
            options=Options(max_reject_rate=0),
        )
    assert target(conn) == {}


def test_a_threshold_must_be_a_share(conn):
    with pytest.raises(ValueError, match="between 0 and 1"):
        Options(max_reject_rate=1.5)


def test_a_dry_run_reports_everything_and_keeps_only_the_run_record(conn, write):
    load(conn, write, [rec(key="a", value=1, ts="2025-01-15T12:00:00")])
    before = snapshot(conn)
    records = [
        rec(key="a", value=2, ts="2025-01-16T00:00:00"),
        rec(key="b", ts="2025-01-17T00:00:00"),
        rec(key="b", ts="2025-01-16T00:00:00"),
        rec(key="c", value="x"),
        rec(key="d", ts="2025-01-01T00:00:00"),
    ]
    dry = load(conn, write, records, options=Options(dry_run=True))
    assert (
        dry["status"],
        dry["dry_run"],
        dry["input_records"],
        dry["skipped"],
        dry["rejected"],
        dry["superseded"],
        dry["inserted"],
        dry["updated"],
        dry["dead_letters"],
        dry["lineage_entries"],
    ) == ("succeeded", True, 5, 1, 1, 1, 1, 1, 1, 8)
    assert snapshot(conn) == before
    assert fetch(conn, "SELECT status, inserted, updated FROM runs WHERE id = :r", r=dry["run_id"]) == [
        ("succeeded", 1, 1)
    ]
    # The same file for real does exactly what the dry run said.
    real = load(conn, write, records)
    assert {k: v for k, v in real.items() if k not in ("run_id", "dry_run", "warnings")} == {
        k: v for k, v in dry.items() if k not in ("run_id", "dry_run", "warnings")
    }
    assert [w["code"] for w in dry["warnings"]] == ["dry_run"] and real["warnings"] == []
    assert target(conn)["b"] == ("n", 1.0, "2025-01-17T00:00:00")


def test_the_run_record_keeps_every_count_and_the_watermarks(conn, write):
    summary = load(
        conn, write, [rec(key="a"), rec(key="a", ts="2025-01-15T12:00:01"), rec(key="b", value="x")]
    )
    run = fetch(conn, "SELECT * FROM runs WHERE id = :r", r=summary["run_id"])[0]
    assert (
        run.kind,
        run.status,
        run.input_records,
        run.rejected,
        run.staged,
        run.superseded,
        run.inserted,
        run.dead_letters,
        run.lineage_entries,
        run.watermark_before,
        run.watermark_after,
    ) == ("cli", "succeeded", 3, 1, 2, 1, 1, 1, 5, None, "2025-01-15T12:00:01")
    assert run.source_name == "records.json" and len(run.source_sha256) == 64
    assert run.queued_at <= run.started_at <= run.finished_at
    assert conserved(summary)
    assert fetch(conn, "SELECT count(*) FROM lineage WHERE run_id = :r", r=summary["run_id"]) == [(5,)]


def test_a_file_seen_before_is_accepted_and_names_the_run_that_had_it(conn, write):
    path = write("same.json", json.dumps([rec(key="a")]))
    first = run_file(conn, path)
    other = load(conn, write, [rec(key="b")], name="other.json")
    again = run_file(conn, path)
    assert again["status"] == "succeeded"
    rows = fetch(conn, "SELECT id, same_file_run_id, source_size, source_sha256 FROM runs ORDER BY id")
    assert [(r.id, r.same_file_run_id) for r in rows] == [
        (first["run_id"], None),
        (other["run_id"], None),
        (again["run_id"], first["run_id"]),
    ]
    assert rows[0].source_size == path.stat().st_size
    assert rows[0].source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == rows[2].source_sha256
