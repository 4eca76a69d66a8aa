"""A shape's record rules (SPEC §10), compiled once into one validating function per shape.

Each shape gets two paths, like app.pipeline.validate: a fast path generated as Python source that
accepts the plainly valid record with inline type tests, and a rule-by-rule slow path (one small
function per field) that alone decides every error code and detail. The `events` shape uses
app.pipeline.validate itself, so its results, codes, details and speed are exactly today's.
"""
import re
from functools import lru_cache

from app.formatting import number
from app.pipeline import validate as rules
from app.pipeline.jsontext import dumps
from app.pipeline.validate import (
    Invalid,
    check_not_future,
    check_number,
    check_text,
    check_timestamp,
    missing_detail,
    not_an_object,
    parse_ts,
    show,
)

from .shape import EVENTS_SHAPE, KEY_MAX_LENGTH, Field, Shape, parse_shape

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)
_DETAIL_VALUE = 200  # characters of one value in an `updated` detail; longer ones are cut


class Validator:
    """The compiled rules of one shape: validate, version_of and usable_key."""

    def __init__(self, shape: Shape, validate, version_of, usable_key, source: str = ""):
        self.shape = shape
        # Plain functions stored on the instance: calling them costs no method binding per record.
        self.validate = validate
        self.version_of = version_of
        self.usable_key = usable_key
        self.source = source  # the generated fast path, for reading when in doubt

    def __repr__(self) -> str:
        shape = self.shape
        return f"<Validator key={shape.key!r} version={shape.version!r} fields={len(shape.fields)}>"


