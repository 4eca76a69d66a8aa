"""A shape's record rules (SPEC §10): each type's accepted and refused values, codes, order, update details."""
import json
from dataclasses import replace

import pytest

from app.datasets.shape import EVENTS_SHAPE, Field, Shape, ShapeError, parse_shape
from app.datasets.validator import compile_validator, describe_update
from app.pipeline import validate as rules
from app.pipeline.load import update_detail
from app.pipeline.validate import Invalid

from .conftest import SAMPLE_INPUT
from .test_validation import INVALID, VALID_TIMESTAMPS, VALID_VALUES

LATEST = "2030-01-01T00:00:00"
TS = "2025-01-15T12:00:00Z"

ORDERS = parse_shape({
    "key": "order_id",
    "version": "updated_at",
    "fields": [
        {"name": "customer", "type": "string", "required": True, "max_length": 20, "searchable": True},
        {"name": "total", "type": "number", "required": True, "sortable": True},
        {"name": "items", "type": "integer"},
        {"name": "paid", "type": "boolean"},
        {"name": "shipped_at", "type": "timestamp"},
        {"name": "extra", "type": "json"},
    ],
})
ORDERS_VALIDATOR = compile_validator(ORDERS)


def order(**fields):
    """A valid order record with some fields replaced (None removes a field)."""
    record = {"order_id": "o-1", "customer": "Ada", "total": 12.5, "updated_at": TS}
    for name, value in fields.items():
        if value is None:
            record.pop(name, None)
        else:
            record[name] = value
    return record


def outcome(validate, record):
    """What validating a record gives: its values, or (code, detail)."""
    try:
        return validate(record, LATEST)
    except Invalid as exc:
        return (exc.code, exc.detail)


def optional(name, value):
    """The stored value of optional field `name` for a record holding `value`."""
    values = ORDERS_VALIDATOR.validate(order(**{name: value}), LATEST)
    return values[ORDERS.names.index(name)]


def refused(record):
    with pytest.raises(Invalid) as exc:
        ORDERS_VALIDATOR.validate(record, LATEST)
    return exc.value.code, exc.value.detail


def test_a_valid_record_gives_its_values_in_staging_order():
    record = order(items=3, paid=True, shipped_at="2025-01-15T14:00:00+02:00", extra={"b": [1, {"c": None}], "a": "é"})
    assert ORDERS_VALIDATOR.validate(record, LATEST) == (
        "o-1", "Ada", 12.5, 3, True, "2025-01-15T12:00:00", '{"b":[1,{"c":null}],"a":"é"}', "2025-01-15T12:00:00",
    )


def test_missing_optional_fields_are_none():
    assert ORDERS_VALIDATOR.validate(order(), LATEST) == (
        "o-1", "Ada", 12.5, None, None, None, None, "2025-01-15T12:00:00",
    )
    blank = order(items="", paid=None, shipped_at="   ", extra=None)
    assert ORDERS_VALIDATOR.validate(blank, LATEST)[3:7] == (None, None, None, None)


@pytest.mark.parametrize(("value", "stored"), [(" Ada ", "Ada"), ("Zoë 🙂", "Zoë 🙂"), ("x" * 20, "x" * 20)])
def test_string_accepts_text_trimmed(value, stored):
    assert ORDERS_VALIDATOR.validate(order(customer=value), LATEST)[1] == stored


@pytest.mark.parametrize(("value", "detail"), [
    (7, "customer 7 is not a string"),
    (["Ada"], "customer an array is not a string"),
    ("x" * 21, "customer is 21 characters long; at most 20 are allowed"),
    ("a\u0000b", "customer 'a\\x00b' holds a NUL character or an unpaired surrogate"),
    ("a\ud800", "customer 'a\\ud800' holds a NUL character or an unpaired surrogate"),
])
def test_string_refuses(value, detail):
    assert refused(order(customer=value)) == ("invalid_customer", detail)


@pytest.mark.parametrize(("value", "stored"), [*VALID_VALUES, (10**20, 1e20)])
def test_number_accepts_what_value_accepts(value, stored):
    assert ORDERS_VALIDATOR.validate(order(total=value), LATEST)[2] == stored


