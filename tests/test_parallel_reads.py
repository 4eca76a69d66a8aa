"""Runs read side by side, applied in their turn: the same outcome as running them one after another.

The pipeline is driven through `execute_run` with a `turn` that lets the earlier run apply while
the later one waits between reading and applying, as two queue workers do.
"""
import json

import pytest

from app.pipeline import RunCancelled, RunFailed, create_run, execute_run

from .pipeline_helpers import fetch, rec, snapshot, target


def recorded(conn, write, name: str, records: list) -> int:
    """A queued run of a file of `records`."""
    path = write(name, json.dumps(records))
    return create_run(conn, kind="upload", source_name=name, file_path=str(path))


def outcome(conn, run_id: int) -> tuple:
    """What a user reads of a run: its status, counts and watermarks."""
    return tuple(fetch(conn, "SELECT status, input_records, skipped, rejected, staged, inserted, updated, unchanged, "
                             "stale, dead_letters, watermark_before, watermark_after FROM runs WHERE id = :id",
                       id=run_id)[0])


FIRST = [rec("a", ts="2025-01-10T00:00:00"), rec("b", ts="2025-01-20T00:00:00")]
# Against FIRST's watermark (2025-01-20) two of these are old: one valid, one invalid for its value.
SECOND = [rec("a", value=2, ts="2025-01-05T00:00:00"), rec("c", value="x", ts="2025-01-06T00:00:00"),
          rec("d", value=4, ts="2025-01-25T00:00:00"), rec("e", value="y", ts="2025-01-26T00:00:00"),
          {"key": "f", "name": "n", "value": 1, "ts": "not a time"}]


def run_side_by_side(engine, conn, write, first: list, second: list) -> tuple[int, int]:
    """Record two runs, read the second first, and let the first apply while the second waits for its turn."""
    one, two = recorded(conn, write, "one.json", first), recorded(conn, write, "two.json", second)
    waited = []

    def turn(tick):
        tick()
        with engine.connect() as other:
            execute_run(other, one)
        waited.append(one)

    execute_run(conn, two, turn=turn)
    assert waited == [one]
    return one, two


def run_one_by_one(conn, write, first: list, second: list) -> tuple[int, int]:
    one, two = recorded(conn, write, "one.json", first), recorded(conn, write, "two.json", second)
    execute_run(conn, one)
    execute_run(conn, two)
    return one, two


def everything(conn, runs: tuple[int, int]) -> dict:
    """The tables a user reads, without ids and times, and both runs' outcomes."""
    state = snapshot(conn)
    return {"target": target(conn),
            "dead_letters": sorted((r.key, r.error, r.status) for r in state["dead_letters"]),
            "lineage": sorted((r.key, r.step, r.pos, r.detail) for r in state["lineage"]),
            "watermark": [r.value for r in state["watermarks"]],
            "runs": [outcome(conn, r)[:-2] + (outcome(conn, r)[-2] is not None,) for r in runs],
            "watermark_before_second": outcome(conn, runs[1])[-2]}


def test_a_run_read_before_the_watermark_moved_skips_what_the_earlier_run_made_old(engine, conn, write):
    runs = run_side_by_side(engine, conn, write, FIRST, SECOND)
    second = outcome(conn, runs[1])
    # a (valid, old) and c (invalid, old) are skipped as they would have been; e's old-free reject and
    # f (no valid time) stay rejected; d loads.
    assert second[:6] == ("succeeded", 5, 2, 2, 1, 1)
    assert second[-2:] == ("2025-01-20T00:00:00", "2025-01-25T00:00:00")
    assert target(conn)["a"][1] == 1  # the old update of a did not land


def test_side_by_side_gives_exactly_what_one_after_another_gives(engine, conn, write, db_url, tmp_path_factory):
    side = everything(conn, run_side_by_side(engine, conn, write, FIRST, SECOND))
    with conn.begin():
        for table in ("target", "lineage", "dead_letters", "watermark_history", "watermarks", "runs"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    sequential = everything(conn, run_one_by_one(conn, write, FIRST, SECOND))
    assert side == sequential


def test_a_backfill_read_beside_others_is_not_skipped_by_their_watermark(engine, conn, write):
    one = recorded(conn, write, "one.json", FIRST)
    path = write("old.json", json.dumps([rec("z", ts="2024-01-01T00:00:00")]))
    from app.pipeline import Options

    two = create_run(conn, kind="upload", source_name="old.json", file_path=str(path),
                     options=Options(ignore_watermark=True))

    def turn(tick):
        with engine.connect() as other:
            execute_run(other, one)

    execute_run(conn, two, turn=turn)
    assert outcome(conn, two)[:6] == ("succeeded", 1, 0, 0, 1, 1)
    assert "z" in target(conn)


def test_a_run_cancelled_while_it_waits_for_its_turn_loads_nothing(engine, conn, write):
    run_id = recorded(conn, write, "one.json", FIRST)
    before = snapshot(conn)
    calls = []

    def report(phase, records, nbytes):
        calls.append(phase)
        if phase == "waiting for its turn" and calls.count(phase) > 1:
            raise RunCancelled()

    def turn(tick):
        tick()  # the cancel is seen here, as the run's watcher would set it

    with pytest.raises(RunFailed, match="cancelled"):
        execute_run(conn, run_id, progress=report, turn=turn)
    assert outcome(conn, run_id)[0] == "cancelled"
    assert snapshot(conn) == before