def check_integer(value, field: str, code: str) -> int:
    """A present value as a 64-bit signed integer (a JSON integer or a string of one), else Invalid(code)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise Invalid(code, f"{field} {show(value)} is not an integer")
    if isinstance(value, str):
        text = value.strip()
        if not _INTEGER.fullmatch(text):
            raise Invalid(code, f"{field} {show(value)} is not an integer")
        if len(text.lstrip("+-").lstrip("0")) > 19:  # never convert thousands of digits
            raise Invalid(code, f"{field} {show(value)} is outside the 64-bit integer range")
        result = int(text)
    else:
        result = int(value)
    if not INT_MIN <= result <= INT_MAX:
        raise Invalid(code, f"{field} {show(value)} is outside the 64-bit integer range")
    return result


def check_boolean(value, field: str, code: str) -> bool:
    """A present value as a bool (JSON true or false only), or raise Invalid(code)."""
    if value is True or value is False:
        return value
    raise Invalid(code, f"{field} {show(value)} is not a boolean (JSON true or false)")


def check_json(value, field: str, code: str) -> str:
    """Any JSON value as compact JSON text with keys in their order, or raise Invalid(code)."""
    try:
        return dumps(value)
    except (TypeError, ValueError):
        raise Invalid(code, f"{field} {show(value)} is not a JSON value") from None


def _payload_check(f: Field):
    """The slow-path rule of one payload field: record -> its value (None when missing and optional)."""
    name, required = f.name, f.required
    missing_code, invalid_code = f"missing_{name}", f"invalid_{name}"
    if f.type == "json":
        # A JSON value is kept as it is: only absent or null is missing ("" and "  " are JSON strings).
        def check(record):
            value = record.get(name)
            if value is None:
                if required:
                    raise Invalid(missing_code, f"{name} is null" if name in record else f"{name} is missing")
                return None
            return check_json(value, name, invalid_code)
        return check

    if f.type == "string":
        limit = f.max_length

        def convert(value):
            return check_text(value, name, limit, invalid_code)
    else:
        checker = {"number": check_number, "integer": check_integer, "boolean": check_boolean,
                   "timestamp": check_timestamp}[f.type]

        def convert(value):
            return checker(value, name, invalid_code)

    def check(record):
        detail = missing_detail(record, name)
        if detail is not None:
            if required:
                raise Invalid(missing_code, detail)
            return None
        return convert(record[name])
    return check


def _key_check(key: str):
    def check(record):
        detail = missing_detail(record, key)
        if detail is not None:
            raise Invalid("missing_key", detail)
        return check_text(record[key], key, KEY_MAX_LENGTH, "invalid_key")
    return check


def _version_check(version: str):
    def check(record, latest):
        detail = missing_detail(record, version)
        if detail is not None:
            raise Invalid("missing_timestamp", detail)
        return check_not_future(check_timestamp(record[version], version, "invalid_timestamp"), version, latest)
    return check


def _slow_path(shape: Shape):
    checks = (_key_check(shape.key), *(_payload_check(f) for f in shape.fields))
    version_check = _version_check(shape.version)

    def slow(record, latest):
        if not isinstance(record, dict):
            raise not_an_object(record)
        values = [check(record) for check in checks]
        values.append(version_check(record, latest))
        return tuple(values)
    return slow


# The fast path's source, per type: `v` is the value's variable, `n` the field's name as a literal.
# Each fragment accepts only what is plainly valid and `break`s to the slow path otherwise.
_TEXT_OK = "(not {v}.isascii() or '\\x00' in {v}) and bad({v})"
_FAST = {
    ("string", True): [
        "{v} = get({n})",
        "if type({v}) is not str: break",
        "{v} = {v}.strip()",
        "if not {v} or len({v}) > {limit} or " + _TEXT_OK + ": break",
    ],
    ("string", False): [
        "{v} = get({n})",
        "if {v} is not None:",
        "    if type({v}) is not str: break",
        "    {v} = {v}.strip()",
        "    if not {v}: {v} = None",
        "    elif len({v}) > {limit} or " + _TEXT_OK + ": break",
    ],
    ("number", True): [
        "{v} = get({n})",
        "if type({v}) is float:",
        "    if {v} - {v} != 0: break",
        "elif type({v}) is int and -1e308 < {v} < 1e308: {v} = float({v})",
        "else: break",
    ],
    ("number", False): [
        "{v} = get({n})",
        "if {v} is None: pass",
        "elif type({v}) is float:",
        "    if {v} - {v} != 0: break",
        "elif type({v}) is int and -1e308 < {v} < 1e308: {v} = float({v})",
        "else: break",
    ],
    ("integer", True): [
        "{v} = get({n})",
        "if type({v}) is not int or not " + f"{INT_MIN} <= {{v}} <= {INT_MAX}" + ": break",
    ],
    ("integer", False): [
        "{v} = get({n})",
        "if {v} is not None and (type({v}) is not int or not " + f"{INT_MIN} <= {{v}} <= {INT_MAX}" + "): break",
    ],
    ("boolean", True): [
        "{v} = get({n})",
        "if type({v}) is not bool: break",
    ],
    ("boolean", False): [
        "{v} = get({n})",
        "if {v} is not None and type({v}) is not bool: break",
    ],
    ("timestamp", True): [
        "{v} = get({n})",
        "if type({v}) is not str: break",
        "{v} = parse_ts({v}.strip())",
        "if {v} is None: break",
    ],
    ("timestamp", False): [
        "{v} = get({n})",
        "if {v} is not None:",
        "    if type({v}) is not str: break",
        "    {v} = parse_ts({v}.strip())",
        "    if {v} is None: break",
    ],
    ("json", True): [
        "{v} = get({n})",
        "if {v} is None: break",
        "{v} = dumps({v})",
    ],
    ("json", False): [
        "{v} = get({n})",
        "if {v} is not None: {v} = dumps({v})",
    ],
}


def _fast_source(shape: Shape) -> str:
    body = []
    key_field = Field(shape.key, "string", required=True, max_length=KEY_MAX_LENGTH)
    parts = [("k", key_field), *((f"v{i}", f) for i, f in enumerate(shape.fields))]
    for var, f in parts:
        for line in _FAST[(f.type, f.required)]:
            body.append(line.format(v=var, n=repr(f.name), limit=f.max_length))
    body += [
        f"t = get({shape.version!r})",
        "if type(t) is not str: break",
        "t = parse_ts(t.strip())",
        "if t is None or t > latest: break",
        "return (" + "".join(f"{var}, " for var, _ in parts) + "t)",
    ]
    return "\n".join([
        "def validate(record, latest):",
        "    if type(record) is dict:",
        "        get = record.get",
        "        while True:",
        *("            " + line for line in body),
        "    return slow(record, latest)",
    ]) + "\n"


@lru_cache(maxsize=128)
def compile_validator(shape: Shape) -> Validator:
    """The validator of a shape, built once per shape (cached); ShapeError for a shape that breaks the rules."""
    if shape == EVENTS_SHAPE:
        return Validator(shape, rules.validate, rules.ts_of, rules.usable_key)
    parse_shape(shape.to_dict())  # a Shape built by hand meets the rules too (ShapeError otherwise)
    slow = _slow_path(shape)
    source = _fast_source(shape)
    # Generated code rather than a loop over the fields: the fast path then costs per record what
    # hand-written checks would, with nothing read from the shape at run time. The names in it come
    # from a validated shape and are written as Python literals.
    namespace = {"slow": slow, "parse_ts": parse_ts, "bad": rules.find_bad_char, "dumps": dumps}
    exec(compile(source, f"<validator of shape key={shape.key}>", "exec"), namespace)  # noqa: S102
    key_check = _key_check(shape.key)
    version = shape.version

    def version_of(record) -> str | None:
        value = record.get(version) if isinstance(record, dict) else None
        return parse_ts(value.strip()) if isinstance(value, str) else None

    def usable_key(record) -> str | None:
        if not isinstance(record, dict):
            return None
        try:
            return key_check(record)
        except Invalid:
            return None

    return Validator(shape, namespace["validate"], version_of, usable_key, source)


def _cut(text: str) -> str:
    return text if len(text) <= _DETAIL_VALUE else text[:_DETAIL_VALUE] + "…"


def _detail_value(type_: str, value) -> str:
    if value is None:
        return "null"
    if type_ == "string":
        return _cut(repr(value))
    if type_ == "number":
        return number(value)
    if type_ == "boolean":
        return "true" if value else "false"
    if type_ == "json":
        return _cut(value)
    return str(value)


def describe_update(shape: Shape, old: tuple, new: tuple) -> str:
    """The `updated` lineage detail: each changed field of (payload..., version) as 'name: old → new'."""
    if shape is EVENTS_SHAPE or shape == EVENTS_SHAPE:
        # Imported here: the pipeline's load module imports this one, and a validator needs no database.
        from app.pipeline.load import update_detail

        return update_detail(old[0], new[0], old[1], new[1], old[2], new[2])
    types = (*((f.name, f.type) for f in shape.fields), (shape.version, "timestamp"))
    return "; ".join(
        f"{name}: {_detail_value(type_, a)} → {_detail_value(type_, b)}"
        for (name, type_), a, b in zip(types, old, new, strict=True)
        if a != b
    )
