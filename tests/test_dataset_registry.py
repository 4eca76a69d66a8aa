"""Datasets' catalogue and tables (SPEC §10): create, read, evolve, archive; every change whole or not at all."""
import json

import pytest
import sqlalchemy as sa
from sqlalchemy import event, inspect, text

from app.accounts.actor import Actor
from app.datasets import registry
from app.datasets.registry import (
    Dataset,
    DatasetError,
    archive_dataset,
    create_dataset,
    ensure_writable,
    evolve_dataset,
    get_dataset,
    list_datasets,
    resolve,
    shape_versions,
)
from app.datasets.shape import EVENTS_SHAPE, parse_shape
from app.models import Target

from .pipeline_helpers import fetch, scalar

ORDERS = {
    "key": "order_id",
    "version": "updated_at",
    "fields": [
        {"name": "customer", "type": "string", "required": True, "max_length": 200, "sortable": True,
         "searchable": True},
        {"name": "total", "type": "number", "required": True, "sortable": True},
        {"name": "items", "type": "integer"},
        {"name": "paid", "type": "boolean"},
        {"name": "shipped_at", "type": "timestamp"},
        {"name": "tags", "type": "json"},
    ],
}


def plain(shape: dict) -> dict:
    """A shape's plain JSON form with every default written out, as the catalogue gives it back."""
    return parse_shape(shape).to_dict()


def orders(**changes) -> dict:
    """The ORDERS shape with fields changed (`customer={"max_length": 500}`) or added (`add=[...]`)."""
    shape = json.loads(json.dumps(ORDERS))
    for f in shape["fields"]:
        f.update(changes.get(f["name"], {}))
    shape["fields"] += changes.get("add", [])
    return shape


@pytest.fixture(autouse=True)
def _no_datasets_left(engine):
    """Datasets made or changed by a test go with it (the PostgreSQL test database is shared by the session)."""
    with engine.begin() as conn:
        catalogue = {table: [r._asdict() for r in conn.execute(text(f"SELECT * FROM {table}"))]
                     for table in ("datasets", "dataset_versions")}
    yield
    with engine.begin() as conn:
        for name in inspect(conn).get_table_names():
            if name.startswith("ds_"):
                conn.execute(sa.schema.DropTable(sa.Table(name, sa.MetaData())))
        for table, rows in catalogue.items():
            conn.execute(text(f"DELETE FROM {table}"))
            conn.execute(sa.table(table, *map(sa.column, rows[0])).insert(), rows)


def columns(conn, table: str) -> dict:
    with conn.begin():
        return {c["name"]: c for c in inspect(conn).get_columns(table)}


def indexes(conn, table: str) -> dict:
    with conn.begin():
        return {i["name"]: i["column_names"] for i in inspect(conn).get_indexes(table)}


def state(conn, table: str = "ds_orders") -> tuple:
    """A table's columns and indexes, and its dataset's catalogue and version rows."""
    cols = {name: (str(c["type"]), c["nullable"]) for name, c in columns(conn, table).items()}
    return (cols, indexes(conn, table), fetch(conn, "SELECT * FROM datasets ORDER BY name"),
            fetch(conn, "SELECT * FROM dataset_versions ORDER BY id"))


def test_events_is_the_seeds_dataset_on_the_existing_target_table(conn):
    events = get_dataset(conn)
    assert not conn.in_transaction()  # callers go on to begin their own transaction
    assert (events.name, events.version, events.shape, events.watermark) == ("events", 1, EVENTS_SHAPE, "events_ts")
    assert events.table is Target.__table__
    assert (events.key_col, events.version_col, events.updated_col, events.run_col) == (
        Target.__table__.c.key, Target.__table__.c.ts, Target.__table__.c.updated_at, Target.__table__.c.run_id)
    assert events.payload_cols == (Target.__table__.c.name, Target.__table__.c.value)
    assert resolve(conn, None) is events and resolve(conn, "events") is events and resolve(conn, events) is events
    assert events.to_dict() == {
        "name": "events", "title": "Events", "description": "The seed's records: key, name, value and ts.",
        "shape": EVENTS_SHAPE.to_dict(), "version": 1, "archived_at": None, "created_at": events.created_at,
        "table": "target", "watermark": "events_ts",
    }
    assert events.validator.validate({"key": " k ", "name": "n", "value": "2", "ts": "2025-01-15T12:00:00Z"},
                                     "2100-01-01T00:00:00") == ("k", "n", 2.0, "2025-01-15T12:00:00")
    ensure_writable(events)


