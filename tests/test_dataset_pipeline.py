"""The pipeline per dataset (SPEC §10): any shape through run_file, execute_run, reprocess, discard, reopen, watermarks."""
import io
import json
import sqlite3
from datetime import timedelta

import pytest

from app.datasets.registry import DatasetError, archive_dataset, create_dataset, evolve_dataset
from app.intake import ALL, intake_for, pending_runs
from app.pipeline import DeadLetterError, Options, discard, reopen, reprocess, run_file
from app.pipeline import watermark as wm
from app.pipeline.validate import canonical, utc_now

from .conftest import PG_URL
from .pipeline_helpers import fetch, rec, scalar

T = "2025-03-01T10:00:00"
ORDERS = {
    "key": "order_id", "version": "updated_at",
    "fields": [
        {"name": "customer", "type": "string", "required": True, "max_length": 20, "sortable": True,
         "searchable": True},
        {"name": "total", "type": "number", "required": True, "sortable": True},
        {"name": "qty", "type": "integer"},
        {"name": "paid", "type": "boolean"},
        {"name": "shipped_at", "type": "timestamp"},
        {"name": "tags", "type": "json"},
        {"name": "note", "type": "string"},
    ],
}
COLUMNS = ("customer", "total", "qty", "paid", "shipped_at", "tags", "note", "updated_at")


@pytest.fixture
def orders(conn):
    return create_dataset(conn, "orders", ORDERS, title="Orders")


def order(order_id="o1", customer="Ann", total=10.5, updated_at=T, **fields) -> dict:
    return {"order_id": order_id, "customer": customer, "total": total, "updated_at": updated_at, **fields}


FULL = {"qty": 2, "paid": True, "shipped_at": "2025-03-01T11:00:00+02:00", "tags": ["a", {"b": 1}], "note": "hi"}


def load(conn, write, records, dataset="orders", name="orders.json", **kwargs) -> dict:
    return run_file(conn, write(name, json.dumps(records)), dataset=dataset, **kwargs)


def rows(conn, table="ds_orders") -> dict:
    """A dataset table as {key: (payload..., version)}, read with plain SQL; booleans as bool."""
    found = {}
    for r in fetch(conn, f"SELECT order_id, {', '.join(COLUMNS)} FROM {table} ORDER BY order_id"):
        values = list(r[1:])
        values[3] = None if values[3] is None else bool(values[3])
        found[r[0]] = tuple(values)
    return found


def read(conn, fn, *args, **kwargs):
    """Call a read function in a transaction of its own (the pipeline wants the connection idle)."""
    with conn.begin():
        return fn(conn, *args, **kwargs)


def lineage(conn, run_id) -> list:
    return [tuple(r) for r in fetch(conn, "SELECT pos, key, step, detail FROM lineage WHERE run_id = :r "
                                          "ORDER BY pos, id", r=run_id)]


def outcomes(conn, run_id) -> dict:
    steps = ("inserted", "updated", "unchanged", "stale", "superseded", "rejected", "skipped")
    return {r.key: (r.step, r.detail) for r in fetch(conn, "SELECT key, step, detail FROM lineage WHERE run_id = :r",
                                                     r=run_id) if r.step in steps}


# -- a dataset of every type -----------------------------------------------------------------------

def test_every_type_lands_in_its_own_typed_column_and_a_missing_optional_field_is_null(conn, write, orders):
    summary = load(conn, write, [order("o1", **FULL), order("o2", customer="  Bob ", total="3.25", note="   ",
                                                            extra="kept only in the raw")])
    assert (summary["dataset"], summary["inserted"], summary["rejected"], summary["loaded"]) == ("orders", 2, 0, 2)
    assert summary["watermark"] == T
    assert rows(conn) == {
        "o1": ("Ann", 10.5, 2, True, "2025-03-01T09:00:00", '["a",{"b":1}]', "hi", T),
        "o2": ("Bob", 3.25, None, None, None, None, None, T),  # a blank optional string is missing too
    }
    assert fetch(conn, "SELECT sluice_run_id FROM ds_orders") == [(summary["run_id"],)] * 2
    assert scalar(conn, "SELECT count(*) FROM target") == 0  # events is untouched
    assert lineage(conn, summary["run_id"]) == [
        (1, "o1", "staged", f"valid; updated_at {T}"), (1, "o1", "inserted", "new key"),
        (2, "o2", "staged", f"valid; updated_at {T}"), (2, "o2", "inserted", "new key"),
    ]


