"""The filters of the target, dead-letter and run views: one parser each, used by the pages and the API.

Each view is a marshmallow schema of one dataset (`dataset`, default events), checked against its
shape: its sorts, searchable fields and error codes. A name that is no dataset raises UnknownDataset
(a werkzeug NotFound) out of `load`: a 404 page, and a 404 in the API (`unknown_dataset` once it says so). The API loads it strictly (a bad value answers 400); a page loads it
leniently (a bad value is dropped, so a hand-edited link shows the unfiltered view instead of an error).
Both trim the whitespace around a key or name prefix, as keys are stored trimmed, and treat an empty
prefix as no filter.
"""
import re
from typing import ClassVar

from flask import g, has_app_context
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, pre_load, validate
from werkzeug.exceptions import NotFound

from .. import queries
from ..datasets.registry import DEFAULT, Dataset, DatasetError, get_dataset
from ..datasets.shape import FIELD_RE, NAME_RE
from ..extensions import db
from ..pipeline.run import KINDS

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


# `search[FIELD]=PREFIX` in a query string (OpenAPI's deepObject style): a prefix per searchable field.
SEARCH_PARAM = re.compile(r"search\[([a-z_][a-z0-9_]{0,62})\]")


def _malformed_search(name: str) -> bool:
    return "[" in name and not SEARCH_PARAM.fullmatch(name)


def search_param(field: str) -> str:
    """The query-string name of the prefix search on `field`."""
    return f"search[{field}]"


class UnknownDataset(NotFound):
    """A view names no dataset: an HTTP 404 wherever it goes up (the API may answer it as `unknown_dataset`)."""

    def __init__(self, name: str):
        super().__init__(f"There is no dataset {name[:100]!r}.")
        self.dataset = name


def current_dataset(name: str | None) -> Dataset:
    """The dataset a view names (None: events): the request's own when it is that one, else looked up.

    Raises UnknownDataset (a 404) for a name that is no dataset (also one that could never be one).
    """
    name = name or DEFAULT
    known = g.get("dataset") if has_app_context() else None
    if known is not None and known.name == name:
        return known
    if not isinstance(name, str) or not re.fullmatch(NAME_RE, name):
        raise UnknownDataset(str(name))
    try:
        with db.engine.connect() as conn:
            return get_dataset(conn, name)
    except DatasetError:
        raise UnknownDataset(name) from None


def dataset_field(**kwargs) -> fields.String:
    """The `dataset` query parameter: a dataset's name; absent means events."""
    return fields.String(load_default=DEFAULT, metadata={
        "description": "The dataset (default `events`); an unknown one answers 404 `unknown_dataset`.",
        "pattern": NAME_RE}, **kwargs)


class TargetView(Schema):
    """The target view of a dataset: prefix searches (trimmed; empty means all), sort and direction.

    `key` is the key field's prefix and `name` the `name` field's (events' two searches, kept for
    every URL of today); `search[FIELD]` is any searchable field's. Sort and searches are checked
    against the dataset's shape: each sortable field's name is a sort, besides `key`, the version
    field's name and `updated`.
    """

    class Meta:
        unknown = EXCLUDE

    dataset = dataset_field()
    key = text(256, metadata={"description": "Key prefix (surrounding whitespace ignored)."})
    name = text(1024, metadata={"description": "Prefix of the `name` field (events; surrounding whitespace "
                                               "ignored)."})
    search = fields.Dict(keys=fields.String(validate=validate.Regexp(FIELD_RE)),
                         values=text(1024), metadata={
                             "description": "`search[FIELD]=PREFIX`: a prefix of the key field or of a searchable "
                                            "field (surrounding whitespace ignored).",
                             "style": "deepObject", "explode": True})
    sort = fields.String(load_default="key", validate=validate.Regexp(FIELD_RE),
                         metadata={"description": "Sort: `key`, the version field, a sortable field, or `updated`."})
    order = fields.String(load_default="asc", validate=validate.OneOf(["asc", "desc"]),
                          metadata={"description": "Sort direction."})

    @pre_load
    def _gather_search(self, data, **kwargs):
        data = {k: data[k] for k in data}
        search = {m.group(1): v for k, v in data.items() if (m := SEARCH_PARAM.fullmatch(k))}
        # A bracketed name that is no `search[FIELD]` (`search[a][b]`, `x[y]`) is a malformed search:
        # refused with the search's error, never silently ignored.
        search.update({k: v for k, v in data.items() if _malformed_search(k)})
        if search:
            data["search"] = search
        return data

    @post_load
    def _view(self, data, **kwargs):
        ds = current_dataset(data.pop("dataset"))
        search = {f: p for f, v in (data.pop("search", None) or {}).items() if (p := _prefix(v))}
        key, name = _prefix(data.pop("key", None)), _prefix(data.pop("name", None))
        sort, descending = data.pop("sort"), data.pop("order") == "desc"
        errors = {}
        if sort not in queries.target_sorts(ds):
            errors["sort"] = [f"{ds.name} sorts by {', '.join(queries.target_sorts(ds))}"]
        searchable = queries.searchable_fields(ds)
        for field in search:
            if field not in searchable:
                errors[search_param(field)] = [(f"{field!r} is not searchable in {ds.name}: search by "
                                               f"{', '.join(searchable)}")]
        if name and "name" not in searchable:
            errors["name"] = [f"{ds.name} has no searchable field 'name'"]
        if errors:
            raise ValidationError(errors)
        if key:
            search[ds.shape.key] = key
        if name:
            search["name"] = name
        view = {"dataset": ds, "search": search, "sort": sort, "descending": descending}
        return {**data, "view": view}