def test_an_unknown_dataset_is_not_found(conn):
    for name in ("nope", "", "Events", None):
        with pytest.raises(DatasetError) as err:
            get_dataset(conn, name)
        assert err.value.code == "not_found"
    with pytest.raises(DatasetError) as err:
        resolve(conn, "nope")
    assert (err.value.code, str(err.value)) == ("not_found", "there is no dataset 'nope'")
    for call in (lambda: evolve_dataset(conn, "nope", title="x"), lambda: archive_dataset(conn, "nope"),
                 lambda: shape_versions(conn, "nope")):
        with pytest.raises(DatasetError) as err:
            call()
        assert err.value.code == "not_found"


def test_reading_a_dataset_is_one_primary_key_select_and_gives_the_same_object(conn, engine):
    create_dataset(conn, "orders", ORDERS)
    first = get_dataset(conn, "orders")
    statements = []

    @event.listens_for(engine, "before_cursor_execute")
    def count(_conn, _cursor, statement, *_):
        statements.append(statement)

    try:
        again = get_dataset(conn, "orders")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert again is first and again.validator is first.validator and again.table is first.table
    [select] = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert "FROM datasets" in select and "WHERE datasets.name =" in select


def test_a_new_datasets_table_is_plain_sql_with_typed_columns_and_the_indexes_its_pages_need(conn):
    made = create_dataset(conn, "orders", ORDERS, title=" Orders ", description="From the shop", actor=Actor("ann"))
    assert made == get_dataset(conn, "orders")
    assert made.to_dict() == {
        "name": "orders", "title": "Orders", "description": "From the shop", "shape": plain(ORDERS), "version": 1,
        "archived_at": None, "created_at": made.created_at, "table": "ds_orders", "watermark": "orders_updated_at",
    }
    cols = columns(conn, "ds_orders")
    assert list(cols) == ["order_id", "customer", "total", "items", "paid", "shipped_at", "tags", "updated_at",
                          "sluice_updated_at", "sluice_run_id"]
    kinds = {
        "order_id": (sa.String, 256, False), "customer": (sa.String, 200, False), "total": (sa.Float, None, False),
        "items": (sa.BigInteger, None, True), "paid": (sa.Boolean, None, True), "shipped_at": (sa.String, 26, True),
        "tags": (sa.Text, None, True), "updated_at": (sa.String, 26, False), "sluice_updated_at": (sa.String, 26, False),
        "sluice_run_id": (sa.BigInteger, None, True),
    }
    for name, (kind, length, nullable) in kinds.items():
        assert isinstance(cols[name]["type"], kind), name
        assert getattr(cols[name]["type"], "length", None) == length, name
        assert cols[name]["nullable"] is nullable, name
    with conn.begin():
        assert inspect(conn).get_pk_constraint("ds_orders")["constrained_columns"] == ["order_id"]
    assert indexes(conn, "ds_orders") == {
        "ix_ds_orders_updated_at_key": ["updated_at", "order_id"],
        "ix_ds_orders_sluice_updated_at_key": ["sluice_updated_at", "order_id"],
        "ix_ds_orders_customer_key": ["customer", "order_id"],
        "ix_ds_orders_total_key": ["total", "order_id"],
    }

    keys = ["b", "B", "a", "_x", "é", "Z9", "a b", "ab", "~", "10", "9"]
    with conn.begin():
        for i, key in enumerate(keys):
            conn.execute(text(
                "INSERT INTO ds_orders (order_id, customer, total, items, paid, tags, updated_at, sluice_updated_at) "
                "VALUES (:k, 'c', :t, :i, :p, '[1]', '2025-01-15T12:00:00', '2025-01-16T00:00:00')"),
                {"k": key, "t": i / 2, "i": i, "p": i % 2 == 0})
    assert [r.order_id for r in fetch(conn, "SELECT order_id FROM ds_orders ORDER BY order_id")] == sorted(keys)
    assert fetch(conn, "SELECT total, items, paid FROM ds_orders WHERE order_id = 'b'") == [(0.0, 0, True)]
    assert [v["version"] for v in shape_versions(conn, "orders")] == [1]
    [created] = shape_versions(conn, "orders")
    assert (created["shape"], created["changes"], created["actor"]) == (plain(ORDERS), ["created"], "ann")


