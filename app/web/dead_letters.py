"""Dead letters: filter, counts, export; reprocess, edit-and-retry, discard, reopen; confirmed bulk actions
(on checked dead letters of a view, or on all a filter matches)."""
import json
import re

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, url_for

from .. import queries
from ..config import pipeline_settings
from ..extensions import db
from ..pipeline import (
    DeadLetterError,
    RunFailed,
    discard,
    jsontext,
    parse_edit,
    reopen,
    retry_hint,
    select_ids,
)
from ..pipeline.dead_letters import ACTION_STATUS, MAX_SELECTION, Selection
from ..pipeline.validate import utc_now
from ..runs import current_service
from .auth import OPERATOR, VIEWER, current_actor, requires
from .filters import DeadLetterView, current_dataset, lenient
from .forms import ActionForm, BulkForm, DiscardForm, EditForm
from .target import export_response

bp = Blueprint("dead_letters", __name__, url_prefix="/dead-letters")

EXPORT_COLUMNS = ("id", "status", "error", "detail", "key", "run_id", "pos", "line", "raw", "attempts",
                  "sightings", "outcome", "resolved_run_id", "reason", "created_at", "updated_at", "updated_by")


# dlsearch's filters of the view (text inside raw/detail, key prefix) and their query-string names.
SEARCH = {"text": "q", "key_prefix": "key"}


def _filters(args) -> dict:
    """The filter a request asks for, in the request's dataset; the status defaults to open, `all` lifts it."""
    args = {**args, "status": args.get("status", "open"), "dataset": g.dataset.name}
    return lenient(DeadLetterView, {k: v for k, v in args.items() if not (k == "status" and v == "all")})


def _search(filters: dict) -> dict:
    """The search part of a filter, only what is set (a view without search passes nothing)."""
    return {name: filters[name] for name in SEARCH if filters.get(name)}


def _query_args(filters: dict) -> dict:
    args = {"error": filters["error"] or "", "status": filters["status"] or "all",
            "run": filters["run_id"] if filters["run_id"] is not None else ""}
    return {**args, **{SEARCH[name]: value for name, value in _search(filters).items()}}


def _link_args(filters: dict) -> dict:
    """The filter a letter's links carry: what differs from the default view (open, no filter), so those stay short."""
    return {k: v for k, v in _query_args(filters).items() if v != "" and (k, v) != ("status", "open")}


def _tallies(conn, filters: dict) -> dict:
    return queries.dead_letter_tallies(conn, g.dataset, status=filters["status"], run_id=filters["run_id"],
                                       text=filters["text"], key_prefix=filters["key_prefix"])


def _next_open(conn, dl_id: int, filters: dict) -> int | None:
    return queries.next_open_dead_letter(conn, dl_id, filters["dataset"], error=filters["error"],
                                         run_id=filters["run_id"], text=filters["text"],
                                         key_prefix=filters["key_prefix"])


def _view_count(counts: dict, filters: dict) -> str:
    """How many dead letters the view shows, "20,000+" when a count stopped at its cap (the counts per error code are within its status and run)."""
    shown = [c for c in counts["errors"] if filters["error"] in (None, c["error"])]
    return f"{sum(c['n'] for c in shown):,}" + ("+" if any(c["capped"] for c in shown) else "")


def _hint():
    """`retry_hint` for this request's time and the app's future tolerance, for the templates."""
    now, tolerance = utc_now(), pipeline_settings(current_app.config).future_tolerance
    return lambda letter: retry_hint(letter, now, tolerance)


@bp.get("")
@requires(VIEWER)
def index():
    """Dead letters of a filter, newest first, with counts per error code within its status."""
    filters = _filters(request.args)
    with db.engine.connect() as conn:
        page = queries.dead_letters_page(conn, **filters, cursor=request.args.get("cursor"),
                                         before=request.args.get("before"))
        counts = _tallies(conn, filters)
    shown = {d["status"] for d in page["rows"]}
    # Only the actions that can apply to what the view shows are offered.
    actions = [a for a in ACTION_STATUS if ACTION_STATUS[a] in shown]
    return render_template("dead_letters/index.html", page=page, counts=counts, filters=filters,
                           query_args=_query_args(filters), link_args=_link_args(filters),
                           errors=queries.error_codes(g.dataset), statuses=queries.DEAD_LETTER_STATUSES,
                           form=ActionForm(), actions=actions,
                           view_count=_view_count(counts, filters), hint=_hint(), max_selection=MAX_SELECTION)


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
        filters = _filters(request.args)  # the list it came from, in the letter's dataset
        next_open = _next_open(conn, dl_id, filters)
    if edit_form is None:
        edit_form = EditForm(raw=pretty(letter["last_raw"] or letter["raw"]))
    return render_template("dead_letters/show.html", letter=letter, pretty=pretty, edit_form=edit_form,
                           discard_form=DiscardForm(), form=ActionForm(), shape=g.dataset.shape,
                           link_args=_link_args(filters), next_open=next_open, hint=_hint()(letter)), status


