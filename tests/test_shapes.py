"""Shapes (SPEC §10): the plain JSON form, its JSON Schema, parse errors that name the place, evolution."""
import json

import jsonschema
import pytest

from app.datasets.shape import (
    DEFAULT_MAX_LENGTH,
    EVENTS_SHAPE,
    SHAPE_JSON_SCHEMA,
    Field,
    Shape,
    ShapeError,
    check_evolution,
    parse_shape,
)

ORDERS = {
    "key": "order_id",
    "version": "updated_at",
    "fields": [
        {"name": "customer", "type": "string", "required": True, "max_length": 200, "sortable": True,
         "searchable": True},
        {"name": "total", "type": "number", "required": True, "sortable": True},
        {"name": "tags", "type": "json"},
    ],
}
NOT_A_NAME = "key: {} is not a valid field name (a lowercase letter or _, then up to 62 lowercase letters, digits or _)"


def shape(*fields, key="id", version="ts"):
    return {"key": key, "version": version, "fields": list(fields)}


def error(data) -> str:
    with pytest.raises(ShapeError) as exc:
        parse_shape(data)
    return str(exc.value)


def test_parse_fills_the_defaults():
    parsed = parse_shape(ORDERS)
    assert parsed == Shape("order_id", "updated_at", (
        Field("customer", "string", required=True, max_length=200, sortable=True, searchable=True),
        Field("total", "number", required=True, sortable=True),
        Field("tags", "json"),
    ))
    assert parse_shape(shape({"name": "note", "type": "string"})).fields[0].max_length == DEFAULT_MAX_LENGTH
    assert Field("note", "string") == Field("note", "string", max_length=DEFAULT_MAX_LENGTH)
    assert parsed.field("total").type == "number"
    assert parsed.field("order_id") is None  # the key and version are not payload fields
    assert parsed.names == ("order_id", "customer", "total", "tags", "updated_at")


def test_to_dict_round_trips_and_is_plain_json():
    parsed = parse_shape(ORDERS)
    assert parse_shape(json.loads(json.dumps(parsed.to_dict()))) == parsed
    assert parse_shape(EVENTS_SHAPE.to_dict()) == EVENTS_SHAPE
    assert parsed.to_dict()["fields"][2] == {"name": "tags", "type": "json", "required": False, "sortable": False}


def test_the_events_shape_is_the_seeds_record():
    assert EVENTS_SHAPE.to_dict() == {
        "key": "key",
        "version": "ts",
        "fields": [
            {"name": "name", "type": "string", "required": True, "max_length": 1024, "sortable": True,
             "searchable": True},
            {"name": "value", "type": "number", "required": True, "sortable": True},
        ],
    }


def test_a_shape_may_have_no_payload_fields_and_up_to_100():
    assert parse_shape(shape()).fields == ()
    hundred = shape(*({"name": f"f{i}", "type": "integer"} for i in range(100)))
    assert len(parse_shape(hundred).fields) == 100
    hundred["fields"].append({"name": "f100", "type": "integer"})
    assert error(hundred) == "fields: 101 fields; at most 100 are allowed"