def test_creating_refuses_a_taken_name_a_bad_name_a_bad_shape_and_a_taken_watermark(conn):
    create_dataset(conn, "orders", ORDERS)
    before = state(conn)
    with pytest.raises(DatasetError) as err:
        create_dataset(conn, "orders", {"key": "id", "version": "at", "fields": []})
    assert (err.value.code, str(err.value)) == ("conflict", "a dataset named 'orders' exists already")
    with pytest.raises(DatasetError) as err:
        create_dataset(conn, "events", ORDERS)
    assert err.value.code == "conflict"

    for bad in ("Orders", "1orders", "_orders", "orders-2", "o" * 41, "", "orders\n", "ordérs", None):
        with pytest.raises(DatasetError) as err:
            create_dataset(conn, bad, ORDERS)
        assert err.value.code == "invalid", bad
        assert "is not a valid dataset name (a lowercase letter, then up to 39 lowercase letters, digits or _)" in str(
            err.value)

    with pytest.raises(DatasetError) as err:
        create_dataset(conn, "shop", {"key": "id", "version": "at", "fields": [{"name": "x", "type": "colour"}]})
    assert err.value.code == "invalid"
    assert str(err.value).startswith("fields[0].type: 'colour' is not one of string")

    # "orders" + "updated_at" and "orders_updated" + "at" would share a watermark.
    with pytest.raises(DatasetError) as err:
        create_dataset(conn, "orders_updated", {"key": "id", "version": "at", "fields": []})
    assert err.value.code == "conflict"
    assert "watermark name 'orders_updated_at'" in str(err.value) and "by dataset 'orders'" in str(err.value)
    with conn.begin():  # a watermark row of that name, however it came there
        conn.execute(text("INSERT INTO watermarks (name, value, updated_at) VALUES ('shop_at', NULL, '2025-01-01')"))
    with pytest.raises(DatasetError) as err:
        create_dataset(conn, "shop", {"key": "id", "version": "at", "fields": []})
    assert err.value.code == "conflict" and "'shop_at'" in str(err.value)
    with conn.begin():
        conn.execute(text("CREATE TABLE ds_stray (x INTEGER)"))
    with pytest.raises(DatasetError) as err:
        create_dataset(conn, "stray", {"key": "id", "version": "at", "fields": []})
    assert (err.value.code, str(err.value)) == ("conflict", "a table named 'ds_stray' exists already in the database")
    with conn.begin():
        conn.execute(text("DROP TABLE ds_stray"))

    assert state(conn) == before
    create_dataset(conn, "o" * 40, {"key": "id", "version": "at", "fields": []})  # the longest name
    assert [d.name for d in list_datasets(conn)] == ["events", "o" * 40, "orders"]


def test_long_names_give_distinct_index_names_within_postgresqls_limit(conn):
    name = "d" * 40
    field = lambda suffix: {"name": "f" * 60 + suffix, "type": "number", "sortable": True}
    made = create_dataset(conn, name, {"key": "k" * 63, "version": "v" * 63, "fields": [field("a"), field("b")]})
    found = indexes(conn, made.table.name)
    assert len(found) == 4 and all(len(n) <= 63 for n in found)
    assert sorted(found.values()) == sorted([["v" * 63, "k" * 63], ["sluice_updated_at", "k" * 63],
                                             ["f" * 60 + "a", "k" * 63], ["f" * 60 + "b", "k" * 63]])
    assert len(made.watermark) <= 64 and made.watermark.startswith(name + "_v")


