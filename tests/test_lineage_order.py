"""A key's lineage follows the order in which runs applied, however each run wrote it.

On PostgreSQL a run writes most of its lineage on a second connection, with ids chosen before it
knows when it applies (app/pipeline/lineage_writer.py); these tests hold it to the same history
as writing it all under the apply lock, which SQLite does and PostgreSQL falls back to.
"""
import json

import pytest
from sqlalchemy import text

from app import queries
from app.pipeline import RunCancelled, RunFailed, create_run, discard, execute_run, reopen
from app.runs.liveness import Liveness

from .pipeline_helpers import fetch, load, rec, snapshot

FIRST = [rec("a", value=1, ts="2025-01-10T00:00:00"), rec("b", value=1, ts="2025-01-10T00:00:00"),
         rec("bad", value="x", ts="2025-01-10T00:00:00")]
# Against FIRST: updates a, leaves b unchanged, supersedes one c by the other, skips an old one,
# rejects bad again and a new one.
SECOND = [rec("a", value=2, ts="2025-01-11T00:00:00"), rec("b", value=1, ts="2025-01-10T00:00:00"),
          rec("c", value=1, ts="2025-01-12T00:00:00"), rec("c", value=2, ts="2025-01-13T00:00:00"),
          rec("old", value=1, ts="2025-01-01T00:00:00"), rec("bad", value="x", ts="2025-01-10T00:00:00"),
          rec("worse", value=None, ts="2025-01-11T00:00:00")]


def recorded(conn, write, name: str, records: list) -> int:
    return create_run(conn, kind="upload", source_name=name, file_path=str(write(name, json.dumps(records))))


def history(conn, key: str) -> list[tuple]:
    """The key's lineage page as a user reads it: each run's group, newest first, as (run, [steps])."""
    with conn.begin():
        groups = queries.lineage_of_key(conn, key)["groups"]
    return [(g["run_id"], [e["step"] for e in g["entries"]]) for g in groups]


def run_page(conn, run_id: int) -> list[tuple]:
    """A run's lineage page, every entry, without ids and times."""
    with conn.begin():
        rows = queries.run_lineage(conn, run_id, limit=500)["rows"]
    return [(r["pos"], r["line"], r["key"], r["step"], r["detail"], r["dead_letter_id"] is not None) for r in rows]


def test_a_run_recorded_later_but_applied_first_comes_first_in_the_history(conn, write):
    earlier, later = recorded(conn, write, "one.json", FIRST), recorded(conn, write, "two.json", SECOND)
    execute_run(conn, later)
    execute_run(conn, earlier)  # applies last, under the watermark the other moved: its entries are the newest
    assert history(conn, "a") == [(earlier, ["skipped"]), (later, ["staged", "inserted"])]
    assert history(conn, "bad") == [(earlier, ["skipped"]), (later, ["rejected"])]