_ERROR_CODE = re.compile(r"^[a-z_][a-z0-9_]{0,79}$")


class DeadLetterView(Schema):
    """The dead-letter view of a dataset: error code (one of the dataset's), status, the run that first saw them,
    text searched (`q`) and key prefix."""

    class Meta:
        unknown = EXCLUDE

    dataset = dataset_field()
    error = fields.String(validate=validate.Regexp(_ERROR_CODE.pattern),
                          metadata={"description": "Only this error code (one of the dataset's)."})
    status = fields.String(validate=validate.OneOf(list(queries.DEAD_LETTER_STATUSES)),
                           metadata={"description": "Only this status."})
    run = Int(text=True, validate=validate.Range(1, MAX_ID),
              metadata={"description": "Only those first seen by this run."})
    key = text(256, metadata={"description": "Only those whose key starts with this prefix (surrounding "
                                             "whitespace ignored)."})
    # (Declared after `key`: this attribute hides the module's `text` in the class body.)
    # Shorter text has no trigram to look up (an index cannot serve it): refused, never scanned.
    text = fields.String(data_key="q", validate=[
        validate.Length(queries.SEARCH_MIN, queries.SEARCH_MAX,
                        error=f"search text must be {queries.SEARCH_MIN} to {queries.SEARCH_MAX} characters"),
        no_bad_text], metadata={
            "pattern": TEXT_PATTERN,
            "description": "Only those whose raw record, attempted edit or detail contains this text (ignoring "
                           f"case; {queries.SEARCH_MIN} to {queries.SEARCH_MAX} characters)."})

    @post_load
    def _view(self, data, **kwargs):
        ds = current_dataset(data.pop("dataset"))
        error = data.pop("error", None)
        if error is not None and error not in queries.error_codes(ds):
            raise ValidationError({"error": [f"not an error code of {ds.name}"]})
        view = {"dataset": ds, "error": error, "status": data.pop("status", None), "run_id": data.pop("run", None),
                "text": data.pop("text", None), "key_prefix": _prefix(data.pop("key", None))}
        return {**data, "view": view}


_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


class Day(fields.Date):
    """A UTC day written YYYY-MM-DD, and nothing else (not `20261202`, not a week date)."""

    default_error_messages: ClassVar[dict] = {
        "invalid": "not a date: write it as YYYY-MM-DD, e.g. 2026-12-02"}

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or not _DAY.fullmatch(value):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class RunsView(Schema):
    """The run history view of a dataset: status, kind, and a range of queued days (UTC, both included)."""

    class Meta:
        unknown = EXCLUDE

    dataset = dataset_field()
    status = fields.String(validate=validate.OneOf(list(queries.RUN_STATUSES)),
                           metadata={"description": "Only runs in this status."})
    kind = fields.String(validate=validate.OneOf(list(KINDS)),
                         metadata={"description": "Only runs of this kind."})
    since = Day(data_key="from",
                metadata={"description": "Only runs queued on or after this UTC day (YYYY-MM-DD)."})
    until = Day(data_key="to",
                metadata={"description": "Only runs queued on or before this UTC day (YYYY-MM-DD)."})

    @post_load
    def _view(self, data, **kwargs):
        since, until = data.pop("since", None), data.pop("until", None)
        if since and until and since > until:
            message = f"the range starts ({since}) after it ends ({until}): 'from' must be on or before 'to'"
            raise ValidationError({"from": [message], "to": [message]})
        view = {"dataset": current_dataset(data.pop("dataset")), "status": data.pop("status", None),
                "kind": data.pop("kind", None), "since": since, "until": until}
        return {**data, "view": view}


def lenient(schema: type[Schema], args) -> dict:
    """A page's view: the fields of `args` that parse, the defaults for the others.

    An unknown dataset is not a bad value: UnknownDataset goes up (the page answers 404).
    """
    data = {k: v for k, v in dict(args).items() if v not in ("", None)}
    try:
        return schema().load(data)["view"]
    except ValidationError as exc:
        searches = {k for k in data if SEARCH_PARAM.fullmatch(k) or _malformed_search(k)}
        bad = set(exc.messages) | (searches if "search" in exc.messages else set())
        return schema().load({k: v for k, v in data.items() if k not in bad})["view"]
