"""The audit log for administrators (SPEC §11): filter by user, action and time; keyset pages; export."""
import re

from flask import Blueprint, current_app, render_template, request, url_for
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate

from ..accounts import audit
from ..extensions import db
from .auth import ADMIN, requires
from .filters import lenient, text
from .target import export_response

bp = Blueprint("audit", __name__, url_prefix="/audit")

FILTERS = ("user", "action", "from", "to")  # the query string's names
# The forms `audit.time_bound` reads; a day the calendar has not (2026-02-30) is refused by the server alone.
TIME_PATTERN = ("^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])([T ]([01][0-9]|2[0-3]):[0-5][0-9]"
                "(:[0-5][0-9](\\.[0-9]{1,6})?)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?$")
_TIME = re.compile(TIME_PATTERN, re.ASCII)


class Moment(fields.String):
    """A time of the filter, as `audit.time_bound` reads it (the end of a range takes in its whole day, minute or second)."""

    def __init__(self, *, end: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.end = end

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if not _TIME.fullmatch(value):
            raise ValidationError(f"not a time: use {audit.TIME_FORMS}")
        try:
            return audit.time_bound(value, end=self.end)
        except ValueError:  # the form is right, the day is not (or, by its zone, past year 9999)
            raise ValidationError(f"{value} is not on the calendar") from None


class AuditView(Schema):
    """The audit log's filter: who, which action, and from / to (UTC), for the page and the API alike.

    Like the views of filters.py: the API loads it strictly (400), the page leniently, naming what it dropped.
    """

    class Meta:
        unknown = EXCLUDE

    user = text(128, metadata={"description": "Who: a user name (any case; their sessions and tokens), or "
                                              "`cli:<name>` for the command line."})
    action = fields.String(validate=validate.OneOf(list(audit.ACTIONS), error="not an audited action"),
                           metadata={"description": "Only this action."})
    since = Moment(data_key="from", metadata={
        "description": f"Entries at or after this time: {audit.TIME_FORMS}.", "pattern": TIME_PATTERN})
    until = Moment(end=True, data_key="to", metadata={
        "description": f"Entries up to this time, its whole day, minute or second included: {audit.TIME_FORMS}.",
        "pattern": TIME_PATTERN})

    @post_load
    def _view(self, data, **kwargs):
        view = {"user": (data.pop("user", None) or "").strip() or None, "action": data.pop("action", None),
                "since": data.pop("since", None), "until": data.pop("until", None)}
        return {**data, "view": view}


def _given(args) -> dict:
    return {k: args[k] for k in FILTERS if args.get(k) not in ("", None)}


def view_of(args) -> tuple[dict, dict]:
    """The filter a page asks for (its bad values dropped), and the messages of the values it dropped."""
    problems = AuditView().validate(_given(args))
    return lenient(AuditView, _given(args)), problems


def object_url(entry: dict) -> str | None:
    """The page of an entry's object, when it has one: a run, a dead letter, a dataset, a watermark, the users."""
    kind, ident = entry["object_type"], entry["object_id"] or ""
    if kind == "run" and ident.isdigit():
        return url_for("runs.show", run_id=int(ident))
    if kind == "dead_letter" and ident.isdigit():
        return url_for("dead_letters.show", dl_id=int(ident))
    if kind == "dataset" and ident:
        return url_for("datasets.show", name=ident)
    if kind == "watermark" and entry["dataset"]:
        return url_for("watermarks.index", dataset=entry["dataset"])
    if kind == "user" and "users.index" in current_app.view_functions:
        return url_for("users.index")
    return None


def who_filter(entry: dict) -> str | None:
    """The user filter that finds an entry's actor: their user name, or the command line's label."""
    if entry["user_name"]:
        return entry["user_name"]
    return entry["actor"] if entry["actor"].startswith(audit.CLI) else None


@bp.get("")
@requires(ADMIN)
def index():
    """The audit log newest first, filtered by user, action and time, a keyset page at a time."""
    view, problems = view_of(request.args)
    with db.engine.connect() as conn:
        page = audit.entries_page(conn, **view, cursor=request.args.get("cursor"), before=request.args.get("before"))
    query_args = {k: v for k, v in _given(request.args).items() if k not in problems}
    empty_range = bool(view["since"] and view["until"] and view["since"] >= view["until"])
    return render_template("audit/index.html", page=page, problems=problems, query_args=query_args,
                           empty_range=empty_range, actions=audit.ACTIONS, object_url=object_url,
                           who_filter=who_filter, detail_text=audit.detail_text)


def _csv_row(entry: dict) -> dict:
    return {**entry, "detail": audit.detail_text(entry["detail"])}


@bp.get("/export.<any(csv, json):fmt>")
@requires(ADMIN)
def export(fmt: str):
    """The filtered log as CSV or JSON (details as objects in JSON, as JSON text in CSV), streamed."""
    view, _ = view_of(request.args)

    def rows(conn):
        entries = audit.iter_entries(conn, **view)
        return map(_csv_row, entries) if fmt == "csv" else entries

    return export_response(rows, fmt, "sluice-audit", audit.COLUMNS)