@pytest.mark.parametrize("value", [True, False, "abc", "1_000", "nan", "Infinity", "1e400", 10**400, [1], {"v": 1}])
def test_number_refuses(value):
    code, detail = refused(order(total=value))
    assert code == "invalid_total"
    assert detail.startswith("total ")


def test_number_detail_names_the_field():
    assert refused(order(total="abc")) == ("invalid_total", "total 'abc' is not a number")


@pytest.mark.parametrize(("value", "stored"), [
    (3, 3), (0, 0), (-5, -5), (" 42 ", 42), ("+7", 7), ("-0012", -12),
    (2**63 - 1, 2**63 - 1), (-(2**63), -(2**63)), (str(-(2**63)), -(2**63)),
])
def test_integer_accepts(value, stored):
    assert optional("items", value) == stored


@pytest.mark.parametrize(("value", "detail"), [
    (3.0, "items 3.0 is not an integer"),
    ("3.5", "items '3.5' is not an integer"),
    ("3.0", "items '3.0' is not an integer"),
    (1e3, "items 1000.0 is not an integer"),
    ("1e3", "items '1e3' is not an integer"),
    (True, "items true is not an integer"),
    ("0x10", "items '0x10' is not an integer"),
    ("\u0661", "items '\u0661' is not an integer"),
    ([3], "items an array is not an integer"),
    (2**63, "items 9223372036854775808 is outside the 64-bit integer range"),
    (-(2**63) - 1, "items -9223372036854775809 is outside the 64-bit integer range"),
    ("9" * 30, f"items '{'9' * 30}' is outside the 64-bit integer range"),
])
def test_integer_refuses(value, detail):
    assert refused(order(items=value)) == ("invalid_items", detail)


@pytest.mark.parametrize("value", [True, False])
def test_boolean_accepts_json_true_and_false(value):
    assert optional("paid", value) is value


@pytest.mark.parametrize("value", ["true", "false", 1, 0, "yes", [True]])
def test_boolean_refuses_anything_else(value):
    code, detail = refused(order(paid=value))
    assert code == "invalid_paid"
    assert detail.endswith("is not a boolean (JSON true or false)")


@pytest.mark.parametrize(("value", "stored"), VALID_TIMESTAMPS)
def test_timestamp_accepts_what_ts_accepts_as_canonical_utc(value, stored):
    assert optional("shipped_at", value) == stored


@pytest.mark.parametrize("value", ["2025-01-15", "20250115T123000Z", "2025-01-15T12:30:00+0200", "soon", 1736944200])
def test_timestamp_refuses(value):
    code, detail = refused(order(shipped_at=value))
    assert code == "invalid_shipped_at"
    assert detail.startswith("shipped_at ")


def test_a_payload_timestamp_may_be_in_the_future_the_version_may_not():
    assert optional("shipped_at", "2999-01-01T00:00:00") == "2999-01-01T00:00:00"
    assert refused(order(updated_at="2999-01-01T00:00:00")) == (
        "future_timestamp", f"updated_at 2999-01-01T00:00:00 is later than now plus the tolerance ({LATEST})",
    )


@pytest.mark.parametrize(("value", "stored"), [
    ({"z": 1, "a": [1, 2.5, None, True]}, '{"z":1,"a":[1,2.5,null,true]}'),
    ([[[]]], "[[[]]]"),
    ("text", '"text"'),
    ("", '""'),  # a JSON string, even an empty one, is a value: only absent or null is missing
    ("  ", '"  "'),
    (0, "0"),
    (False, "false"),
    ({"nul": "a\u0000b"}, '{"nul":"a\\u0000b"}'),
])
def test_json_keeps_any_value_as_compact_text(value, stored):
    assert optional("extra", value) == stored
    assert json.loads(stored) == value


def test_json_keeps_deep_values():
    deep = value = []
    for _ in range(2000):
        value.append([])
        value = value[0]
    assert optional("extra", deep) == "[" * 2001 + "]" * 2001