def test_unchanged_needs_every_field_equal_null_included_and_updated_names_what_changed(conn, write, orders):
    keys = ("same", "customer", "total", "qty", "paid", "shipped", "tags", "note", "version", "sparse", "filled")
    first = [order(k, **FULL) for k in keys[:-2]] + [order("sparse"), order("filled")]
    load(conn, write, first, name="first.json")
    again = load(conn, write, first, name="again.json")
    assert (again["unchanged"], again["updated"]) == (len(keys), 0)  # NULL equals NULL: o.k. without a change
    assert outcomes(conn, again["run_id"])["sparse"] == ("unchanged", "same values in all 8 fields as the stored row")

    changed = [
        order("same", **FULL),
        order("customer", customer="Anne", **FULL),
        order("total", total=11, **FULL),
        order("qty", **{**FULL, "qty": "3"}),
        order("paid", **{**FULL, "paid": False}),
        order("shipped", **{**FULL, "shipped_at": "2025-03-02T00:00:00Z"}),
        order("tags", **{**FULL, "tags": ["a", {"b": 2}]}),
        order("note", **{k: v for k, v in FULL.items() if k != "note"}),  # absent now: NULL
        order("version", updated_at="2025-03-01T10:00:00.5", **FULL),
        order("sparse"),
        order("filled", qty=0, paid=False, tags=None, note=""),  # 0 and false are values, not NULL
    ]
    summary = load(conn, write, changed, name="changed.json")
    assert (summary["unchanged"], summary["updated"], summary["loaded"]) == (2, 9, 9)
    assert outcomes(conn, summary["run_id"]) == {
        "same": ("unchanged", "same values in all 8 fields as the stored row"),
        "customer": ("updated", "customer: 'Ann' → 'Anne'"),
        "total": ("updated", "total: 10.5 → 11"),
        "qty": ("updated", "qty: 2 → 3"),
        "paid": ("updated", "paid: true → false"),
        "shipped": ("updated", "shipped_at: 2025-03-01T09:00:00 → 2025-03-02T00:00:00"),
        "tags": ("updated", 'tags: ["a",{"b":1}] → ["a",{"b":2}]'),
        "note": ("updated", "note: 'hi' → null"),
        "version": ("updated", f"updated_at: {T} → 2025-03-01T10:00:00.500000"),
        "sparse": ("unchanged", "same values in all 8 fields as the stored row"),
        "filled": ("updated", "qty: null → 0; paid: null → false"),
    }
    table = rows(conn)
    assert table["note"][6] is None and table["qty"][2] == 3 and table["paid"][3] is False
    assert table["filled"] == ("Ann", 10.5, 0, False, None, None, None, T)


STALE = f"updated_at 2025-02-01T00:00:00 is older than the stored updated_at {T}; stored row kept"


def test_an_older_version_is_stale_and_the_latest_version_wins_within_a_run(conn, write, orders):
    load(conn, write, [order("o1", total=1)], name="first.json")
    summary = load(conn, write, [
        order("o1", total=2, updated_at="2025-02-01T00:00:00"),  # older than the stored row
        order("o2", total=1, updated_at="2025-03-01T10:00:00"),
        order("o2", total=2, updated_at="2025-03-01T11:00:00+01:00"),  # the same instant: the later record wins
        order("o3", total=1, updated_at="2025-03-02T00:00:00"),  # the latest, though not the last
        order("o3", total=2, updated_at="2025-03-01T00:00:00"),
    ], name="second.json", options=Options(ignore_watermark=True))
    assert (summary["stale"], summary["superseded"], summary["inserted"]) == (1, 2, 2)
    assert lineage(conn, summary["run_id"])[:2] == [
        (1, "o1", "staged", "valid; updated_at 2025-02-01T00:00:00"),
        (1, "o1", "stale", STALE),
    ]
    assert [r for r in lineage(conn, summary["run_id"]) if r[2] == "superseded"] == [
        (2, "o2", "superseded", "superseded by the record at position 3 of this run"),
        (5, "o3", "superseded", "superseded by the record at position 4 of this run"),
    ]
    assert {k: v[1] for k, v in rows(conn).items()} == {"o1": 1.0, "o2": 2.0, "o3": 1.0}
    assert summary["watermark"] == "2025-03-02T00:00:00"