@pytest.mark.parametrize(("data", "message"), [
    ("text", "shape must be an object, not 'text'"),
    ([], "shape must be an object, not an array"),
    ({"version": "ts", "fields": []}, "key is missing"),
    ({"key": "id", "fields": []}, "version is missing"),
    ({"key": "id", "version": "ts"}, "fields is missing"),
    ({**shape(), "colour": "red"}, "shape: unknown property 'colour' (allowed: key, version, fields)"),
    (shape(key=7), "key must be a string, not 7"),
    (shape(key="Order Id"), NOT_A_NAME.format("'Order Id'")),
    (shape(key="id\n"), NOT_A_NAME.format("'id\\n'")),
    ({"key": "id", "version": "ts", "fields": {}}, "fields must be an array, not an object"),
    (shape("customer"), "fields[0] must be an object, not 'customer'"),
    (shape({"type": "string"}), "fields[0].name is missing"),
    (shape({"name": "a"}), "fields[0].type is missing"),
    (shape({"name": "a", "type": "string"}, {"name": "b", "type": "string"}, {"name": "c", "type": "float"}),
     "fields[2].type: 'float' is not one of string, number, integer, boolean, timestamp, json"),
    (shape({"name": "a", "type": "string", "required": "yes"}), "fields[0].required must be true or false, not 'yes'"),
    (shape({"name": "a", "type": "string", "sortable": 1}), "fields[0].sortable must be true or false, not 1"),
    (shape({"name": "a", "type": "string", "max_length": 0}),
     "fields[0].max_length must be between 1 and 1,048,576, not 0"),
    (shape({"name": "a", "type": "string", "max_length": 1_048_577}),
     "fields[0].max_length must be between 1 and 1,048,576, not 1048577"),
    (shape({"name": "a", "type": "string", "max_length": "long"}),
     "fields[0].max_length must be an integer, not 'long'"),
    (shape({"name": "a", "type": "string", "colour": 1}),
     "fields[0]: unknown property 'colour' (allowed: name, type, required, max_length, sortable, searchable)"),
    (shape({"name": "n", "type": "number", "max_length": 10}),
     "fields[0].max_length is only for strings, and 'n' is number"),
    (shape({"name": "n", "type": "integer", "searchable": True}),
     "fields[0].searchable is only for strings, and 'n' is integer"),
    (shape({"name": "a", "type": "string"}, {"name": "a", "type": "json"}),
     "fields[1].name: 'a' is already the name of fields[0]"),
    (shape({"name": "id", "type": "string"}), "fields[0].name: 'id' is already the name of the key field"),
    (shape({"name": "ts", "type": "timestamp"}), "fields[0].name: 'ts' is already the name of the version field"),
    (shape(key="id", version="id"), "version: 'id' is already the name of the key field"),
    (shape({"name": "sluice_run_id", "type": "integer"}),
     "fields[0].name: 'sluice_run_id' is reserved (names starting with sluice_ are the table's own columns)"),
    (shape(version="sluice_updated_at"),
     "version: 'sluice_updated_at' is reserved (names starting with sluice_ are the table's own columns)"),
])
def test_parse_errors_name_the_place(data, message):
    assert error(data) == message


def test_the_first_error_in_the_shapes_order_is_named():
    data = {"fields": [{"name": "a", "type": "float"}], "version": 3, "key": "ok"}
    assert error(data) == "version must be a string, not 3"
    data = shape({"name": "a", "type": "string"}, {"name": "B", "type": "string"}, {"name": "c", "type": "x"})
    assert error(data).startswith("fields[1].name: 'B' is not a valid field name")
    data = shape({"name": "N", "type": "integer", "max_length": 3})
    assert error(data).startswith("fields[0].name: 'N' is not a valid field name")
    data = shape({"name": "n", "type": "float", "max_length": 3})
    assert error(data).startswith("fields[0].type: 'float' is not one of")
    data = shape({"name": "n", "max_length": 3})
    assert error(data) == "fields[0].type is missing"


def test_errors_never_echo_much_of_the_input():
    long_name = "Q" * 10_000
    for data in (shape(key=long_name), shape({"name": long_name, "type": "string"}),
                 shape({"name": "a", "type": long_name}), {**shape(), long_name: 1},
                 shape({"name": "a", "type": long_name, "max_length": 3}),
                 shape({"name": long_name.lower(), "type": "integer", "max_length": 3})):
        assert len(error(data)) < 200


def test_a_field_name_may_be_63_characters_not_64():
    assert parse_shape(shape({"name": "a" * 63, "type": "json"})).fields[0].name == "a" * 63
    assert "is not a valid field name" in error(shape({"name": "a" * 64, "type": "json"}))


# --- the JSON Schema --------------------------------------------------------------------------

def test_the_json_schema_is_a_valid_2020_12_schema():
    assert SHAPE_JSON_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SHAPE_JSON_SCHEMA["$id"].endswith("shape.schema.json")
    assert SHAPE_JSON_SCHEMA["title"] and SHAPE_JSON_SCHEMA["description"]
    jsonschema.Draft202012Validator.check_schema(SHAPE_JSON_SCHEMA)
    json.dumps(SHAPE_JSON_SCHEMA)  # published as it is


def test_the_json_schema_accepts_the_shapes_sluice_writes():
    validator = jsonschema.Draft202012Validator(SHAPE_JSON_SCHEMA)
    for data in (EVENTS_SHAPE.to_dict(), parse_shape(ORDERS).to_dict(), ORDERS, shape()):
        assert list(validator.iter_errors(data)) == []