def test_the_lineage_of_a_run_reads_the_same_however_it_was_written(conn, write):
    # One after another (on PostgreSQL: written beside the apply) …
    load(conn, write, FIRST, name="first.json")
    beside = load(conn, write, SECOND, name="second.json")
    expected = run_page(conn, beside["run_id"])
    assert [e[3] for e in expected] == ["staged", "updated", "staged", "unchanged", "staged", "superseded",
                                        "staged", "inserted", "skipped", "rejected", "rejected"]
    with conn.begin():
        for table in ("target", "lineage", "dead_letters", "watermark_history", "watermarks", "runs"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    # … and the same files with the second recorded first, so that it applies after a later run (on
    # PostgreSQL its ids would be out of order: it writes everything under the apply lock).
    second = recorded(conn, write, "second.json", SECOND)
    load(conn, write, FIRST, name="first.json")
    execute_run(conn, second)
    assert run_page(conn, second) == expected


def test_what_happens_after_a_run_is_newer_than_the_run(conn, write):
    load(conn, write, FIRST, name="first.json")
    (letter,) = fetch(conn, "SELECT id FROM dead_letters WHERE key = 'bad'")
    discard(conn, [letter.id], reason="known bad")
    later = load(conn, write, SECOND, name="second.json")
    steps = [steps for _, steps in history(conn, "bad")]
    assert steps == [["rejected"], ["discarded"], ["rejected"]]
    assert history(conn, "bad")[0][0] == later["run_id"]


def at_the_lock(engine, change):
    """A run's progress callback that makes `change` on a connection of its own as the run asks for the write lock.

    By then the run has decided its outcomes and its rejects' dead letters against what was committed.
    """
    def report(phase, records, nbytes):
        if phase == "waiting for the write lock":
            with engine.connect() as other:
                change(other)
    return report


def rejects_of(conn, key: str) -> list[tuple]:
    """The key's dead letters as (status, sightings, the runs whose `rejected` entries name it)."""
    rows = fetch(conn, "SELECT d.status, d.sightings, l.run_id FROM dead_letters d LEFT JOIN lineage l "
                       "ON l.dead_letter_id = d.id AND l.step = 'rejected' WHERE d.key = :k ORDER BY d.id, l.id", k=key)
    letters: dict = {}
    for status, sightings, run_id in rows:
        letters.setdefault((status, sightings), []).append(run_id)
    return [(status, sightings, runs) for (status, sightings), runs in letters.items()]


def test_a_dead_letter_discarded_just_before_an_apply_gets_no_sighting_from_it(engine, conn, write):
    first = load(conn, write, FIRST, name="first.json")["run_id"]
    (letter,) = fetch(conn, "SELECT id FROM dead_letters WHERE key = 'bad'")
    second = recorded(conn, write, "second.json", SECOND)
    execute_run(conn, second, progress=at_the_lock(engine, lambda other: discard(other, [letter.id], reason="known")))
    assert rejects_of(conn, "bad") == [("discarded", 1, [first]), ("open", 1, [second])]


def test_a_dead_letter_reopened_just_before_an_apply_gets_its_sighting(engine, conn, write):
    first = load(conn, write, FIRST, name="first.json")["run_id"]
    (letter,) = fetch(conn, "SELECT id FROM dead_letters WHERE key = 'bad'")
    discard(conn, [letter.id], reason="known")
    second = recorded(conn, write, "second.json", SECOND)
    execute_run(conn, second, progress=at_the_lock(engine, lambda other: reopen(other, [letter.id])))
    assert rejects_of(conn, "bad") == [("open", 2, [first, second])]


def test_new_dead_letters_are_numbered_in_file_order(conn, write):
    keys = ["m", "c", "x", "a", "q"]  # not in key order: the lineage is written in key order
    load(conn, write, [rec(k, value="x") for k in keys] + [rec("c", value="x")], name="bad.json")
    rows = fetch(conn, "SELECT key, pos, sightings FROM dead_letters ORDER BY id")
    assert [(r.key, r.pos, r.sightings) for r in rows] == [("m", 1, 1), ("c", 2, 2), ("x", 3, 1), ("a", 4, 1),
                                                            ("q", 5, 1)]


def test_a_run_nothing_overtook_writes_its_lineage_beside_the_apply(engine, conn, write):
    """The fast path is taken: each entry's id is the run's own (`(run << 32) + 2 * pos`, + 1 for an outcome)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("only PostgreSQL writes a run's lineage on a connection of its own")
    load(conn, write, FIRST, name="first.json")
    second = load(conn, write, SECOND, name="second.json")["run_id"]  # a new dead letter, a sighting, an update
    rows = fetch(conn, "SELECT id, pos, step FROM lineage WHERE run_id = :r", r=second)
    outcomes = {"updated", "unchanged", "inserted", "superseded"}
    assert len(rows) == len(SECOND) + 4
    assert all(r.id == (second << 32) + 2 * r.pos + (r.step in outcomes) for r in rows)


def test_a_run_whose_commit_fails_after_its_lineage_was_written_leaves_no_lineage(engine, conn, write):
    if engine.dialect.name != "postgresql":
        pytest.skip("only PostgreSQL writes a run's lineage on a connection of its own")
    load(conn, write, FIRST, name="first.json")
    before = snapshot(conn)
    # A deferred check fails the run's COMMIT itself: after its lineage connection committed.
    with conn.begin():
        conn.exec_driver_sql("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                             "$$ BEGIN RAISE EXCEPTION 'the disk is full'; END $$")
        conn.exec_driver_sql("CREATE CONSTRAINT TRIGGER refuse AFTER UPDATE ON runs DEFERRABLE INITIALLY DEFERRED "
                             "FOR EACH ROW WHEN (NEW.status = 'succeeded') EXECUTE FUNCTION refuse()")
    try:
        with pytest.raises(RunFailed, match="the disk is full") as failed:
            load(conn, write, SECOND, name="second.json")
    finally:
        with conn.begin():
            conn.exec_driver_sql("DROP TRIGGER refuse ON runs")
            conn.exec_driver_sql("DROP FUNCTION refuse()")
    assert fetch(conn, "SELECT status FROM runs WHERE id = :r", r=failed.value.run_id) == [("failed",)]
    assert snapshot(conn) == before


def test_an_interrupted_run_keeps_no_lineage(engine, conn, write, tmp_path):
    """A worker killed between committing its lineage and its apply: the entries go when the run is marked."""
    run_id = create_run(conn, kind="upload", source_name="x.json", worker="elsewhere:1:gone")
    with conn.begin():
        conn.execute(text("UPDATE runs SET heartbeat_at = '2000-01-01T00:00:00' WHERE id = :r"), {"r": run_id})
        conn.execute(text("INSERT INTO lineage (dataset, run_id, pos, line, key, step, at, detail) "
                          "VALUES ('events', :r, 1, 1, 'k', 'staged', '2025-01-01T00:00:00', 'valid')"), {"r": run_id})
    assert Liveness(engine, tmp_path / "workers", lease_seconds=30).recover() == [run_id]
    assert fetch(conn, "SELECT status, error FROM runs WHERE id = :r", r=run_id) == [("failed", "interrupted")]
    assert history(conn, "k") == []


def test_a_run_cancelled_half_way_through_its_file_leaves_no_lineage(conn, write):
    load(conn, write, FIRST, name="first.json")
    before = snapshot(conn)
    many = [rec(f"k{i}", value=i, ts="2025-01-11T00:00:00") for i in range(45_000)]

    def cancel_after_a_batch(phase, records, nbytes):
        if phase == "reading" and records >= 20_000:  # batches of 20,000 are staged (and their lineage sent)
            raise RunCancelled()

    with pytest.raises(RunFailed, match="cancelled by request"):
        load(conn, write, many, name="many.json", progress=cancel_after_a_batch)
    assert snapshot(conn) == before
    assert load(conn, write, SECOND, name="second.json")["lineage_entries"] == len(SECOND) + 4


def test_lineage_ids_stay_exact_in_json_whatever_the_run_id(conn, write):
    """Ids below 2**53, which JavaScript clients of the API read exactly, even for a run id past the ids' range."""
    run_id = create_run(conn, kind="upload", source_name="first.json", run_id=2**21 + 5,
                        file_path=str(write("first.json", json.dumps(FIRST))))
    execute_run(conn, run_id)
    load(conn, write, SECOND, name="second.json")
    assert fetch(conn, "SELECT max(id) FROM lineage")[0][0] < 2**53
    assert history(conn, "a")[1] == (run_id, ["staged", "inserted"])


@pytest.mark.parametrize("key", ["tab\there", "new\nline", "back\\slash", "cr\rhere", "\\N", "ünï ✓"])
def test_a_key_with_characters_copy_escapes_keeps_its_history(conn, write, key):
    load(conn, write, [rec(key, value=1, ts="2025-01-10T00:00:00")], name="one.json")
    load(conn, write, [rec(key, value=2, ts="2025-01-11T00:00:00"), rec("old", ts="2025-01-01T00:00:00")],
         name="two.json")
    assert [steps for _, steps in history(conn, key)] == [["staged", "updated"], ["staged", "inserted"]]
    assert [steps for _, steps in history(conn, "old")] == [["skipped"]]
