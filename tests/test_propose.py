"""Proposing a shape from a sample (SPEC §10): types, required, key and version, notes, limits."""
import io
import json

import pytest

from app.datasets.propose import propose_shape
from app.datasets.shape import ShapeError, parse_shape
from app.datasets.validator import compile_validator
from app.pipeline.extract import Reader

from .conftest import SAMPLE_INPUT


def orders(n=40):
    """A realistic export: nested customer, mixed ints and floats, a field absent from some records."""
    records = []
    for i in range(n):
        record = {
            "order_id": f"ord-{i:04d}",
            "customer": {"name": f"Customer {i}", "tier": ["gold", "silver"][i % 2]},
            "total": i * 10 if i % 3 else i * 10 + 0.99,
            "quantity": i % 5 + 1,
            "paid": i % 4 != 0,
            "status": ["new", "shipped", "returned"][i % 3],
            "lines": [{"sku": "A", "n": 1}],
            "created_at": f"2025-01-{i % 28 + 1:02d} 09:00:00",
            "updated_at": f"2025-02-{i % 28 + 1:02d}T10:00:00Z",
            "coupon": "SPRING" if i % 2 else None,
        }
        if i % 10 == 3:
            del record["quantity"]
        records.append(record)
    return records


def fields(proposal):
    return {f["name"]: f for f in proposal["shape"]["fields"]}


def test_a_realistic_sample():
    proposal = propose_shape(orders())
    shape = proposal["shape"]
    assert (shape["key"], shape["version"]) == ("order_id", "updated_at")
    assert proposal["records_read"] == 40
    assert [f["name"] for f in shape["fields"]] == [
        "customer", "total", "quantity", "paid", "status", "lines", "created_at", "coupon",
    ]
    by_name = fields(proposal)
    assert by_name["customer"] == {"name": "customer", "type": "json", "required": True, "sortable": False}
    assert by_name["lines"]["type"] == "json"
    assert by_name["total"] == {"name": "total", "type": "number", "required": True, "sortable": False}
    assert by_name["quantity"] == {"name": "quantity", "type": "integer", "required": False, "sortable": False}
    assert by_name["paid"]["type"] == "boolean"
    assert by_name["status"] == {"name": "status", "type": "string", "required": True, "max_length": 1024,
                                 "sortable": False, "searchable": False}
    assert by_name["created_at"]["type"] == "timestamp"
    assert (by_name["coupon"]["type"], by_name["coupon"]["required"]) == ("string", False)


def test_the_proposal_is_a_shape_that_accepts_its_own_sample():
    sample = orders()
    proposal = propose_shape(sample)
    validator = compile_validator(parse_shape(proposal["shape"]))
    rows = [validator.validate(r, "2030-01-01T00:00:00") for r in sample]
    assert rows[0][0] == "ord-0000" and rows[0][-1] == "2025-02-01T10:00:00"


def test_reading_items_from_a_file_with_unreadable_lines_and_non_objects():
    lines = [json.dumps(r) for r in orders(5)] + ["{not json", "[1, 2]", '"text"']
    reader = Reader(io.BytesIO("\n".join(lines).encode()), 1 << 30)
    proposal = propose_shape(reader)
    assert proposal["records_read"] == 8
    assert proposal["shape"]["key"] == "order_id"
    assert "1 record(s) could not be read (malformed JSON or too large) and were not used" in proposal["notes"]
    assert "2 record(s) are not JSON objects and were not used" in proposal["notes"]


def test_the_seeds_sample():
    proposal = propose_shape(json.loads(SAMPLE_INPUT.read_text()))
    # One record has an empty key, so `key` is not distinct and present in every record.
    assert (proposal["shape"]["key"], proposal["shape"]["version"]) == ("name", "ts")
    assert "'key' cannot be the key: it is missing or empty in 1 record(s)" in proposal["notes"]
    value = fields(proposal)["value"]
    assert value["type"] == "json"  # 1, 3.5, 42.0 and "abc": not all numbers
    assert any("1 of its strings are not numbers" in note for note in proposal["notes"])


@pytest.mark.parametrize(("values", "type_"), [
    ([1, 2, 3], "integer"),
    ([1, 2.5, 3], "number"),
    ([1.0, 2.0], "number"),
    ([1, "2", " 3 "], "integer"),  # numbers, some written as strings
    ([1.5, "2.25", "1e3"], "number"),
    (["02134", "10001"], "string"),  # strings alone stay strings, however numeric
    ([True, False], "boolean"),
    ([True, 1], "json"),
    (["a", 1], "json"),
    ([{"a": 1}, {"b": 2}], "json"),
    ([[1], "x"], "json"),
    (["2025-01-01T00:00:00", "2025-01-02 10:00+02:00"], "timestamp"),
    (["2025-01-01T00:00:00", "tomorrow"], "string"),
    ([2**63, 1], "number"),
    ([None, None], "json"),
    (["a\u0000b", "c"], "json"),
])
def test_field_types(values, type_):
    records = [{"id": f"k{i}", "ts": "2025-01-01T00:00:00", "f": v} for i, v in enumerate(values)]
    assert fields(propose_shape(records))["f"]["type"] == type_


@pytest.mark.parametrize(("values", "required"), [
    (["a", "b"], True),
    (["a", None], False),
    (["a", " "], False),
    (["a", ...], False),  # absent from one record
    ([{"x": 1}, ""], True),  # json: "" is a value, only absent and null are missing
])
def test_required_means_present_and_not_missing_in_every_record(values, required):
    records = [{"id": f"k{i}", "ts": "2025-01-01T00:00:00", **({} if v is ... else {"f": v})}
               for i, v in enumerate(values)]
    assert fields(propose_shape(records))["f"]["required"] is required


