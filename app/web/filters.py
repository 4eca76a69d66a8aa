"""The filters of the target, dead-letter and run views: one parser each, used by the pages and the API.

Each view is a marshmallow schema. The API loads it strictly (a bad value answers 400); a page loads it
leniently (a bad value is dropped, so a hand-edited link shows the unfiltered view instead of an error).
Both trim the whitespace around a key or name prefix, as keys are stored trimmed, and treat an empty
prefix as no filter.
"""
import re

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate

from .. import queries

MAX_ID = 2 ** 63 - 1
# No NUL (no key or name holds one, PostgreSQL text cannot) and no lone surrogate (not UTF-8).
# The document says no NUL; lone surrogates (`"\ud800"` in JSON) are refused too, but a pattern naming
# them breaks the regex engines of OpenAPI tools (they are not UTF-8).
TEXT_PATTERN = "^[^\x00]*$"
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
_INT = re.compile(r"[+-]?[0-9]{1,19}", re.ASCII)
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?", re.ASCII)


class Int(fields.Integer):
    """An integer: in JSON a number without fraction (`2.0` is 2, as JSON Schema says; never a boolean),
    in a query string ASCII digits only (`2.0`, `٣` and `²` are refused)."""

    def __init__(self, *, text: bool = False, **kwargs):
        super().__init__(strict=True, **kwargs)
        self.text = text

    def _deserialize(self, value, attr, data, **kwargs):
        if self.text and isinstance(value, str):
            if not _INT.fullmatch(value):
                raise self.make_error("invalid")
            value = int(value)
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class Flag(fields.Boolean):
    """A query-string boolean: exactly `true` or `false`."""

    def __init__(self, **kwargs):
        super().__init__(truthy={"true"}, falsy={"false"}, **kwargs)


class Rate(fields.Float):
    """A finite query-string number in ASCII (no `nan`, `inf` or Unicode digits)."""

    def __init__(self, **kwargs):
        super().__init__(allow_nan=False, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or not _NUMBER.fullmatch(value):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


def no_bad_text(value: str) -> None:
    """Refuse text the databases cannot store (NUL, lone surrogates)."""
    if _BAD_TEXT.search(value):
        raise ValidationError("must be UTF-8 text without NUL")


def text(max_length: int, **kwargs) -> fields.String:
    """A string field of at most `max_length` characters that the databases can store."""
    return fields.String(validate=[validate.Length(max=max_length), no_bad_text],
                         metadata={"pattern": TEXT_PATTERN, **kwargs.pop("metadata", {})}, **kwargs)


def _prefix(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


class TargetView(Schema):
    """The target view: key and name prefixes (trimmed; empty means all), sort column and direction."""

    class Meta:
        unknown = EXCLUDE

    key = text(256, metadata={"description": "Key prefix (surrounding whitespace ignored)."})
    name = text(1024, metadata={"description": "Name prefix (surrounding whitespace ignored)."})
    sort = fields.String(load_default="key", validate=validate.OneOf(list(queries.TARGET_SORTS)),
                         metadata={"description": "Sort column."})
    order = fields.String(load_default="asc", validate=validate.OneOf(["asc", "desc"]),
                          metadata={"description": "Sort direction."})

    @post_load
    def _view(self, data, **kwargs):
        view = {"key_prefix": _prefix(data.pop("key", None)), "name_prefix": _prefix(data.pop("name", None)),
                "sort": data.pop("sort"), "descending": data.pop("order") == "desc"}
        return {**data, "view": view}


class DeadLetterView(Schema):
    """The dead-letter view: error code, status and the run that first saw them."""

    class Meta:
        unknown = EXCLUDE

    error = fields.String(validate=validate.OneOf(list(queries.ERROR_CODES)),
                          metadata={"description": "Only this error code."})
    status = fields.String(validate=validate.OneOf(list(queries.DEAD_LETTER_STATUSES)),
                           metadata={"description": "Only this status."})
    run = Int(text=True, validate=validate.Range(1, MAX_ID),
              metadata={"description": "Only those first seen by this run."})

    @post_load
    def _view(self, data, **kwargs):
        view = {"error": data.pop("error", None), "status": data.pop("status", None),
                "run_id": data.pop("run", None)}
        return {**data, "view": view}


class RunsView(Schema):
    """The run history view: one status."""

    class Meta:
        unknown = EXCLUDE

    status = fields.String(validate=validate.OneOf(list(queries.RUN_STATUSES)),
                           metadata={"description": "Only runs in this status."})

    @post_load
    def _view(self, data, **kwargs):
        view = {"status": data.pop("status", None)}
        return {**data, "view": view}


def lenient(schema: type[Schema], args) -> dict:
    """A page's view: the fields of `args` that parse, the defaults for the others."""
    data = {k: v for k, v in dict(args).items() if v not in ("", None)}
    try:
        return schema().load(data)["view"]
    except ValidationError as exc:
        return schema().load({k: v for k, v in data.items() if k not in exc.messages})["view"]
