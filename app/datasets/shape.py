"""A dataset's shape (SPEC §10): its key, version and payload fields, their plain JSON form and JSON Schema."""
import re
from dataclasses import dataclass
from functools import lru_cache

import orjson

from app.pipeline.validate import show

FIELD_TYPES = ("string", "number", "integer", "boolean", "timestamp", "json")
NAME_RE = r"^[a-z][a-z0-9_]{0,39}$"      # dataset names
FIELD_RE = r"^[a-z_][a-z0-9_]{0,62}$"    # field names
MAX_FIELDS = 100
DEFAULT_MAX_LENGTH = 1024
MAX_MAX_LENGTH = 1_048_576
KEY_MAX_LENGTH = 256
RESERVED = ("sluice_updated_at", "sluice_run_id")  # a new dataset table's own columns
# Names a later version of Sluice may give a table's own columns: refused now so no shape ever collides.
RESERVED_PREFIX = "sluice_"

_FIELD_NAME = "a lowercase letter or _, then up to 62 lowercase letters, digits or _"
_ALLOWED_FIELD_KEYS = ("name", "type", "required", "max_length", "sortable", "searchable")


class ShapeError(ValueError):
    """A shape (or a change of shape) is refused: the message says what is wrong and where."""


@dataclass(frozen=True)
class Field:
    """A payload field of a shape."""

    name: str
    type: str                      # one of FIELD_TYPES
    required: bool = False
    max_length: int | None = None  # strings only; DEFAULT_MAX_LENGTH when not given
    sortable: bool = False
    searchable: bool = False       # strings only

    def __post_init__(self):
        if self.type == "string" and self.max_length is None:
            object.__setattr__(self, "max_length", DEFAULT_MAX_LENGTH)

    def to_dict(self) -> dict:
        """The field's plain JSON form."""
        out = {"name": self.name, "type": self.type, "required": self.required}
        if self.type == "string":
            out["max_length"] = self.max_length
        out["sortable"] = self.sortable
        if self.type == "string":
            out["searchable"] = self.searchable
        return out


@dataclass(frozen=True)
class Shape:
    """A record shape: the key field (a string), the version field (a timestamp) and the payload fields."""

    key: str
    version: str
    fields: tuple[Field, ...] = ()

    def to_dict(self) -> dict:
        """The plain JSON form; parse_shape(shape.to_dict()) == shape."""
        return {"key": self.key, "version": self.version, "fields": [f.to_dict() for f in self.fields]}

    def field(self, name: str) -> Field | None:
        """The payload field of that name (never the key or version field), or None."""
        for f in self.fields:
            if f.name == name:
                return f
        return None

    @property
    def names(self) -> tuple[str, ...]:
        """Every field's name in staging order: key, payload fields, version."""
        return (self.key, *(f.name for f in self.fields), self.version)


EVENTS_SHAPE = Shape(
    key="key",
    version="ts",
    fields=(
        Field("name", "string", required=True, max_length=DEFAULT_MAX_LENGTH, sortable=True, searchable=True),
        Field("value", "number", required=True, sortable=True),
    ),
)

_NAME_SCHEMA = {"type": "string", "pattern": FIELD_RE}

SHAPE_JSON_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://sluice.invalid/shape.schema.json",
    "title": "Sluice dataset shape",
    "description": (
        "The record shape of a Sluice dataset (SPEC §10): a key field (a string of at most 256 "
        "characters, required: the upsert key), a version field (a timestamp, required: it drives the "
        "watermark, the stale rule and the in-run winner) and up to 100 payload fields, in order. "
        "Field names must be unique, and must not start with 'sluice_' (the table's own columns)."
    ),
    "type": "object",
    "required": ["key", "version", "fields"],
    "additionalProperties": False,
    "properties": {
        "key": {
            **_NAME_SCHEMA,
            "description": "The key field's name; its values are strings of at most 256 characters.",
        },
        "version": {
            **_NAME_SCHEMA,
            "description": "The version field's name; its values are timestamps (as `ts` in SPEC §1).",
        },
        "fields": {
            "type": "array",
            "maxItems": MAX_FIELDS,
            "description": "The payload fields, in order (their columns' order and their error codes' order).",
            "items": {"$ref": "#/$defs/field"},
        },
    },
    "$defs": {
        "field": {
            "type": "object",
            "required": ["name", "type"],
            "additionalProperties": False,
            "properties": {
                "name": {**_NAME_SCHEMA, "description": "The field's name in records and its column's name."},
                "type": {
                    "enum": list(FIELD_TYPES),
                    "description": (
                        "string: trimmed text; number: a JSON number or a decimal string (a double); "
                        "integer: a JSON integer or a string of one (64-bit); boolean: true or false; "
                        "timestamp: as `ts` in SPEC §1, kept as canonical UTC text; json: any JSON value, "
                        "kept as compact JSON text."
                    ),
                },
                "required": {
                    "type": "boolean",
                    "default": False,
                    "description": ("A record without a value for this field is rejected; "
                                    "an optional one is stored as NULL."),
                },
                "max_length": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_MAX_LENGTH,
                    "default": DEFAULT_MAX_LENGTH,
                    "description": "Strings only: the most characters a value may have after trimming.",
                },
                "sortable": {
                    "type": "boolean",
                    "default": False,
                    "description": "An index serves sorting the target table by this field.",
                },
                "searchable": {
                    "type": "boolean",
                    "default": False,
                    "description": "Strings only: an index serves prefix search on this field.",
                },
            },
            "allOf": [
                {
                    "if": {"required": ["type"],
                           "properties": {"type": {"enum": [t for t in FIELD_TYPES if t != "string"]}}},
                    "then": {
                        "properties": {"max_length": False, "searchable": {"const": False}},
                    },
                },
            ],
        },
    },
}

