"""The watermark (SPEC §2, §6): skip older records, inclusive boundary, backfill, operator set and reset."""

from datetime import timedelta

import pytest

from app.pipeline import Options, WatermarkError
from app.pipeline import watermark as wm
from app.pipeline.validate import canonical, utc_now

from .pipeline_helpers import fetch, load, rec, target


def current(conn):
    with conn.begin():
        return wm.current(conn)


def history(conn):
    with conn.begin():
        return [(h["old_value"], h["new_value"], h["via"], h["run_id"]) for h in wm.history(conn)]


def test_older_records_are_skipped_without_validation_and_noted_in_lineage(conn, write):
    first = load(conn, write, [rec(key="a", ts="2025-01-15T12:00:00")])
    assert first["watermark"] == "2025-01-15T12:00:00"
    summary = load(
        conn,
        write,
        [
            rec(key="a", value=2, ts="2025-01-15T11:59:59.999999"),  # older: skipped
            rec(key="b", value="abc", ts="2025-01-01T00:00:00"),  # older and invalid: skipped, not validated
            rec(key="", ts="2024-12-31T00:00:00"),  # older with no usable key
            rec(key="c", value="abc", ts="2025-01-16T00:00:00"),  # newer and invalid: rejected
            rec(key="d", ts="not a time"),  # no valid ts: validated, rejected
            rec(key="e", ts="2025-01-16T00:00:00"),  # newer: loaded
        ],
    )
    assert (
        summary["input_records"],
        summary["skipped"],
        summary["rejected"],
        summary["staged"],
        summary["inserted"],
    ) == (6, 3, 2, 1, 1)
    assert summary["watermark_before"] == "2025-01-15T12:00:00"
    assert target(conn)["a"] == ("n", 1.0, "2025-01-15T12:00:00")
    assert fetch(conn, "SELECT key, error FROM dead_letters ORDER BY pos") == [
        ("c", "invalid_value"),
        ("d", "invalid_timestamp"),
    ]
    skipped = fetch(
        conn,
        "SELECT pos, key, detail FROM lineage WHERE step = 'skipped' AND run_id = :r ORDER BY pos",
        r=summary["run_id"],
    )
    assert [(r.pos, r.key) for r in skipped] == [(1, "a"), (2, "b"), (3, "")]
    assert (
        skipped[0].detail == "ts 2025-01-15T11:59:59.999999 is older than the watermark 2025-01-15T12:00:00"
    )


def test_a_record_at_the_watermark_is_processed_again(conn, write):
    load(conn, write, [rec(key="a", ts="2025-01-15T12:00:00")])
    # Same key, same ts: unchanged. Another key sharing the newest ts in a later file is not lost.
    summary = load(
        conn, write, [rec(key="a", ts="2025-01-15T12:00:00"), rec(key="b", ts="2025-01-15T12:00:00Z")]
    )
    assert (summary["skipped"], summary["unchanged"], summary["inserted"]) == (0, 1, 1)
    assert set(target(conn)) == {"a", "b"}


def test_offsets_are_compared_in_utc(conn, write):
    load(conn, write, [rec(key="a", ts="2025-01-15T12:30:00Z")])
    # 14:00 at +02:00 is 12:00 UTC: older than the watermark, although its text sorts after it.
    summary = load(
        conn,
        write,
        [rec(key="a", value=9, ts="2025-01-15T14:00:00+02:00"), rec(key="b", ts="2025-01-15T07:31:00-05:00")],
    )
    assert (summary["skipped"], summary["inserted"]) == (1, 1)
    assert target(conn)["b"][2] == "2025-01-15T12:31:00"
    assert current(conn) == "2025-01-15T12:31:00"
    # With a backfill the older record reaches the upsert and is stale against the stored row.
    backfill = load(
        conn,
        write,
        [rec(key="a", value=9, ts="2025-01-15T14:00:00+02:00")],
        options=Options(ignore_watermark=True),
    )
    assert (backfill["skipped"], backfill["stale"]) == (0, 1)
    assert target(conn)["a"] == ("n", 1.0, "2025-01-15T12:30:00")


def test_backfill_loads_late_records_but_keeps_newer_rows_and_never_moves_the_watermark_back(conn, write):
    load(
        conn,
        write,
        [rec(key="a", value=1, ts="2025-03-01T00:00:00"), rec(key="b", value=1, ts="2025-02-01T00:00:00")],
    )
    late = [
        rec(key="a", value=2, ts="2025-01-01T00:00:00"),  # older than the stored row: stale
        rec(key="b", value=2, ts="2025-02-15T00:00:00"),  # newer than the stored row: updated
        rec(key="c", value=2, ts="2024-06-01T00:00:00"),
    ]  # a late new key: inserted
    plain = load(conn, write, late)
    assert (plain["skipped"], plain["loaded"]) == (3, 0)
    summary = load(conn, write, late, options=Options(ignore_watermark=True))
    assert (summary["skipped"], summary["stale"], summary["updated"], summary["inserted"]) == (0, 1, 1, 1)
    assert target(conn) == {
        "a": ("n", 1.0, "2025-03-01T00:00:00"),
        "b": ("n", 2.0, "2025-02-15T00:00:00"),
        "c": ("n", 2.0, "2024-06-01T00:00:00"),
    }
    assert summary["watermark_before"] == summary["watermark"] == "2025-03-01T00:00:00"
    assert current(conn) == "2025-03-01T00:00:00"
    stale = fetch(conn, "SELECT detail FROM lineage WHERE step = 'stale'")
    assert stale == [
        ("ts 2025-01-01T00:00:00 is older than the stored ts 2025-03-01T00:00:00; stored row kept",)
    ]