def test_the_watermark_is_the_version_field_and_skips_older_records(conn, write, orders):
    load(conn, write, [order("o1", updated_at="2025-03-05T00:00:00")], name="first.json")
    assert read(conn, wm.current, orders.watermark) == "2025-03-05T00:00:00" and orders.watermark == "orders_updated_at"
    summary = load(conn, write, [order("o2", updated_at="2025-03-04T00:00:00"), order("o3", total="abc", updated_at="2025-03-06T00:00:00")],
                   name="second.json")
    assert (summary["skipped"], summary["rejected"], summary["staged"]) == (1, 1, 0)
    assert lineage(conn, summary["run_id"])[0] == (
        1, "o2", "skipped", "updated_at 2025-03-04T00:00:00 is older than the watermark 2025-03-05T00:00:00")
    assert read(conn, wm.current) is None  # the events watermark did not move


# -- validation by the shape -----------------------------------------------------------------------

def test_each_field_gives_its_own_error_code_in_the_shapes_order(conn, write, orders):
    future = canonical(utc_now() + timedelta(days=3))
    cases = [
        ("not_an_object", 5),
        ("missing_key", {"customer": "Ann", "total": 1, "updated_at": T}),
        ("invalid_key", order(7)),
        ("missing_customer", order(customer=" ")),
        ("invalid_customer", order(customer="x" * 21)),
        ("missing_total", order(total=None)),
        ("invalid_total", order(total="abc")),
        ("invalid_qty", order(qty=3.5)),
        ("invalid_paid", order(paid="yes")),
        ("invalid_shipped_at", order(shipped_at="soon")),
        ("invalid_note", order(note=5)),
        ("missing_timestamp", order(updated_at="")),
        ("invalid_timestamp", order(updated_at="2025-03-01")),
        ("future_timestamp", order(updated_at=future)),
        # the first failing rule decides: key, then the payload fields in order, then the version
        ("invalid_key", order(7, total="abc")),
        ("missing_customer", order(customer=None, total="abc", updated_at="x")),
        ("invalid_qty", order(qty="1.0", paid=1, updated_at="x")),
        ("invalid_paid", order(paid=1, note=[], updated_at=None)),
    ]
    summary = load(conn, write, [record for _code, record in cases])
    assert (summary["rejected"], summary["dead_letters"], summary["staged"]) == (len(cases), len(cases), 0)
    found = fetch(conn, "SELECT pos, key, step, detail FROM lineage WHERE run_id = :r ORDER BY pos", r=summary["run_id"])
    assert [r.detail.split(":")[0] for r in found] == [code for code, _record in cases]
    assert [r.key for r in found][:4] == ["", "", "", "o1"]  # a usable key is kept, a bad one is not
    assert found[4].detail == "invalid_customer: customer is 21 characters long; at most 20 are allowed"
    assert fetch(conn, "SELECT DISTINCT dataset FROM dead_letters") == [("orders",)]
    assert scalar(conn, "SELECT count(*) FROM ds_orders") == 0


def test_an_error_code_as_long_as_a_field_name_allows_is_kept_whole(conn, write):
    long_name = "f" * 63
    create_dataset(conn, "wide", {"key": "id", "version": "at", "fields": [{"name": long_name, "type": "integer"}]})
    summary = run_file(conn, write("wide.json", json.dumps([{"id": "a", long_name: "x", "at": T}])), dataset="wide")
    assert summary["rejected"] == 1
    assert fetch(conn, "SELECT dataset, error FROM dead_letters") == [("wide", f"invalid_{long_name}")]