def test_a_required_json_field_is_missing_only_when_absent_or_null():
    shape = Shape("id", "ts", (Field("doc", "json", required=True),))
    validate = compile_validator(shape).validate
    assert outcome(validate, {"id": "a", "ts": TS}) == ("missing_doc", "doc is missing")
    assert outcome(validate, {"id": "a", "doc": None, "ts": TS}) == ("missing_doc", "doc is null")
    assert outcome(validate, {"id": "a", "doc": "", "ts": TS}) == ("a", '""', "2025-01-15T12:00:00")


@pytest.mark.parametrize(("record", "code", "detail"), [
    ("text", "not_an_object", "the record is a string, not a JSON object"),
    ([1], "not_an_object", "the record is an array, not a JSON object"),
    ({"customer": 5, "total": "x", "updated_at": "bad"}, "missing_key", "order_id is missing"),
    (order(order_id=7, customer=None), "invalid_key", "order_id 7 is not a string"),
    (order(order_id="k" * 257), "invalid_key", "order_id is 257 characters long; at most 256 are allowed"),
    (order(customer="  ", total="x", updated_at="bad"), "missing_customer", "customer is empty"),
    (order(customer=5, total=None), "invalid_customer", "customer 5 is not a string"),
    (order(total=None, items=3.5), "missing_total", "total is missing"),
    (order(total="x", items=3.5), "invalid_total", "total 'x' is not a number"),
    (order(items=3.5, paid="no"), "invalid_items", "items 3.5 is not an integer"),
    (order(paid="no", shipped_at="never"), "invalid_paid", "paid 'no' is not a boolean (JSON true or false)"),
    (order(shipped_at="never", updated_at=None),
     "invalid_shipped_at", "shipped_at 'never' is not a timestamp like 2025-01-15T12:30:00Z"),
    (order(updated_at=None), "missing_timestamp", "updated_at is missing"),
    (order(updated_at=""), "missing_timestamp", "updated_at is empty"),
    (order(updated_at=20250115), "invalid_timestamp", "updated_at 20250115 is not a string"),
    (order(updated_at="2025-02-30T00:00:00"),
     "invalid_timestamp", "updated_at '2025-02-30T00:00:00' is not a timestamp like 2025-01-15T12:30:00Z"),
])
def test_the_first_failing_rule_wins_key_then_fields_in_order_then_version(record, code, detail):
    assert refused(record) == (code, detail)


def test_codes_fit_a_field_name_of_63_characters():
    name = "f" * 63
    validate = compile_validator(Shape("id", "ts", (Field(name, "integer", required=True),))).validate
    code, _ = outcome(validate, {"id": "a", name: "x", "ts": TS})
    assert code == "invalid_" + name and len(code) == 71


def test_version_of_and_usable_key():
    v = ORDERS_VALIDATOR
    assert v.version_of(order(updated_at=" 2025-01-15T13:00:00+01:00 ")) == "2025-01-15T12:00:00"
    assert v.version_of(order(updated_at="bad")) is None
    assert v.version_of(order(updated_at=None)) is None
    assert v.version_of(["not", "a", "record"]) is None
    assert v.usable_key(order(order_id=" o-9 ", total="x")) == "o-9"
    assert v.usable_key(order(order_id="")) is None
    assert v.usable_key(order(order_id=9)) is None
    assert v.usable_key("text") is None


def test_the_validator_is_compiled_once_per_shape():
    assert compile_validator(parse_shape(ORDERS.to_dict())) is ORDERS_VALIDATOR


def test_a_shape_built_by_hand_must_meet_the_rules():
    with pytest.raises(ShapeError, match="fields\\[0\\].type: 'float' is not one of"):
        compile_validator(Shape("id", "ts", (Field("x", "float"),)))
    with pytest.raises(ShapeError, match="is not a valid field name"):
        compile_validator(Shape("id", "ts", (Field("x'); import os; ('", "json"),)))


# --- events: exactly today's rules -------------------------------------------------------------

