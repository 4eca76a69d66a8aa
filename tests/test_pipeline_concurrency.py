"""Runs apply one at a time (SPEC §5): a run that another run overtakes decides again under the lock."""

import json

from app.pipeline import Options, run_file

from .pipeline_helpers import fetch, load, rec, target


def overtaken_by(engine, write, records, options=None):
    """A progress callback that, once, applies another file on another connection before this run applies."""
    done = []

    def progress(phase, records_read, nbytes):
        if phase == "waiting for the write lock" and not done:
            done.append(True)
            with engine.connect() as other:
                done.append(run_file(other, write("other.json", json.dumps(records)), options=options))

    return progress, done


def test_a_run_overtaken_by_another_is_classified_again(conn, engine, write):
    load(conn, write, [rec(key="old", ts="2025-01-15T12:00:00")], name="first.json")
    # The other run backfills key "a" without moving the watermark; this run must see "a" as existing.
    progress, other = overtaken_by(
        engine, write, [rec(key="a", value=1, ts="2025-01-01T00:00:00")], Options(ignore_watermark=True)
    )
    summary = load(conn, write, [rec(key="a", value=2, ts="2025-01-16T00:00:00")], progress=progress)
    assert other[1]["inserted"] == 1
    assert (summary["inserted"], summary["updated"]) == (0, 1)
    assert target(conn)["a"] == ("n", 2.0, "2025-01-16T00:00:00")
    assert fetch(
        conn, "SELECT detail FROM lineage WHERE run_id = :r AND step = 'updated'", r=summary["run_id"]
    ) == [("value: 1 → 2; ts: 2025-01-01T00:00:00 → 2025-01-16T00:00:00",)]


def test_a_run_whose_watermark_moved_reads_its_file_again(conn, engine, write):
    load(conn, write, [rec(key="old", ts="2025-01-10T00:00:00")], name="first.json")
    progress, other = overtaken_by(engine, write, [rec(key="b", ts="2025-01-20T00:00:00")])
    summary = load(
        conn,
        write,
        [rec(key="a", ts="2025-01-15T00:00:00"), rec(key="c", ts="2025-01-25T00:00:00")],
        progress=progress,
    )
    assert other[1]["watermark"] == "2025-01-20T00:00:00"
    # Read again under the new watermark: "a" is now older than it and skipped.
    assert (summary["input_records"], summary["skipped"], summary["inserted"]) == (2, 1, 1)
    assert summary["watermark_before"] == "2025-01-20T00:00:00"
    assert set(target(conn)) == {"old", "b", "c"}
    assert fetch(conn, "SELECT count(*) FROM lineage WHERE run_id = :r", r=summary["run_id"]) == [(3,)]
    runs = fetch(conn, "SELECT id, applied_seq FROM runs WHERE status = 'succeeded' ORDER BY applied_seq")
    assert [r.id for r in runs] == [1, other[1]["run_id"], summary["run_id"]]