def test_evolving_adds_a_column_raises_a_length_builds_an_index_and_records_the_version(conn):
    create_dataset(conn, "orders", ORDERS, title="Orders")
    with conn.begin():
        conn.execute(text("INSERT INTO ds_orders (order_id, customer, total, updated_at, sluice_updated_at) "
                          "VALUES ('o1', 'ann', 5, '2025-01-15T12:00:00', '2025-01-16T00:00:00')"))
    new_shape = orders(customer={"max_length": 400}, items={"sortable": True},
                       add=[{"name": "note", "type": "string", "max_length": 300, "searchable": True},
                            {"name": "weight", "type": "number"}])
    new = evolve_dataset(conn, "orders", shape=new_shape, actor=Actor("bob"))
    assert new == get_dataset(conn, "orders")
    assert (new.version, new.shape.to_dict(), new.title) == (2, plain(new_shape), "Orders")
    assert [c.name for c in new.payload_cols] == ["customer", "total", "items", "paid", "shipped_at", "tags", "note",
                                                  "weight"]

    cols = columns(conn, "ds_orders")
    assert cols["note"]["nullable"] and cols["weight"]["nullable"] and cols["note"]["type"].length == 300
    if conn.dialect.name == "postgresql":
        assert cols["customer"]["type"].length == 400
        assert fetch(conn, "SELECT collation_name FROM information_schema.columns "
                           "WHERE table_name = 'ds_orders' AND column_name = 'customer'") == [("C",)]
    assert indexes(conn, "ds_orders")["ix_ds_orders_items_key"] == ["items", "order_id"]
    assert indexes(conn, "ds_orders")["ix_ds_orders_note_key"] == ["note", "order_id"]
    long_customer = "c" * 400
    with conn.begin():
        conn.execute(text("UPDATE ds_orders SET customer = :c, note = 'n', weight = 1.5"), {"c": long_customer})
    assert fetch(conn, "SELECT order_id, customer, note, weight FROM ds_orders") == [
        ("o1", long_customer, "n", 1.5)]

    latest, first = shape_versions(conn, "orders")
    assert (latest["version"], latest["shape"], latest["actor"]) == (2, plain(new_shape), "bob")
    assert latest["changes"] == [
        "raised max_length of 'customer' from 200 to 400",
        "made 'items' sortable",
        "added optional field 'note' (string, max_length 300, searchable)",
        "added optional field 'weight' (number)",
    ]
    assert first["version"] == 1 and latest["at"] >= first["at"]

    renamed = evolve_dataset(conn, "orders", title="Shop orders", description="All of them", actor=Actor("cy"))
    assert (renamed.version, renamed.title, renamed.description, renamed.shape) == (3, "Shop orders", "All of them",
                                                                                   new.shape)
    assert shape_versions(conn, "orders")[0]["changes"] == [
        "changed the title from 'Orders' to 'Shop orders'", "changed the description from '' to 'All of them'"]
    assert evolve_dataset(conn, "orders", shape=new_shape, title="Shop orders") is renamed  # nothing changed
    assert len(shape_versions(conn, "orders")) == 3


@pytest.mark.parametrize("change, says", [
    (lambda s: s["fields"].pop(2), "field 'items' cannot be removed or renamed"),
    (lambda s: s["fields"][1].update(type="integer"), "'total' cannot change type from number to integer"),
    (lambda s: s["fields"][2].update(required=True), "'items' cannot become required"),
    (lambda s: s["fields"][0].update(max_length=100), "max_length of 'customer' cannot be lowered"),
    (lambda s: s["fields"].append({"name": "x", "type": "string", "required": True}), "new field 'x' must be optional"),
    (lambda s: s.update(key="customer_id"), "the key field cannot change"),
    (lambda s: s["fields"][0].update(sortable=False), "'customer' cannot stop being sortable"),
])
def test_a_refused_evolution_leaves_the_table_and_the_catalogue_untouched(conn, change, says):
    create_dataset(conn, "orders", ORDERS)
    before = state(conn)
    shape = orders()
    change(shape)
    with pytest.raises(DatasetError) as err:
        evolve_dataset(conn, "orders", shape=shape, title="New title")
    assert err.value.code == "conflict"
    assert says in str(err.value) and "create a new dataset" in str(err.value)
    assert state(conn) == before
    assert not conn.in_transaction()


