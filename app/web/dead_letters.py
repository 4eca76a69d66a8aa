"""Dead letters: filter, counts, export; reprocess, edit-and-retry, discard, reopen; confirmed bulk actions."""
import json

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from .. import queries
from ..extensions import db
from ..pipeline import DeadLetterError, RunFailed, discard, jsontext, parse_edit, reopen
from ..runs import current_service
from .auth import OPERATOR, VIEWER, current_actor, requires
from .filters import DeadLetterView, current_dataset, lenient
from .forms import ActionForm, BulkForm, DiscardForm, EditForm
from .target import export_response

bp = Blueprint("dead_letters", __name__, url_prefix="/dead-letters")

EXPORT_COLUMNS = ("id", "status", "error", "detail", "key", "run_id", "pos", "line", "raw", "attempts",
                  "sightings", "outcome", "resolved_run_id", "reason", "created_at", "updated_at", "updated_by")


def _filters(args) -> dict:
    """The filter a request asks for, in the request's dataset; the status defaults to open, `all` lifts it."""
    args = {**args, "status": args.get("status", "open"), "dataset": g.dataset.name}
    return lenient(DeadLetterView, {k: v for k, v in args.items() if not (k == "status" and v == "all")})


def _query_args(filters: dict) -> dict:
    return {"error": filters["error"] or "", "status": filters["status"] or "all",
            "run": filters["run_id"] if filters["run_id"] is not None else ""}


@bp.get("")
@requires(VIEWER)
def index():
    """Dead letters of a filter, newest first, with counts per error code."""
    filters = _filters(request.args)
    with db.engine.connect() as conn:
        page = queries.dead_letters_page(conn, **filters, cursor=request.args.get("cursor"),
                                         before=request.args.get("before"))
        counts = queries.dead_letter_tallies(conn, g.dataset, run_id=filters["run_id"])
    return render_template("dead_letters/index.html", page=page, counts=counts, filters=filters,
                           query_args=_query_args(filters), errors=queries.error_codes(g.dataset),
                           statuses=queries.DEAD_LETTER_STATUSES, form=ActionForm())


@bp.get("/export.<any(csv, json):fmt>")
@requires(VIEWER)
def export(fmt: str):
    """The current view of dead letters as CSV or JSON, streamed."""
    filters = _filters(request.args)
    return export_response(lambda conn: queries.iter_dead_letters(conn, **filters), fmt, "sluice-dead-letters",
                           EXPORT_COLUMNS)


def pretty(text: str | None) -> str:
    """A record's JSON text, indented; text that is not JSON as it is."""
    if text is None:
        return ""
    try:
        return json.dumps(jsontext.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):  # not JSON, or too deep to indent: shown as it is
        return text


def _letter_or_404(conn, dl_id: int) -> dict:
    letter = queries.dead_letter(conn, dl_id)
    if letter is None:
        abort(404, f"There is no dead letter {dl_id}.")
    g.dataset = current_dataset(letter["dataset"])  # the page's links stay in the letter's dataset
    return letter


def _render_letter(dl_id: int, edit_form: EditForm | None = None, status: int = 200):
    with db.engine.connect() as conn:
        letter = _letter_or_404(conn, dl_id)
    if edit_form is None:
        edit_form = EditForm(raw=pretty(letter["last_raw"] or letter["raw"]))
    return render_template("dead_letters/show.html", letter=letter, pretty=pretty, edit_form=edit_form,
                           discard_form=DiscardForm(), form=ActionForm(), shape=g.dataset.shape), status


@bp.get("/<int:dl_id>")
@requires(VIEWER)
def show(dl_id: int):
    """One dead letter: its raw record, error, attempts, history and actions."""
    return _render_letter(dl_id)


def _retry(dl_id: int, edited=None):
    try:
        summary = current_service().reprocess([dl_id], edited=edited, actor=current_actor())
    except DeadLetterError as exc:
        flash(str(exc), "error")
        return
    except RunFailed as exc:
        flash(f"The retry (run #{exc.run_id}) failed: {exc}", "error")
        return
    with db.engine.connect() as conn:
        letter = queries.dead_letter(conn, dl_id)
    if letter["status"] == "resolved":
        flash(f"Dead letter {dl_id} resolved by run #{summary['run_id']}: {letter['outcome']}.", "ok")
    else:
        flash(f"Dead letter {dl_id} was rejected again by run #{summary['run_id']}: {letter['error']} — "
              f"{letter['detail']}", "error")


@bp.post("/<int:dl_id>/reprocess")
@requires(OPERATOR)
def reprocess_one(dl_id: int):
    """Retry a dead letter as it is."""
    if not ActionForm().validate_on_submit():
        abort(400)
    _retry(dl_id)
    return redirect(url_for("dead_letters.show", dl_id=dl_id), 303)