def test_a_shape_without_payload_fields_compares_the_version_alone(conn, write):
    create_dataset(conn, "pings", {"key": "host", "version": "seen", "fields": []})
    first = run_file(conn, write("a.json", json.dumps([{"host": "h1", "seen": T}])), dataset="pings")
    again = run_file(conn, write("b.json", json.dumps([{"host": "h1", "seen": T, "up": False}])), dataset="pings")
    assert (first["inserted"], again["unchanged"]) == (1, 1)
    assert outcomes(conn, again["run_id"])["h1"] == ("unchanged", "same seen as the stored row")
    assert fetch(conn, "SELECT host, seen FROM ds_pings") == [("h1", T)]


# -- runs and shape versions -----------------------------------------------------------------------

def test_a_run_records_its_dataset_and_the_shape_version_it_used(conn, write, orders):
    first = load(conn, write, [order("o1")], name="first.json")
    evolve_dataset(conn, "orders", shape={**ORDERS, "fields": [*ORDERS["fields"], {"name": "coupon", "type": "string"}]})
    second = load(conn, write, [order("o2", coupon=" WINTER ")], name="second.json")
    events = run_file(conn, write("events.json", json.dumps([rec()])))
    assert fetch(conn, "SELECT id, dataset, shape_version FROM runs ORDER BY id") == [
        (first["run_id"], "orders", 1), (second["run_id"], "orders", 2), (events["run_id"], "events", 1)]
    assert fetch(conn, "SELECT order_id, coupon FROM ds_orders ORDER BY order_id") == [("o1", None), ("o2", "WINTER")]
    assert events["dataset"] == "events"


def test_a_shape_changed_while_a_run_reads_makes_it_read_again_with_the_new_shape(conn, engine, write, orders):
    evolved = []

    def evolve_once(phase, records, nbytes):
        if phase == "classifying" and not evolved:
            with engine.connect() as other:
                fields = [*ORDERS["fields"], {"name": "coupon", "type": "string"}]
                evolved.append(evolve_dataset(other, "orders", shape={**ORDERS, "fields": fields}))

    summary = load(conn, write, [order("o1", coupon="WINTER")], progress=evolve_once)
    assert (summary["inserted"], evolved[0].version) == (1, 2)
    assert fetch(conn, "SELECT shape_version FROM runs WHERE id = :r", r=summary["run_id"]) == [(2,)]
    assert fetch(conn, "SELECT order_id, coupon FROM ds_orders") == [("o1", "WINTER")]


def test_an_archived_or_unknown_dataset_takes_no_new_run(conn, write, orders):
    load(conn, write, [order("o1", total="abc")], name="first.json")
    (dl_id,) = [r.id for r in fetch(conn, "SELECT id FROM dead_letters")]
    archive_dataset(conn, "orders")
    runs = scalar(conn, "SELECT count(*) FROM runs")
    with pytest.raises(DatasetError) as refused:
        load(conn, write, [order("o2")], name="second.json")
    assert refused.value.code == "archived"
    with pytest.raises(DatasetError) as refused:
        reprocess(conn, [dl_id], edited=order("o1"))
    assert refused.value.code == "archived"
    with pytest.raises(DatasetError) as refused:
        load(conn, write, [order("o2")], dataset="nosuch", name="third.json")
    assert refused.value.code == "not_found"
    assert scalar(conn, "SELECT count(*) FROM runs") == runs
    assert fetch(conn, "SELECT status, attempts FROM dead_letters") == [("open", 0)]
    assert fetch(conn, "SELECT order_id FROM ds_orders") == []  # still readable, with nothing new


# -- two datasets never mix ------------------------------------------------------------------------