def _events_inputs():
    """A wide set of records: every invalid one of test_validation, valid variants, the seed's sample."""
    base = {"key": "k", "name": "n", "value": 1, "ts": "2025-01-15T12:00:00"}
    records = [r for cases in INVALID.values() for r in cases]
    records += [{**base, "value": v} for v, _ in VALID_VALUES]
    records += [{**base, "ts": t} for t, _ in VALID_TIMESTAMPS]
    records += json.loads(SAMPLE_INPUT.read_text())
    records += [
        {**base, "name": "Zoë"}, {**base, "key": " ünï "}, {**base, "value": 10**400}, {**base, "value": 2**64},
        {**base, "value": 1e308}, {**base, "value": -0.0}, {**base, "name": "n" * 1024}, {**base, "key": "k" * 256},
        {**base, "extra": [1, 2]}, {"ts": "2025-01-15T12:00:00"}, {}, {**base, "ts": "2030-01-01T00:00:00"},
        {**base, "ts": "2030-01-01T00:00:00.000001"}, {**base, "name": "a\u0000"}, {**base, "key": "\ud800x"},
        {**base, "value": float("inf")}, {**base, "value": float("nan")}, {**base, "value": " 1e3 "},
    ]
    return records


def test_the_events_validator_is_todays_validate():
    validator = compile_validator(EVENTS_SHAPE)
    assert validator.validate is rules.validate
    for record in _events_inputs():
        assert outcome(validator.validate, record) == outcome(rules.validate, record)
        assert validator.version_of(record) == rules.ts_of(record) if isinstance(record, dict) else True
        assert validator.usable_key(record) == rules.usable_key(record)


def test_a_generated_validator_of_the_events_fields_gives_todays_results():
    # The same fields with other options: the generated fast and slow paths, not validate.validate.
    twin = replace(EVENTS_SHAPE, fields=tuple(replace(f, sortable=False, searchable=False) for f in EVENTS_SHAPE.fields))
    validator = compile_validator(twin)
    assert validator.validate is not rules.validate
    for record in _events_inputs():
        assert outcome(validator.validate, record) == outcome(rules.validate, record), record
        assert validator.usable_key(record) == rules.usable_key(record)


# --- describe_update --------------------------------------------------------------------------

def test_describe_update_for_events_is_todays_detail():
    cases = [
        (("a", 1.0, "2025-01-01T00:00:00"), ("b", 2.0, "2025-01-02T00:00:00")),
        (("a", 1.5, "2025-01-01T00:00:00"), ("a", 1.5, "2025-01-02T00:00:00")),
        (("it's", 1e20, "t"), ("it's", 0.1, "t")),
    ]
    for old, new in cases:
        assert describe_update(EVENTS_SHAPE, old, new) == update_detail(old[0], new[0], old[1], new[1], old[2], new[2])
    assert describe_update(EVENTS_SHAPE, *cases[0]) == (
        "name: 'a' → 'b'; value: 1 → 2; ts: 2025-01-01T00:00:00 → 2025-01-02T00:00:00"
    )


def test_describe_update_formats_each_value_by_its_type():
    old = ("Ada", 12.0, 3, True, None, '{"a":1}', "2025-01-01T00:00:00")
    new = ("Ada L.", 12.5, 4, False, "2025-01-03T00:00:00", None, "2025-01-02T00:00:00")
    assert describe_update(ORDERS, old, new) == (
        "customer: 'Ada' → 'Ada L.'; total: 12 → 12.5; items: 3 → 4; paid: true → false; "
        "shipped_at: null → 2025-01-03T00:00:00; extra: {\"a\":1} → null; "
        "updated_at: 2025-01-01T00:00:00 → 2025-01-02T00:00:00"
    )
    assert describe_update(ORDERS, old, old) == ""


def test_describe_update_cuts_long_values():
    old = ("a" * 5000, 1.0, None, None, None, None, "t")
    new = ("b" * 5000, 1.0, None, None, None, None, "t")
    detail = describe_update(ORDERS, old, new)
    assert detail == f"customer: '{'a' * 199}… → '{'b' * 199}…"
