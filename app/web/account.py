"""Signing in and out (SPEC §11): the sign-in form, throttled per user name and per address."""
from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import update

from ..accounts import audit
from ..accounts.actor import Actor
from ..accounts.users import authenticate, count_users
from ..database import write_transaction
from ..extensions import db, limiter
from ..models import User
from ..pipeline.validate import now_text
from .auth import VIEWER, Principal, current_actor, public, requires, safe_next
from .errors import render_error
from .forms import ActionForm, SignInForm

bp = Blueprint("account", __name__)


def _name_key() -> str:
    return "sign-in-name:" + request.form.get("username", "").strip().lower()[:64]


def _failed(response) -> bool:
    return response.status_code == 401  # only failed attempts count towards the throttle


def _throttled(limit):
    """Audit the refused attempt and say when to try again (429)."""
    name = request.form.get("username", "").strip()[:64]
    with db.engine.connect() as conn, write_transaction(conn, apply_lock=False):
        audit.record(conn, "sign_in_throttled", Actor(label="anonymous", address=request.remote_addr),
                     object_type="user", object_id=name or None, detail=str(limit.limit))
    response, status = render_error(429, "Too many attempts", "Too many failed sign-ins for this user name or "
                                    "from this address. Wait a minute and try again.", code="throttled")
    return current_app.make_response((response, status))


@bp.get("/sign-in")
@public
def sign_in():
    """The sign-in form; a signed-in user goes straight on."""
    target = safe_next(request.args.get("next"))
    if current_user.is_authenticated:
        return redirect(target or url_for("home.index"))
    with db.engine.connect() as conn:
        no_users = count_users(conn) == 0
    return render_template("account/sign_in.html", form=SignInForm(next=target), no_users=no_users)


@bp.post("/sign-in")
@public
@limiter.limit(lambda: current_app.config["SLUICE_SIGN_IN_LIMIT_PER_ADDRESS"], deduct_when=_failed,
               on_breach=_throttled)
@limiter.limit(lambda: current_app.config["SLUICE_SIGN_IN_LIMIT_PER_NAME"], key_func=_name_key,
               deduct_when=_failed, on_breach=_throttled)
def sign_in_post():
    """Check the user name and password; on success, a fresh session and on to `next`."""
    form = SignInForm()
    if not form.validate_on_submit():
        return render_template("account/sign_in.html", form=form, no_users=False), 400
    name = form.username.data.strip()
    with db.engine.connect() as conn:
        user = authenticate(conn, name, form.password.data)
        with write_transaction(conn, apply_lock=False):
            if user is None:
                audit.record(conn, "sign_in_failed", Actor(label="anonymous", address=request.remote_addr),
                             object_type="user", object_id=name[:64])
            else:
                now = now_text()
                conn.execute(update(User).where(User.id == user.id).values(last_sign_in_at=now))
                audit.record(conn, "sign_in", Actor.of_user(user.id, user.name, address=request.remote_addr),
                             object_type="user", object_id=user.name, at=now)
    if user is None:
        form.password.errors = ["The user name or the password is wrong, or the account is disabled."]
        return render_template("account/sign_in.html", form=form, no_users=False), 401
    session.clear()  # nothing of an earlier visitor's session carries over
    login_user(Principal(user))
    return redirect(safe_next(form.next.data) or url_for("home.index"))


@bp.post("/sign-out")
@requires(VIEWER)
def sign_out():
    """End this browser's session."""
    if ActionForm().validate_on_submit():
        with db.engine.connect() as conn, write_transaction(conn, apply_lock=False):
            audit.record(conn, "sign_out", current_actor(), object_type="user", object_id=current_user.name)
        logout_user()
        session.clear()
        flash("Signed out.", "ok")
    return redirect(url_for("account.sign_in"))