def test_two_datasets_keep_their_runs_dead_letters_lineage_and_watermarks_apart(conn, write, orders):
    same_raw = {"hello": "world"}  # rejected by both shapes with the same code: missing_key
    events = run_file(conn, write("events.json", json.dumps([rec(key="k1", ts="2025-06-01T00:00:00"), same_raw])))
    first = load(conn, write, [order("o1", updated_at="2025-01-01T00:00:00"), same_raw], name="o1.json")
    again = load(conn, write, [same_raw], name="o2.json")
    assert (events["dead_letters"], first["dead_letters"], again["dead_letters"]) == (1, 1, 0)
    assert fetch(conn, "SELECT dataset, error, sightings, run_id, last_run_id FROM dead_letters ORDER BY id") == [
        ("events", "missing_key", 1, events["run_id"], events["run_id"]),
        ("orders", "missing_key", 2, first["run_id"], again["run_id"]),
    ]
    # the events watermark (June) skips nothing of orders, whose own watermark is January
    assert first["skipped"] == 0 and first["inserted"] == 1
    assert (read(conn, wm.current), read(conn, wm.current, "orders_updated_at")) == ("2025-06-01T00:00:00", "2025-01-01T00:00:00")
    assert fetch(conn, "SELECT dataset, count(*) FROM lineage GROUP BY dataset ORDER BY dataset") == [
        ("events", 3), ("orders", 4)]
    assert fetch(conn, "SELECT DISTINCT dataset FROM lineage WHERE run_id = :r", r=again["run_id"]) == [("orders",)]
    assert fetch(conn, "SELECT dataset, name FROM watermarks ORDER BY name") == [
        ("events", "events_ts"), ("orders", "orders_updated_at")]
    assert fetch(conn, "SELECT dataset, name, new_value FROM watermark_history ORDER BY id") == [
        ("events", "events_ts", "2025-06-01T00:00:00"), ("orders", "orders_updated_at", "2025-01-01T00:00:00")]
    assert fetch(conn, "SELECT key FROM target") == [("k1",)]
    assert list(rows(conn)) == ["o1"]


def test_operator_watermark_changes_touch_only_their_dataset(conn, write, orders):
    load(conn, write, [order("o1", updated_at="2025-01-01T00:00:00"), order("o2", updated_at="2025-02-01T00:00:00")])
    run_file(conn, write("events.json", json.dumps([rec(ts="2025-06-01T00:00:00")])))
    assert read(conn, wm.preview, "2025-01-15T00:00:00", dataset="orders") == 1
    assert read(conn, wm.preview, None, dataset=orders) == 2
    assert read(conn, wm.preview, "2025-01-15T00:00:00") == 1  # events: its one row lies after
    assert wm.set_value(conn, "2025-01-10 00:00+00:00", via="cli", dataset="orders") == "2025-01-10T00:00:00"
    wm.reset(conn, via="api", dataset="orders")
    assert read(conn, wm.current) == "2025-06-01T00:00:00"
    assert read(conn, wm.current, "orders_updated_at") is None
    assert [(h["dataset"], h["old_value"], h["new_value"], h["via"]) for h in read(conn, wm.history, dataset="orders")] == [
        ("orders", "2025-01-10T00:00:00", None, "api"),
        ("orders", "2025-02-01T00:00:00", "2025-01-10T00:00:00", "cli"),
        ("orders", None, "2025-02-01T00:00:00", "pipeline"),
    ]
    assert [h["new_value"] for h in read(conn, wm.history)] == ["2025-06-01T00:00:00"]
    assert wm.set_value(conn, "2025-01-12T00:00:00", via="api", dataset="orders") == "2025-01-12T00:00:00"
    assert read(conn, wm.current, "orders_updated_at") == "2025-01-12T00:00:00"


# -- dead letters of a dataset ---------------------------------------------------------------------