def test_the_pipeline_never_moves_an_operator_watermark_backwards(conn, write):
    load(conn, write, [rec(key="a", ts="2025-01-01T00:00:00")])
    wm.set_value(conn, "2025-06-01T00:00:00", via="cli")
    summary = load(
        conn, write, [rec(key="b", ts="2025-02-01T00:00:00")], options=Options(ignore_watermark=True)
    )
    assert summary["inserted"] == 1
    assert summary["watermark"] == current(conn) == "2025-06-01T00:00:00"
    forward = load(conn, write, [rec(key="c", ts="2025-07-01T00:00:00")])
    assert forward["watermark"] == current(conn) == "2025-07-01T00:00:00"


def test_operator_set_and_reset_with_preview_and_history(conn, write):
    first = load(
        conn,
        write,
        [
            rec(key="a", ts="2025-01-01T00:00:00"),
            rec(key="b", ts="2025-02-01T00:00:00"),
            rec(key="c", ts="2025-03-01T00:00:00"),
        ],
    )
    with conn.begin():
        assert wm.preview(conn, "2025-02-01T00:00:00") == 2  # at or after the new value
        assert wm.preview(conn, "2025-02-01T01:00:00+01:00") == 2  # compared in UTC
        assert wm.preview(conn, "2025-02-01T00:00:00.000001") == 1
        assert wm.preview(conn, None) == 3  # a reset lets every row be reconsidered
    assert wm.set_value(conn, "2025-01-15 12:00+02:00", via="web") == "2025-01-15T10:00:00"
    assert current(conn) == "2025-01-15T10:00:00"
    # A lower watermark lets older records through again; the stale rule still protects newer rows.
    again = load(
        conn,
        write,
        [
            rec(key="a", value=5, ts="2025-01-20T00:00:00"),
            rec(key="c", value=5, ts="2025-02-20T00:00:00"),
            rec(key="z", ts="2025-01-10T00:00:00"),
        ],
    )
    assert (again["skipped"], again["updated"], again["stale"]) == (1, 1, 1)
    assert current(conn) == "2025-03-01T00:00:00"  # the next run moved it forward again
    wm.reset(conn, via="cli")
    assert current(conn) is None
    everything = load(conn, write, [rec(key="z", ts="2020-01-01T00:00:00")])
    assert (everything["watermark_before"], everything["skipped"], everything["inserted"]) == (None, 0, 1)
    assert current(conn) == "2025-03-01T00:00:00"
    assert history(conn) == [
        (None, "2025-03-01T00:00:00", "pipeline", everything["run_id"]),
        ("2025-03-01T00:00:00", None, "cli", None),
        ("2025-01-15T10:00:00", "2025-03-01T00:00:00", "pipeline", again["run_id"]),
        ("2025-03-01T00:00:00", "2025-01-15T10:00:00", "web", None),
        (None, "2025-03-01T00:00:00", "pipeline", first["run_id"]),
    ]


@pytest.mark.parametrize(
    "value, message",
    [
        ("", "a watermark value is required"),
        ("   ", "a watermark value is required"),
        ("yesterday", "is not a timestamp"),
        ("2025-02-30T00:00:00", "is not a timestamp"),
        ("2025-01-15", "is not a timestamp"),
        ("2999-01-01T00:00:00", "lies in the future"),
    ],
)
def test_operator_values_that_are_not_timestamps_or_in_the_future_are_refused(conn, write, value, message):
    load(conn, write, [rec(ts="2025-01-01T00:00:00")])
    with pytest.raises(WatermarkError, match=message):
        wm.set_value(conn, value, via="cli")
    with pytest.raises(WatermarkError, match=message), conn.begin():
        wm.preview(conn, value)
    assert current(conn) == "2025-01-01T00:00:00"
    assert len(history(conn)) == 1


def test_an_operator_value_just_in_the_past_is_accepted_and_one_just_ahead_is_not(conn):
    past = canonical(utc_now() - timedelta(minutes=1))
    assert wm.set_value(conn, past, via="api") == past
    with pytest.raises(WatermarkError, match="future"):
        wm.set_value(conn, canonical(utc_now() + timedelta(minutes=5)), via="api")
    assert current(conn) == past