@bp.post("/<int:dl_id>/edit")
@requires(OPERATOR)
def edit(dl_id: int):
    """Retry a dead letter with an operator's edited JSON, checked before it runs."""
    form = EditForm()
    if not form.validate_on_submit():
        return _render_letter(dl_id, form, 400)
    try:
        edited = parse_edit(form.raw.data)
    except DeadLetterError as exc:
        form.raw.errors = [str(exc)]
        return _render_letter(dl_id, form, 400)
    _retry(dl_id, edited)
    return redirect(url_for("dead_letters.show", dl_id=dl_id), 303)


@bp.post("/<int:dl_id>/discard")
@requires(OPERATOR)
def discard_one(dl_id: int):
    """Discard a dead letter with an optional reason."""
    form = DiscardForm()
    if not form.validate_on_submit():
        return _render_letter(dl_id, status=400)
    with db.engine.connect() as conn:
        try:
            discard(conn, [dl_id], reason=form.reason.data, actor=current_actor())
            flash(f"Dead letter {dl_id} discarded.", "ok")
        except DeadLetterError as exc:
            flash(str(exc), "error")
    return redirect(url_for("dead_letters.show", dl_id=dl_id), 303)


@bp.post("/<int:dl_id>/reopen")
@requires(OPERATOR)
def reopen_one(dl_id: int):
    """Reopen a discarded dead letter."""
    if not ActionForm().validate_on_submit():
        abort(400)
    with db.engine.connect() as conn:
        try:
            reopen(conn, [dl_id], actor=current_actor())
            flash(f"Dead letter {dl_id} reopened.", "ok")
        except DeadLetterError as exc:
            flash(str(exc), "error")
    return redirect(url_for("dead_letters.show", dl_id=dl_id), 303)


def _selection(conn, filters: dict) -> list[int]:
    # Bulk actions act on the open dead letters of the filter: only those can be reprocessed or discarded.
    return queries.dead_letter_ids(conn, filters["dataset"], error=filters["error"], status="open",
                                   run_id=filters["run_id"])


@bp.get("/bulk")
@requires(OPERATOR)
def bulk_confirm():
    """Say how many open dead letters a bulk action will touch, and ask for confirmation."""
    action = request.args.get("action")
    if action not in ("reprocess", "discard"):
        abort(404, "Choose reprocess or discard.")
    filters = _filters(request.args)
    with db.engine.connect() as conn:
        count = queries.dead_letter_count(conn, filters["dataset"], error=filters["error"], status="open",
                                          run_id=filters["run_id"])
    form = BulkForm(action=action, error=filters["error"] or "", run=filters["run_id"] or "", confirm=count)
    return render_template("dead_letters/bulk.html", action=action, filters=filters, count=count, form=form,
                           query_args=_query_args(filters))


@bp.post("/bulk")
@requires(OPERATOR)
def bulk():
    """Run a confirmed bulk action; refuse when the selection changed since it was counted."""
    form = BulkForm()
    if not form.validate_on_submit() or form.action.data not in ("reprocess", "discard"):
        abort(400)
    filters = _filters({"error": form.error.data, "run": form.run.data, "status": "open"})
    back = url_for("dead_letters.index", **_query_args(filters))
    with db.engine.connect() as conn:
        with conn.begin():  # the pipeline's actions below begin their own transactions
            ids = _selection(conn, filters)
        if len(ids) != form.confirm.data:
            flash(f"The selection changed: it now holds {len(ids)} open dead letters, not {form.confirm.data}. "
                  "Nothing was done; check and confirm again.", "error")
            return redirect(url_for("dead_letters.bulk_confirm", action=form.action.data,
                                    **_query_args(filters)), 303)
        if not ids:
            flash("No open dead letters match; nothing to do.", "error")
            return redirect(back, 303)
        try:
            if form.action.data == "discard":
                n = discard(conn, ids, reason=form.reason.data, actor=current_actor())
                flash(f"Discarded {n} dead letters.", "ok")
                return redirect(back, 303)
            summary = current_service().reprocess(ids, actor=current_actor())
        except DeadLetterError as exc:
            flash(str(exc), "error")
            return redirect(back, 303)
        except RunFailed as exc:
            flash(f"The retry (run #{exc.run_id}) failed: {exc}", "error")
            return redirect(url_for("runs.show", run_id=exc.run_id), 303)
    flash(f"Reprocessed {len(ids)} dead letters in run #{summary['run_id']}: {summary['staged']} passed, "
          f"{summary['rejected']} rejected again.", "ok")
    return redirect(url_for("runs.show", run_id=summary["run_id"]), 303)