def test_a_dead_letter_is_reprocessed_and_edited_by_its_datasets_shape(conn, write, orders):
    load(conn, write, [order("o1", total="abc")])
    (dl_id,) = [r.id for r in fetch(conn, "SELECT id FROM dead_letters")]
    # an events record is not an order: the edit fails again, by the orders shape
    failed = reprocess(conn, [dl_id], edited=rec(key="o1"))
    assert (failed["dataset"], failed["rejected"]) == ("orders", 1)
    assert fetch(conn, "SELECT status, error, attempts FROM dead_letters") == [("open", "missing_key", 1)]
    done = reprocess(conn, [dl_id], edited=order("o1", total="12", qty="4"))
    assert (done["dataset"], done["inserted"]) == ("orders", 1)
    assert fetch(conn, "SELECT status, outcome, resolved_run_id, attempts FROM dead_letters") == [
        ("resolved", "inserted", done["run_id"], 2)]
    assert rows(conn)["o1"][:3] == ("Ann", 12.0, 4)
    assert fetch(conn, "SELECT kind, dataset, shape_version FROM runs WHERE id = :r", r=done["run_id"]) == [
        ("reprocess", "orders", 1)]
    assert lineage(conn, done["run_id"]) == [
        (1, "o1", "reprocessed", f"retry of dead letter {dl_id}"),
        (1, "o1", "staged", f"valid; updated_at {T}"),
        (1, "o1", "inserted", "new key"),
    ]
    assert fetch(conn, "SELECT DISTINCT dataset FROM lineage") == [("orders",)]
    assert scalar(conn, "SELECT count(*) FROM target") == 0


def test_a_dead_letter_retried_unchanged_fails_again_in_its_dataset(conn, write, orders):
    load(conn, write, [order("o1", qty=1.5)])
    (dl_id,) = [r.id for r in fetch(conn, "SELECT id FROM dead_letters")]
    summary = reprocess(conn, [dl_id])
    assert (summary["dataset"], summary["rejected"], summary["loaded"]) == ("orders", 1, 0)
    assert fetch(conn, "SELECT status, error, attempts FROM dead_letters") == [("open", "invalid_qty", 1)]


def test_a_reprocess_takes_the_dead_letters_of_one_dataset(conn, write, orders):
    run_file(conn, write("events.json", json.dumps([rec(value="abc")])))
    load(conn, write, [order(total="abc")])
    ids = [r.id for r in fetch(conn, "SELECT id FROM dead_letters ORDER BY id")]
    runs = scalar(conn, "SELECT count(*) FROM runs")
    with pytest.raises(DeadLetterError, match=r"belong to 2 datasets \(events, orders\)") as refused:
        reprocess(conn, ids)
    assert refused.value.code == "invalid"
    assert scalar(conn, "SELECT count(*) FROM runs") == runs
    assert reprocess(conn, ids[1:], edited=order())["dataset"] == "orders"


def test_reopen_merges_only_with_the_same_record_of_its_own_dataset(conn, write, orders):
    bad = {"hello": "world"}  # missing_key in both datasets: the same raw and error
    load(conn, write, [bad], name="first.json")
    run_file(conn, write("events.json", json.dumps([bad])))
    (first,) = [r.id for r in fetch(conn, "SELECT id FROM dead_letters WHERE dataset = 'orders'")]
    assert discard(conn, [first], reason="later") == 1
    load(conn, write, [bad], name="second.json")  # a new open one: events' open one is not this dataset's
    assert reopen(conn, [first]) == 1
    assert fetch(conn, "SELECT dataset, status, sightings, reason FROM dead_letters ORDER BY id") == [
        ("orders", "open", 2, "later"),  # the reason it was once discarded stays
        ("events", "open", 1, None),
        ("orders", "discarded", 0, f"merged into dead letter {first}"),
    ]
    steps = fetch(conn, "SELECT dataset, step, detail FROM lineage WHERE run_id IS NULL ORDER BY id")
    assert steps == [("orders", "discarded", "discarded: later"), ("orders", "reopened", "reopened"),
                     ("orders", "discarded", f"merged into dead letter {first}: the same record and error")]


# -- the run service and the intake ----------------------------------------------------------------