def _back_to_letter(dl_id: int):
    """Back to the letter's page after an action on it, keeping the list's filter it came from."""
    return redirect(url_for("dead_letters.show", dl_id=dl_id, **_link_args(_filters(request.args))), 303)


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
    return _back_to_letter(dl_id)


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
    return _back_to_letter(dl_id)


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
    return _back_to_letter(dl_id)


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
    return _back_to_letter(dl_id)


def _matching(conn, filters: dict, action: str, count: bool = False):
    """The ids (or, with `count`, how many) of the dead letters of a filter that an action applies to."""
    status = ACTION_STATUS[action]
    if filters["status"] not in (None, status):
        return 0 if count else []  # a view of other letters holds none the action could touch
    return (queries.dead_letter_count if count else queries.dead_letter_ids)(
        conn, filters["dataset"], error=filters["error"], status=status, run_id=filters["run_id"], **_search(filters))


_ID = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)


def _picked_ids(values: list[str]) -> list[int]:
    """The ids of picked checkboxes (400 for one that is not an id)."""
    if not all(_ID.fullmatch(v) for v in values):
        abort(400, "A selected dead letter is not an id.")
    return [int(v) for v in values]


def _unfit_note(selection: Selection) -> str:
    return ", ".join(f"{i} ({status})" for i, status in list(selection.unfit.items())[:20]) + \
        ("…" if len(selection.unfit) > 20 else "")


@bp.get("/bulk")
@requires(OPERATOR)
def bulk_confirm():
    """Say how many dead letters a bulk action will touch (picked ones, or all of the filter), and ask to confirm."""
    action = request.args.get("action")
    if action not in ACTION_STATUS:
        abort(404, "Choose reprocess, discard or reopen.")
    filters = _filters(request.args)
    query_args = _query_args(filters)
    picked = not request.args.get("all") and (request.args.get("picked") or request.args.getlist("ids"))
    selection, refused = None, None
    with db.engine.connect() as conn:
        if picked:
            try:
                selection = select_ids(conn, _picked_ids(request.args.getlist("ids")),
                                       dataset=filters["dataset"].name, action=action)
            except DeadLetterError as exc:
                refused = str(exc)
            count = len(selection.fit) if selection else 0
        else:
            count = _matching(conn, filters, action, count=True)
    form = BulkForm(action=action, error=filters["error"] or "", run=filters["run_id"] or "",
                    status=query_args["status"], q=query_args.get("q", ""), key=query_args.get("key", ""),
                    confirm=count)
    return render_template("dead_letters/bulk.html", action=action, filters=filters, count=count, form=form,
                           query_args=query_args, selection=selection, refused=refused,
                           unfit=_unfit_note(selection) if selection else "",
                           wanted=ACTION_STATUS[action]), 400 if refused else 200


def _act(conn, action: str, ids: list[int], reason: str | None, back: str):
    """Run a bulk action on checked ids and say what it did."""
    try:
        if action == "discard":
            flash(f"Discarded {discard(conn, ids, reason=reason, actor=current_actor())} dead letters.", "ok")
            return redirect(back, 303)
        if action == "reopen":
            flash(f"Reopened {reopen(conn, ids, actor=current_actor())} dead letters.", "ok")
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


@bp.post("/bulk")
@requires(OPERATOR)
def bulk():
    """Run a confirmed bulk action; refuse when the selection changed since it was counted."""
    form = BulkForm()
    if not form.validate_on_submit() or form.action.data not in ACTION_STATUS:
        abort(400)
    action = form.action.data
    filters = _filters({"error": form.error.data, "run": form.run.data, "status": form.status.data or "open",
                        "q": form.q.data, "key": form.key.data})
    query_args = _query_args(filters)
    back = url_for("dead_letters.index", **query_args)
    noun = f"{ACTION_STATUS[action]} dead letters"
    with db.engine.connect() as conn:
        if form.ids.data:
            try:
                selection = select_ids(conn, form.ids.data, dataset=filters["dataset"].name, action=action)
            except DeadLetterError as exc:
                flash(f"{exc}. Nothing was done.", "error")
                return redirect(back, 303)
            ids, again = selection.fit, {"picked": 1, "ids": form.ids.data}
        else:
            with conn.begin():  # the pipeline's actions below begin their own transactions
                ids, again, selection = _matching(conn, filters, action), {"all": 1}, None
        if len(ids) != form.confirm.data:
            flash(f"The selection changed: it now holds {len(ids)} {noun}, not {form.confirm.data}. "
                  "Nothing was done; check and confirm again.", "error")
            return redirect(url_for("dead_letters.bulk_confirm", action=action, **query_args, **again), 303)
        if not ids:
            flash(f"No {noun} are selected; nothing to do.", "error")
            return redirect(back, 303)
        if selection is not None and selection.unfit:
            flash(f"Left as they were ({len(selection.unfit)}, not {ACTION_STATUS[action]}): "
                  f"{_unfit_note(selection)}.", "error")
        return _act(conn, action, ids, form.reason.data, back)
