"""A dataset's watermark: its value and history; set or reset after a preview and a confirmation."""
from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from .. import queries
from ..datasets.registry import DatasetError
from ..extensions import db
from ..pipeline import WatermarkError
from ..pipeline import watermark as wm
from .auth import OPERATOR, VIEWER, current_actor, requires
from .forms import ResetForm, WatermarkForm

bp = Blueprint("watermarks", __name__, url_prefix="/watermarks")


@bp.get("")
@requires(VIEWER)
def index():
    """The current watermark, its history and the form to change it."""
    with db.engine.connect() as conn:
        data = queries.watermark_page(conn, g.dataset, cursor=request.args.get("cursor"))
    return render_template("watermarks/index.html", data=data, value=request.args.get("value", ""))


@bp.get("/confirm")
@requires(OPERATOR)
def confirm():
    """Preview a new value (or a reset): how many target rows lie at or after it, whether it moves back; confirm."""
    reset = request.args.get("reset") == "1"
    value = request.args.get("value", "")
    with db.engine.connect() as conn:
        try:
            canonical = None if reset else wm.check_value(value)
            rows = wm.preview(conn, canonical, dataset=g.dataset)
        except WatermarkError as exc:
            data = queries.watermark_page(conn, g.dataset)
            return render_template("watermarks/index.html", data=data, value=value, error=str(exc)), 400
        current = wm.current(conn, g.dataset.watermark)
    if reset and current is None:
        flash("There is no watermark to reset: the next run already processes every record.", "ok")
        return redirect(url_for("watermarks.index"), 303)
    form = ResetForm() if reset else WatermarkForm(value=canonical)
    return render_template("watermarks/confirm.html", reset=reset, value=canonical, rows=rows, current=current,
                           form=form)


@bp.post("/set")
@requires(OPERATOR)
def set_value():
    """Set the watermark to a confirmed value."""
    form = WatermarkForm()
    if not form.validate_on_submit():
        abort(400)
    with db.engine.connect() as conn:
        try:
            wm.set_value(conn, form.value.data, via="web", actor=current_actor(), dataset=g.dataset)
        except (WatermarkError, DatasetError) as exc:
            flash(f"The watermark was not changed: {exc}", "error")
            return redirect(url_for("watermarks.index", value=form.value.data), 303)
    flash("The watermark was set: the current watermark below is the new value.", "ok")
    return redirect(url_for("watermarks.index"), 303)


@bp.post("/reset")
@requires(OPERATOR)
def reset():
    """Remove the watermark: the next run processes everything, and the stale rule protects newer rows."""
    if not ResetForm().validate_on_submit():
        abort(400)
    with db.engine.connect() as conn:
        try:
            wm.reset(conn, via="web", actor=current_actor(), dataset=g.dataset)
        except DatasetError as exc:
            flash(f"The watermark was not reset: {exc}", "error")
            return redirect(url_for("watermarks.index"), 303)
    flash("The watermark was reset: the next run processes every record.", "ok")
    return redirect(url_for("watermarks.index"), 303)