def test_the_run_service_queues_and_retries_runs_of_a_dataset(app, engine):
    svc = app.extensions["sluice_runs"]
    with engine.connect() as conn:
        create_dataset(conn, "orders", ORDERS)
    run_id = svc.submit(io.BytesIO(json.dumps([order("o1")]).encode()), "o.json", dataset="orders")
    assert svc.drain() == [run_id]
    retry_of = svc.submit(io.BytesIO(b"[1, {"), "broken.json", dataset="orders")
    svc.drain()
    retried = svc.retry(retry_of)
    svc.drain()
    with engine.connect() as conn:
        assert fetch(conn, "SELECT id, kind, dataset, status FROM runs ORDER BY id") == [
            (run_id, "upload", "orders", "succeeded"), (retry_of, "upload", "orders", "failed"),
            (retried, "retry", "orders", "failed")]
        assert rows(conn) == {"o1": ("Ann", 10.5, None, None, None, None, None, T)}
        archive_dataset(conn, "orders")
    uploads = sorted(p.name for p in svc.upload_dir.iterdir())
    with pytest.raises(DatasetError):
        svc.submit(io.BytesIO(json.dumps([order("o2")]).encode()), "late.json", dataset="orders")
    assert sorted(p.name for p in svc.upload_dir.iterdir()) == uploads  # nothing stored for it


@pytest.mark.skipif(bool(PG_URL), reason="the intake is SQLite's")
def test_runs_waiting_in_the_intake_are_listed_per_dataset(app, engine):
    from .test_run_waits import HeldApplyLock

    svc = app.extensions["sluice_runs"]
    with engine.connect() as conn:
        create_dataset(conn, "orders", ORDERS)
    with HeldApplyLock(engine):
        orders_run = svc.submit(io.BytesIO(json.dumps([order("o1")]).encode()), "o.json", dataset="orders")
        events_run = svc.submit(io.BytesIO(json.dumps([rec()]).encode()), "e.json")
        with engine.connect() as conn:
            assert [r["id"] for r in pending_runs(conn, dataset="orders")] == [orders_run]
            assert [r["id"] for r in pending_runs(conn)] == [events_run]
            assert [(r["id"], r["dataset"]) for r in pending_runs(conn, dataset=ALL)] == [
                (events_run, "events"), (orders_run, "orders")]
            assert pending_runs(conn, [orders_run])[0]["dataset"] == "orders"  # by id, whatever its dataset
    assert svc.drain() == [orders_run, events_run]
    with engine.connect() as conn:
        assert fetch(conn, "SELECT id, dataset, status FROM runs ORDER BY id") == [
            (orders_run, "orders", "succeeded"), (events_run, "events", "succeeded")]
        assert list(rows(conn)) == ["o1"]


@pytest.mark.skipif(bool(PG_URL), reason="the intake is SQLite's")
def test_an_intake_file_made_before_datasets_gets_the_column_and_its_runs_are_events(engine, conn, write):
    path = f"{engine.url.database}-intake"
    old = sqlite3.connect(path)  # the intake_runs of the previous release, with a run waiting
    old.executescript("""
        CREATE TABLE intake_runs (id INTEGER NOT NULL PRIMARY KEY, kind VARCHAR(16) NOT NULL,
            status VARCHAR(16) NOT NULL, options TEXT NOT NULL, source_name TEXT, source_size BIGINT,
            source_sha256 VARCHAR(64), file_path TEXT, retry_of_id BIGINT, same_file_run_id BIGINT,
            queued_at VARCHAR(26) NOT NULL, finished_at VARCHAR(26), error TEXT, worker VARCHAR(128),
            cancel_requested BOOLEAN);
        CREATE TABLE intake_ids (one INTEGER NOT NULL PRIMARY KEY, last_id BIGINT NOT NULL);
        INSERT INTO intake_ids VALUES (1, 1);
    """)
    old.execute("INSERT INTO intake_runs (id, kind, status, options, source_name, file_path, queued_at) "
                "VALUES (1, 'upload', 'queued', '{}', 'old.json', ?, '2025-01-01T00:00:00')",
                (str(write("old.json", json.dumps([rec()]))),))
    old.commit()
    old.close()
    from app.runs.queue import RunQueue

    assert [(r["id"], r["dataset"]) for r in read(conn, pending_runs)] == [(1, "events")]
    assert intake_for(engine).path.exists()
    queue = RunQueue(engine)
    assert queue.claim_next("me") == 1
    assert fetch(conn, "SELECT id, dataset, status FROM runs") == [(1, "events", "running")]
    second = queue.record(kind="upload", source_name="new.json", dataset="events")
    assert second == 2