@pytest.mark.parametrize(("longest", "max_length"), [(5, 1024), (1024, 1024), (1025, 2048), (3000, 4096),
                                                    (2_000_000, None)])
def test_max_length_leaves_room_above_the_longest_string(longest, max_length):
    records = [{"id": "a", "ts": "2025-01-01T00:00:00", "f": "x" * longest},
               {"id": "b", "ts": "2025-01-01T00:00:00", "f": "y"}]
    field = fields(propose_shape(records))["f"]
    assert field.get("max_length") == max_length
    assert field["type"] == ("string" if max_length else "json")


def test_key_prefers_id_then_key_then_names_ending_in_id_then_uuid():
    base = {"ts": "2025-01-01T00:00:00"}
    cases = [
        ({"code": "c", "uuid": "u", "customer_id": "c", "key": "k", "id": "i"}, "id"),
        ({"code": "c", "uuid": "u", "customer_id": "c", "key": "k"}, "key"),
        ({"code": "c", "uuid": "u", "customer_id": "c"}, "customer_id"),
        ({"code": "c", "uuid": "u"}, "uuid"),
        ({"code": "c", "label": "l"}, "code"),  # otherwise the first qualifying field
    ]
    for names, key in cases:
        records = [{**base, **{n: f"{v}{i}" for n, v in names.items()}} for i in range(3)]
        assert propose_shape(records)["shape"]["key"] == key


def test_the_key_must_be_a_distinct_string_in_every_record():
    records = [
        {"id": 1, "sku": "A", "ref": "r1", "code": "x", "ts": "2025-01-01T00:00:00"},
        {"id": 2, "sku": "A", "ref": "r2", "ts": "2025-01-02T00:00:00"},
    ]
    proposal = propose_shape(records)
    assert proposal["shape"]["key"] == "ref"  # id: integers; sku: repeats; code: absent once
    assert "'id' cannot be the key: not all its values are strings" in proposal["notes"]


def test_integer_ids_are_named_when_nothing_can_be_the_key():
    with pytest.raises(ShapeError, match=r"no field can be the key.*'id' holds integers, and a key is a string"):
        propose_shape([{"id": 1, "ts": "2025-01-01T00:00:00"}, {"id": 2, "ts": "2025-01-01T00:00:00"}])


def test_version_prefers_updated_at_then_ts_then_timestamp():
    day = "2025-01-01T00:00:00"
    cases = [
        (["created_at", "time", "timestamp", "ts", "updated_at"], "updated_at"),
        (["created_at", "time", "timestamp", "ts"], "ts"),
        (["created_at", "modified", "timestamp"], "timestamp"),
        (["created_at", "time", "modified"], "modified"),
        (["created_at", "time"], "time"),
        (["seen", "created_at"], "created_at"),
        (["seen", "born"], "seen"),
    ]
    for names, version in cases:
        records = [{"id": f"k{i}", **{n: day for n in names}} for i in range(2)]
        assert propose_shape(records)["shape"]["version"] == version


def test_the_version_must_parse_as_a_timestamp_in_every_record():
    records = [{"id": "a", "updated_at": "2025-01-01T00:00:00", "seen": "2025-01-01T00:00:00"},
               {"id": "b", "updated_at": "yesterday", "seen": "2025-01-02T00:00:00"}]
    proposal = propose_shape(records)
    assert proposal["shape"]["version"] == "seen"
    assert fields(proposal)["updated_at"]["type"] == "string"


def test_a_timestamp_field_is_the_key_only_when_nothing_else_can_be():
    records = [{"at": f"2025-01-0{i}T00:00:00", "ts": "2025-01-01T00:00:00"} for i in range(1, 4)]
    assert propose_shape(records)["shape"]["key"] == "at"
    records = [{**r, "label": f"l{i}"} for i, r in enumerate(records)]
    shape = propose_shape(records)["shape"]
    assert (shape["key"], shape["version"]) == ("label", "ts")


def test_bad_and_reserved_names_are_left_out_with_a_note():
    records = [{"id": "a", "ts": "2025-01-01T00:00:00", "Total Price": 3, "sluice_run_id": 1, "ok": 1}]
    proposal = propose_shape(records)
    assert list(fields(proposal)) == ["ok"]
    assert ("left out 'Total Price': not a valid field name (a lowercase letter or _, then up to 62 lowercase "
            "letters, digits or _)") in proposal["notes"]
    assert "left out 'sluice_run_id': names starting with sluice_ are reserved" in proposal["notes"]


def test_at_most_100_fields_are_proposed():
    records = [{"id": "a", "ts": "2025-01-01T00:00:00", **{f"f{i}": i for i in range(120)}}]
    proposal = propose_shape(records)
    assert len(proposal["shape"]["fields"]) == 100
    assert "left out 'f100' and the fields after it: a shape has at most 100 fields" in proposal["notes"]


def test_at_most_10000_records_are_read():
    def endless():
        i = 0
        while True:
            yield {"id": f"k{i}", "ts": "2025-01-01T00:00:00"}
            i += 1
    proposal = propose_shape(endless())
    assert proposal["records_read"] == 10_000
    assert "read the first 10,000 records only" in proposal["notes"]


@pytest.mark.parametrize(("records", "why"), [
    ([], "none of the 0 records read is a JSON object"),
    ([[1], "x", 3], "none of the 3 records read is a JSON object"),
    ([{"id": "a", "ts": "2025-01-01T00:00:00"}, {"id": "a", "ts": "2025-01-01T00:00:00"}], "no field can be the key"),
    ([{"id": "a", "ts": "soon"}, {"id": "b", "ts": "2025-01-01T00:00:00"}], "no field can be the version"),
])
def test_no_proposal_says_why(records, why):
    with pytest.raises(ShapeError, match=why):
        propose_shape(records)