@pytest.mark.parametrize("data", [
    {"key": "id", "version": "ts"},
    shape({"name": "a", "type": "float"}),
    shape({"name": "n", "type": "number", "max_length": 10}),
    shape({"name": "n", "type": "boolean", "searchable": True}),
    shape({"name": "Bad", "type": "string"}),
    shape({"name": "a", "type": "string", "max_length": 2_000_000}),
    shape(*({"name": f"f{i}", "type": "json"} for i in range(101))),
    {**shape(), "extra": True},
])
def test_the_json_schema_refuses_bad_shapes(data):
    assert not jsonschema.Draft202012Validator(SHAPE_JSON_SCHEMA).is_valid(data)


# --- evolution ---------------------------------------------------------------------------------

OLD = parse_shape(shape(
    {"name": "a", "type": "string", "max_length": 100},
    {"name": "b", "type": "number", "required": True},
))


def evolve(*fields, key="id", version="ts"):
    return check_evolution(OLD, parse_shape(shape(*fields, key=key, version=version)))


def refusal(*fields, key="id", version="ts") -> str:
    with pytest.raises(ShapeError) as exc:
        evolve(*fields, key=key, version=version)
    message = str(exc.value)
    assert message.startswith("refused: ")
    assert "create a new dataset with the new shape and load the data into it" in message
    return message


A = {"name": "a", "type": "string", "max_length": 100}
B = {"name": "b", "type": "number", "required": True}


def test_no_change_is_no_change():
    assert evolve(A, B) == []
    assert check_evolution(EVENTS_SHAPE, EVENTS_SHAPE) == []


def test_the_allowed_changes_are_described_one_per_line():
    assert evolve(
        {**A, "max_length": 500, "sortable": True, "searchable": True},
        {**B, "sortable": True},
        {"name": "note", "type": "string"},
        {"name": "n", "type": "integer", "sortable": True},
        {"name": "doc", "type": "json"},
    ) == [
        "raised max_length of 'a' from 100 to 500",
        "made 'a' sortable",
        "made 'a' searchable",
        "made 'b' sortable",
        "added optional field 'note' (string, max_length 1,024)",
        "added optional field 'n' (integer, sortable)",
        "added optional field 'doc' (json)",
    ]


@pytest.mark.parametrize(("fields", "kwargs", "why"), [
    ((A,), {}, "field 'b' cannot be removed or renamed (its column holds data)"),
    (({**A, "name": "a2"}, B), {}, "field 'a' cannot be removed or renamed (its column holds data)"),
    ((B, A), {}, "fields cannot be reordered"),
    (({"name": "c", "type": "json"}, A, B), {}, "new field 'c' must come after the existing fields"),
    (({"name": "a", "type": "json"}, B), {}, "'a' cannot change type from string to json"),
    ((A, {**B, "type": "integer"}), {}, "'b' cannot change type from number to integer"),
    (({**A, "required": True}, B), {}, "'a' cannot become required"),
    ((A, {**B, "required": False}), {}, "'b' cannot become optional"),
    (({**A, "max_length": 99}, B), {}, "max_length of 'a' cannot be lowered from 100 to 99"),
    ((A, B, {"name": "c", "type": "json", "required": True}), {},
     "new field 'c' must be optional (rows already stored have no value for it)"),
    ((A, B), {"key": "id2"}, "the key field cannot change from 'id' to 'id2'"),
    ((A, B), {"version": "changed_at"}, "the version field cannot change from 'ts' to 'changed_at'"),
])
def test_refused_changes_say_why_and_what_to_do(fields, kwargs, why):
    assert why in refusal(*fields, **kwargs)


def test_an_index_once_built_stays():
    sortable = check_evolution(OLD, parse_shape(shape({**A, "searchable": True}, {**B, "sortable": True})))
    assert sortable == ["made 'a' searchable", "made 'b' sortable"]
    indexed = parse_shape(shape({**A, "searchable": True}, {**B, "sortable": True}))
    with pytest.raises(ShapeError, match="'a' cannot stop being searchable.*'b' cannot stop being sortable"):
        check_evolution(indexed, OLD)


def test_every_refusal_is_named_at_once():
    message = refusal({**A, "max_length": 10}, {**B, "type": "string"}, key="k")
    assert "key field" in message and "lowered" in message and "change type" in message