def test_an_invalid_shape_is_refused_as_invalid_and_events_keeps_the_seeds_shape(conn):
    create_dataset(conn, "orders", ORDERS)
    with pytest.raises(DatasetError) as err:
        evolve_dataset(conn, "orders", shape={"key": "order_id", "version": "updated_at"})
    assert (err.value.code, str(err.value)) == ("invalid", "fields is missing")

    before = state(conn, "target")
    wider = EVENTS_SHAPE.to_dict()
    wider["fields"].append({"name": "note", "type": "string"})
    with pytest.raises(DatasetError) as err:
        evolve_dataset(conn, "events", shape=wider)
    assert err.value.code == "conflict" and "events dataset keeps the seed's shape" in str(err.value)
    assert state(conn, "target") == before
    events = evolve_dataset(conn, "events", title="Sensor events", shape=EVENTS_SHAPE)
    assert (events.version, events.title, events.table) == (2, "Sensor events", Target.__table__)


def test_archiving_keeps_the_table_readable_and_stops_new_runs_and_changes(conn):
    create_dataset(conn, "orders", ORDERS)
    create_dataset(conn, "archive_me", {"key": "id", "version": "at", "fields": []})
    with conn.begin():
        conn.execute(text("INSERT INTO ds_archive_me (id, at, sluice_updated_at) VALUES ('a', 'x', 'y')"))
    archived = archive_dataset(conn, "archive_me", actor=Actor("dee"))
    assert archived.archived and archived.archived_at is not None and archived.version == 2
    assert get_dataset(conn, "archive_me") == archived
    assert fetch(conn, "SELECT id FROM ds_archive_me") == [("a",)]
    assert scalar(conn, "SELECT archived_by FROM datasets WHERE name = 'archive_me'") == "dee"
    assert shape_versions(conn, "archive_me")[0]["changes"] == ["archived"]
    assert shape_versions(conn, "archive_me")[0]["actor"] == "dee"
    with pytest.raises(DatasetError) as err:
        ensure_writable(archived)
    assert err.value.code == "archived" and "takes no new runs" in str(err.value)
    ensure_writable(get_dataset(conn, "orders"))

    for call in (lambda: archive_dataset(conn, "archive_me"), lambda: evolve_dataset(conn, "archive_me", title="t")):
        with pytest.raises(DatasetError) as err:
            call()
        assert err.value.code == "archived"
    with pytest.raises(DatasetError) as err:
        archive_dataset(conn, "events")
    assert err.value.code == "conflict"
    assert get_dataset(conn).archived_at is None

    listed = list_datasets(conn)
    assert [d.name for d in listed] == ["events", "archive_me", "orders"]
    assert [d.archived for d in listed] == [False, True, False]
    assert all(isinstance(d, Dataset) for d in listed)


def _fail(*_args, **_kwargs):
    raise RuntimeError("injected after the DDL")


