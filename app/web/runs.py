"""Run history, a run's page with live progress, its summary download, cancel, retry and backfill."""
import json
import re
from types import SimpleNamespace

from flask import Blueprint, Response, abort, flash, g, jsonify, redirect, render_template, request, url_for
from markupsafe import Markup, escape
from marshmallow import ValidationError

from .. import queries
from ..extensions import db
from ..pipeline import summary_of, warnings_of
from ..pipeline.run import KINDS
from ..runs import RunService, RunStateError, current_service
from . import charts
from .auth import OPERATOR, VIEWER, current_actor, requires
from .converters import MAX_ID
from .filters import RunsView, current_dataset, lenient
from .forms import ActionForm

bp = Blueprint("runs", __name__, url_prefix="/runs")


def _int(value) -> int | None:
    """A run id from a query string: 1 to 2**63 - 1 in ASCII digits (int() takes `٣` and ` +3`), else None."""
    value = (value or "").strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 19):
        return None
    return int(value) if 1 <= int(value) <= MAX_ID else None


_FILTERS = ("status", "kind", "since", "until")
_DATE_FIELDS = ("from", "to")


def _runs_view(args: dict) -> tuple[dict, list[str]]:
    """The page's view of the query string, and what is wrong with its dates (a date is typed, so a bad one
    is said, not silently dropped; other bad values are dropped as on every page)."""
    try:
        return RunsView().load({k: v for k, v in args.items() if v not in ("", None)})["view"], []
    except ValidationError as exc:
        problems = [m.capitalize() if m.startswith("the range")
                    else f"{name.capitalize()} {args[name][:40]!r}: {m}"
                    for name in _DATE_FIELDS for m in exc.messages.get(name, [])]
        if problems:
            problems.append("The date range was not applied.")
        return lenient(RunsView, args), list(dict.fromkeys(problems))


@bp.get("")
@requires(VIEWER)
def index():
    """A dataset's run history, newest first, filtered by status, kind and queued days, with two charts:
    records per run, and records loaded and the reject rate per day."""
    view, problems = _runs_view({**request.args.to_dict(), "dataset": g.dataset.name})
    with db.engine.connect() as conn:
        page = queries.runs_page(conn, **view, cursor=request.args.get("cursor"),
                                 before=request.args.get("before"))
        days = queries.runs_per_day(conn, **view)
    filtered = any(view[k] for k in _FILTERS)
    return render_template("runs/index.html", page=page, view=view, filtered=filtered, problems=problems,
                           chart=charts.runs_chart(page["rows"]), per_day=charts.days_chart(days),
                           statuses=queries.RUN_STATUSES, kinds=KINDS,
                           form=ActionForm()), 400 if problems else 200


_SEPARATORS = re.compile(r"([._\-/\\]+)")


@bp.app_template_filter("breakable")
def breakable(name: str) -> Markup:
    """A file name that may wrap after its separators (`.`, `_`, `-`, `/`), never inside a word."""
    parts = _SEPARATORS.split(name or "")
    return Markup("").join(escape(p) + (Markup("<wbr>") if i % 2 else "") for i, p in enumerate(parts))


def _file_gone(run: dict) -> bool:
    return bool(run["file_path"]) and not RunService.file_available(SimpleNamespace(**run))


@bp.get("/<int:run_id>")
@requires(VIEWER)
def show(run_id: int):
    """Everything about one run: options, file, times, counts, watermark, its dead letters and lineage."""
    with db.engine.connect() as conn:
        run = queries.run_detail(conn, run_id)
        if run is None:
            abort(404, f"There is no run {run_id}.")
        g.dataset = current_dataset(run["dataset"])  # the page's links stay in the run's dataset
        letters = queries.dead_letters_page(conn, g.dataset, run_id=run_id, limit=20)
        lineage = queries.run_lineage(conn, run_id, cursor=request.args.get("lineage"))
    return render_template("runs/show.html", run=current_service().live(run), letters=letters, lineage=lineage,
                           file_gone=_file_gone(run), summary=summary_of(SimpleNamespace(**run)), form=ActionForm())


@bp.get("/<int:run_id>/progress.json")
@requires(VIEWER)
def progress(run_id: int):
    """A run's status, times, watermarks, counts and, while it runs, its progress in words: polled by its page."""
    with db.engine.connect() as conn:
        rows = queries.run_status(conn, [run_id])
    if not rows:
        return jsonify({"error": {"code": "not_found", "message": f"There is no run {run_id}."}}), 404
    return jsonify(current_service().live(rows[0]))


@bp.get("/status.json")
@requires(VIEWER)
def status():
    """The status, times and counts of a few runs (`?ids=1,2,3`), polled by the home page and the runs list."""
    ids = [i for i in (_int(x) for x in request.args.get("ids", "").split(",")) if i is not None]
    with db.engine.connect() as conn:
        rows = queries.run_status(conn, ids)
    return jsonify({"runs": rows})


@bp.get("/<int:run_id>/summary.json")
@requires(VIEWER)
def summary(run_id: int):
    """Download the run's summary JSON."""
    with db.engine.connect() as conn:
        run = queries.run_detail(conn, run_id)
    if run is None:
        abort(404, f"There is no run {run_id}.")
    body = json.dumps(summary_of(SimpleNamespace(**run)), indent=2) + "\n"
    return Response(body, mimetype="application/json",
                    headers={"Content-Disposition": f'attachment; filename="sluice-run-{run_id}-summary.json"'})


@bp.post("/<int:run_id>/cancel")
@requires(OPERATOR)
def cancel(run_id: int):
    """Ask a queued or running run to stop."""
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        current_service().cancel(run_id, current_actor())
        flash(f"Run #{run_id}: cancel requested.", "ok")
    except RunStateError as exc:
        flash(f"Run #{run_id} cannot be cancelled: {exc}", "error")
    return redirect(url_for("runs.show", run_id=run_id), 303)


def _queue_again(run_id: int, queue, done: str, noun: str):
    """Queue a new run of a run's file with `queue` (the service's retry or backfill) and go to its page."""
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        new_id = queue(run_id, current_actor())
    except RunStateError as exc:
        flash(f"Run #{run_id} cannot be {done}: {exc}", "error")
        return redirect(url_for("runs.show", run_id=run_id), 303)
    flash(f"Queued run #{new_id}, a {noun} of run #{run_id}.", "ok")
    return redirect(url_for("runs.show", run_id=new_id), 303)


@bp.post("/<int:run_id>/retry")
@requires(OPERATOR)
def retry(run_id: int):
    """Queue a new run on a failed or cancelled run's file."""
    return _queue_again(run_id, current_service().retry, "retried", "retry")


@bp.post("/<int:run_id>/backfill")
@requires(OPERATOR)
def backfill(run_id: int):
    """Queue a backfill of a run that skipped every record as older than the watermark."""
    return _queue_again(run_id, current_service().backfill, "backfilled", "backfill")


def run_warnings(run: dict) -> list[dict]:
    """A run row's warnings, for the templates (`r | warnings`)."""
    return warnings_of(SimpleNamespace(**run))