_TYPE_WORDS = {
    "object": "an object", "array": "an array", "string": "a string", "integer": "an integer",
    "boolean": "true or false",
}


@lru_cache(maxsize=1)
def _schema_validator():
    import jsonschema  # imported on first use: a command that never parses a shape does not pay for it

    return jsonschema.Draft202012Validator(SHAPE_JSON_SCHEMA)


def _place(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "shape"


def _what(value) -> str:
    return "null" if value is None else show(value)


def _schema_message(error, data) -> str:
    """A short message for one JSON Schema error, naming its place and never echoing much of the input."""
    place = _place(error.absolute_path)
    value = error.instance
    kind = error.validator
    if kind == "type":
        expected = error.validator_value
        return f"{place} must be {_TYPE_WORDS.get(expected, expected)}, not {_what(value)}"
    if kind == "required":
        missing = next(p for p in error.validator_value if p not in value)
        return f"{place}.{missing} is missing" if place != "shape" else f"{missing} is missing"
    if kind == "additionalProperties":
        allowed = error.schema.get("properties", {})
        extra = next(p for p in value if p not in allowed)
        return f"{place}: unknown property {show(extra)} (allowed: {', '.join(allowed)})"
    if kind == "enum":
        return f"{place}: {_what(value)} is not one of {', '.join(map(str, error.validator_value))}"
    if kind == "pattern":
        return f"{place}: {_what(value)} is not a valid field name ({_FIELD_NAME})"
    if kind in ("minimum", "maximum"):
        return f"{place} must be between 1 and {MAX_MAX_LENGTH:,}, not {_what(value)}"
    if kind == "maxItems":
        return f"{place}: {len(value)} fields; at most {MAX_FIELDS} are allowed"
    if "then" in error.absolute_schema_path:  # the strings-only options on a field of another type
        index = error.absolute_path[1]
        item = data["fields"][index]
        option = "max_length" if "max_length" in item else "searchable"
        return _strings_only(f"fields[{index}]", option, item)
    return f"{place}: {error.message[:60]}"


_RANK = {name: i for i, name in enumerate(("key", "version", "fields", *_ALLOWED_FIELD_KEYS))}


def _order(error):
    # The schema's order of places (key, version, fields[0].name, ...), so the first error named is
    # the first a reader meets.
    path = list(error.absolute_path)
    if "then" in error.absolute_schema_path and len(path) == 2:
        path.append("max_length")  # a refused max_length is reported at its field's place
    return tuple(p if isinstance(p, int) else _RANK.get(p, len(_RANK)) for p in path)


def _strings_only(place: str, option: str, item: dict) -> str:
    return f"{place}.{option} is only for strings, and {show(item.get('name'))} is {item.get('type')}"


def _check_name(name: str, place: str, seen: dict, role: str) -> None:
    if not re.fullmatch(FIELD_RE, name):  # the schema's pattern lets a trailing newline through
        raise ShapeError(f"{place}: {show(name)} is not a valid field name ({_FIELD_NAME})")
    if name in RESERVED or name.startswith(RESERVED_PREFIX):
        raise ShapeError(f"{place}: {show(name)} is reserved "
                         "(names starting with sluice_ are the table's own columns)")
    if name in seen:
        raise ShapeError(f"{place}: {show(name)} is already the name of {seen[name]}")
    seen[name] = role


def parse_shape(data) -> Shape:
    """Validate a shape's plain JSON form (a dict) and return the Shape; raise ShapeError naming the place."""
    if isinstance(data, Shape):
        return data
    try:
        text = orjson.dumps(data)
    except (TypeError, orjson.JSONEncodeError):
        return _parse(data)
    # The catalogue hands the same stored shapes over and over: their JSON text is the cache's key.
    return _parse_text(text)


@lru_cache(maxsize=256)
def _parse_text(text: bytes) -> Shape:
    return _parse(orjson.loads(text))


def _parse(data) -> Shape:
    errors = sorted(_schema_validator().iter_errors(data), key=_order)
    if errors:
        raise ShapeError(_schema_message(errors[0], data))
    seen: dict[str, str] = {}
    _check_name(data["key"], "key", seen, "the key field")
    _check_name(data["version"], "version", seen, "the version field")
    fields = []
    for i, item in enumerate(data["fields"]):
        _check_name(item["name"], f"fields[{i}].name", seen, f"fields[{i}]")
        type_ = item["type"]  # the schema has refused max_length and searchable on other types
        fields.append(Field(
            name=item["name"],
            type=type_,
            required=item.get("required", False),
            max_length=int(item.get("max_length", DEFAULT_MAX_LENGTH)) if type_ == "string" else None,
            sortable=item.get("sortable", False),
            searchable=item.get("searchable", False),
        ))
    return Shape(key=data["key"], version=data["version"], fields=tuple(fields))


# PostgreSQL's btree holds at most 2,704 bytes per entry: an indexed string (up to 4 bytes a
# character) plus the key (up to 1,024 bytes) fits when the string has at most 400 characters.
MAX_INDEXED_LENGTH = 400


def check_indexable(shape: Shape, before: Shape | None = None) -> None:
    """Refuse an index whose entries may not fit every database's btree (fields new or changed since `before`)."""
    unchanged = set(before.fields) if before else set()
    for i, f in enumerate(shape.fields):
        if f in unchanged:
            continue
        if f.type == "json" and f.sortable:
            raise ShapeError(f"fields[{i}].sortable: {show(f.name)} is json, which cannot be sorted by; "
                             "declare the values you sort by as fields of their own")
        if f.type == "string" and (f.sortable or f.searchable) and f.max_length > MAX_INDEXED_LENGTH:
            option = "sortable" if f.sortable else "searchable"
            raise ShapeError(f"fields[{i}]: a {option} string holds at most {MAX_INDEXED_LENGTH} characters "
                             f"(its index entries must fit), and {show(f.name)} has max_length {f.max_length:,}; "
                             f"set max_length to {MAX_INDEXED_LENGTH} or less")


_INSTEAD = ("To make such a change, create a new dataset with the new shape and load the data into it "
            "(this dataset and its history stay as they are).")


def _describe_new(f: Field) -> str:
    extras = [f.type]
    if f.type == "string":
        extras.append(f"max_length {f.max_length:,}")
    extras += [option for option in ("sortable", "searchable") if getattr(f, option)]
    return f"added optional field {f.name!r} ({', '.join(extras)})"


def _field_changes(old: Field, new: Field, allowed: list, refused: list) -> None:
    name = old.name
    if old.type != new.type:
        refused.append(f"{name!r} cannot change type from {old.type} to {new.type} "
                       "(the stored values are of the old type)")
        return
    if old.required != new.required:
        if new.required:
            refused.append(f"{name!r} cannot become required (rows already stored may have no value for it)")
        else:
            refused.append(f"{name!r} cannot become optional (a shape's rules only grow; readers rely on "
                           "it always having a value)")
    if old.max_length != new.max_length:
        if new.max_length > old.max_length:
            allowed.append(f"raised max_length of {name!r} from {old.max_length:,} to {new.max_length:,}")
        else:
            refused.append(f"max_length of {name!r} cannot be lowered from {old.max_length:,} to "
                           f"{new.max_length:,} (values already stored may be longer)")
    for option in ("sortable", "searchable"):
        before, after = getattr(old, option), getattr(new, option)
        if after and not before:
            allowed.append(f"made {name!r} {option}")
        elif before and not after:
            refused.append(f"{name!r} cannot stop being {option} (its index, once built, stays)")


def check_evolution(old: Shape, new: Shape) -> list[str]:
    """The changes from `old` to `new`, one line each; raise ShapeError saying why for any refused one."""
    allowed: list[str] = []
    refused: list[str] = []
    if old.key != new.key:
        refused.append(f"the key field cannot change from {old.key!r} to {new.key!r} "
                       "(every stored row and its lineage are keyed by it)")
    if old.version != new.version:
        refused.append(f"the version field cannot change from {old.version!r} to {new.version!r} "
                       "(the watermark and the stored versions come from it)")
    new_names = [f.name for f in new.fields]
    old_names = [f.name for f in old.fields]
    gone = [n for n in old_names if n not in new_names]
    if gone:
        if len(gone) == 1:
            refused.append(f"field {gone[0]!r} cannot be removed or renamed (its column holds data)")
        else:
            refused.append(f"fields {', '.join(map(repr, gone))} cannot be removed or renamed "
                           "(their columns hold data)")
    kept = [n for n in new_names if n in old_names]
    if not gone and kept != old_names:
        refused.append("fields cannot be reordered (their order is the columns' and the error codes' order)")
    elif not gone and new_names[:len(old_names)] != old_names:
        first = next(n for n in new_names if n not in old_names)
        refused.append(f"new field {first!r} must come after the existing fields (a field is added at the end)")
    for f in old.fields:
        g = new.field(f.name)
        if g is not None:
            _field_changes(f, g, allowed, refused)
    for f in new.fields:
        if f.name in old_names:
            continue
        if f.required:
            refused.append(f"new field {f.name!r} must be optional (rows already stored have no value for it): "
                           "add it with \"required\": false")
        else:
            allowed.append(_describe_new(f))
    if refused:
        raise ShapeError("refused: " + "; ".join(refused) + ". " + _INSTEAD)
    return allowed