def test_a_failure_after_the_ddl_leaves_nothing_half_made(conn, monkeypatch):
    create_dataset(conn, "orders", ORDERS)
    before = state(conn)
    monkeypatch.setattr(registry, "_insert_version", _fail)

    with pytest.raises(RuntimeError, match="injected"):
        create_dataset(conn, "shop", {"key": "id", "version": "at", "fields": [{"name": "x", "type": "string",
                                                                                 "max_length": 40, "sortable": True}]})
    assert not conn.in_transaction()
    with conn.begin():
        assert not inspect(conn).has_table("ds_shop")
    with pytest.raises(DatasetError):
        get_dataset(conn, "shop")

    with pytest.raises(RuntimeError, match="injected"):
        evolve_dataset(conn, "orders", shape=orders(customer={"max_length": 300}, items={"sortable": True},
                                                    add=[{"name": "note", "type": "string"}]))
    with pytest.raises(RuntimeError, match="injected"):
        archive_dataset(conn, "orders")
    assert state(conn) == before
    assert get_dataset(conn, "orders").version == 1

    monkeypatch.undo()  # and the same changes go through once nothing fails
    create_dataset(conn, "shop", {"key": "id", "version": "at", "fields": []})
    assert evolve_dataset(conn, "orders", shape=orders(add=[{"name": "note", "type": "string"}])).version == 2
    assert "note" in columns(conn, "ds_orders")


def test_a_shape_built_in_code_is_checked_like_plain_json(conn):
    from app.datasets.shape import Field, Shape

    bad = Shape(key="id", version="at", fields=(Field('x"; DROP TABLE target; --', "string", max_length=10),))
    with pytest.raises(DatasetError) as err:
        create_dataset(conn, "shop", bad)
    assert err.value.code == "invalid" and "is not a valid field name" in str(err.value)
    good = create_dataset(conn, "shop", Shape(key="id", version="at", fields=(Field("x", "integer"),)))
    assert [c.name for c in good.payload_cols] == ["x"]
    assert "target" in inspect(conn.engine).get_table_names()


def test_a_searchable_field_made_sortable_too_keeps_its_one_index(conn):
    create_dataset(conn, "shop", {"key": "id", "version": "at",
                                  "fields": [{"name": "note", "type": "string", "max_length": 80, "searchable": True}]})
    before = indexes(conn, "ds_shop")
    assert before["ix_ds_shop_note_key"] == ["note", "id"]
    both = evolve_dataset(conn, "shop", shape={"key": "id", "version": "at", "fields": [
        {"name": "note", "type": "string", "max_length": 80, "searchable": True, "sortable": True}]})
    assert both.version == 2 and both.shape.fields[0].sortable
    assert shape_versions(conn, "shop")[0]["changes"] == ["made 'note' sortable"]
    assert indexes(conn, "ds_shop") == before


def test_a_connection_that_read_a_table_often_still_reads_it_after_a_string_is_widened(engine, conn):
    create_dataset(conn, "orders", ORDERS)
    query = "SELECT order_id, customer FROM ds_orders WHERE order_id = :k"
    with engine.connect() as reader:
        for _ in range(8):  # psycopg prepares a statement on the server once it ran 5 times
            assert fetch(reader, query, k="o1") == []
        evolve_dataset(conn, "orders", shape=orders(customer={"max_length": 400}))
        assert fetch(reader, query, k="o1") == []  # not "cached plan must not change result type"


def test_an_index_whose_entries_may_not_fit_is_refused_with_what_to_do(conn):
    long_sorted = {"key": "id", "version": "at", "fields": [{"name": "note", "type": "string", "sortable": True}]}
    with pytest.raises(DatasetError, match="a sortable string holds at most 400 characters") as err:
        create_dataset(conn, "shop", long_sorted)
    assert err.value.code == "invalid" and "set max_length to 400 or less" in str(err.value)
    with pytest.raises(DatasetError, match="json, which cannot be sorted by"):
        create_dataset(conn, "shop", {"key": "id", "version": "at",
                                      "fields": [{"name": "doc", "type": "json", "sortable": True}]})
    create_dataset(conn, "orders", ORDERS)
    with pytest.raises(DatasetError, match="a sortable string holds at most 400"):
        evolve_dataset(conn, "orders", shape=orders(customer={"max_length": 401}))
    assert get_dataset(conn, "orders").version == 1


@pytest.mark.parametrize("name", ["new", "propose"])
def test_a_name_that_is_a_page_of_its_own_is_refused(conn, name):
    with pytest.raises(DatasetError, match="names a page of its own") as err:
        create_dataset(conn, name, {"key": "id", "version": "at", "fields": []})
    assert err.value.code == "invalid"
