"""Signing in and out (SPEC §11): the sign-in form, throttled per user name and per address; the one-time
first-administrator form; one's own account (password) and API tokens.
"""
from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from ..accounts import audit
from ..accounts.actor import Actor
from ..accounts.roles import ADMIN, ROLES, at_least
from ..accounts.setup import check_setup_token, create_first_admin
from ..accounts.tokens import TokenRow, create_token, list_tokens, revoke_token
from ..accounts.users import AccountError, authenticate, change_password, count_users, get_user
from ..database import write_transaction
from ..extensions import db, limiter
from ..models import User
from ..pipeline.validate import now_text
from .auth import VIEWER, Principal, current_actor, public, requires, safe_next
from .errors import render_error
from .forms import ActionForm, PasswordForm, SetupForm, SignInForm, TokenForm

bp = Blueprint("account", __name__)
SETUP_ACTOR = "setup link"  # the "who" of the first administrator


@bp.app_template_global()
def signed_in() -> Principal | None:
    """For the header: the signed-in principal, or None (also when the database cannot say, on its error page)."""
    if current_app.config.get("SLUICE_DB_ERROR"):
        return None
    try:
        return current_user if current_user.is_authenticated else None
    except SQLAlchemyError:
        return None


@bp.app_template_global()
def sign_out_form() -> ActionForm:
    """For the header: the sign-out button's form (its CSRF token), never reading the request's own form."""
    return ActionForm(formdata=None)  # an error page (413) must not read the body that caused it


@bp.app_template_global()
def has_page(endpoint: str) -> bool:
    """For the header: whether this app has the view `endpoint` (link a page only where it is installed)."""
    return endpoint in current_app.view_functions


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


def _setup_gone():
    return render_error(404, "Setup link not valid", "This setup link is not valid: it was used already, or "
                        "Sluice has users. Sign in instead, or ask an administrator for an account.")


@bp.route("/setup/<token>", methods=["GET", "POST"])
@public
def setup(token: str):
    """The one-time form that creates the first administrator, open only while no user exists."""
    instance = current_app.instance_path
    with db.engine.connect() as conn:
        if count_users(conn) or not check_setup_token(instance, token):
            return _setup_gone()
        form = SetupForm()
        if not form.validate_on_submit():
            return render_template("account/setup.html", form=form, token=token), 400 if form.errors else 200
        try:
            # Nobody is signed in yet: "who" made the first administrator is the link itself.
            user = create_first_admin(conn, instance, token, form.username.data.strip(), form.new.data,
                                      Actor(label=SETUP_ACTOR, address=request.remote_addr))
        except AccountError as exc:
            if exc.code in ("conflict", "forbidden"):  # used (or a user made) meanwhile
                return _setup_gone()
            form.new.errors = [str(exc)]
            return render_template("account/setup.html", form=form, token=token), 400
    session.clear()
    login_user(Principal(user))
    flash(f"Welcome, {user.name}: you are Sluice's first administrator. Create other users on the Users page.",
          "ok")
    return redirect(url_for("home.index"), 303)


@bp.route("/account", methods=["GET", "POST"])
@requires(VIEWER)
def index():
    """The signed-in user's name and role, and the form to change their password."""
    form = PasswordForm()
    if request.method == "GET" or not form.validate_on_submit():
        status = 400 if form.errors else 200
        return render_template("account/index.html", form=form, user=current_user.user), status
    with db.engine.connect() as conn:
        try:
            change_password(conn, current_user.id, form.current.data, form.new.data, current_actor())
        except AccountError as exc:
            form.new.errors = [str(exc)]
            return render_template("account/index.html", form=form, user=current_user.user), 400
        user = get_user(conn, current_user.id)
    if current_user.token is None:
        login_user(Principal(user))  # the new epoch: every other session ends, this one goes on
    flash("Your password is changed. Every other session of yours has ended.", "ok")
    return redirect(url_for("account.index"), 303)


def token_roles() -> list[str]:
    """The roles a new token of the current principal may have: its own and those below."""
    return [role for role in ROLES if at_least(current_user.role, role)]


def new_token(conn, name: str, role: str | None, expires_days: int | None) -> tuple[str, TokenRow]:
    """Make a token for the current user, with a role at most the current principal's (default: that role).

    A token cannot make a token above its own role, though its user might. AccountError when refused.
    """
    role = role or current_user.role
    if role in ROLES and not at_least(current_user.role, role):
        raise AccountError("forbidden", f"a token's role is at most yours ({current_user.role}), not {role}")
    return create_token(conn, current_user.user, name, current_actor(), role=role, expires_days=expires_days)


def visible_tokens(conn, every: bool) -> list[TokenRow]:
    """The current user's tokens, or every user's for an administrator who asks for them."""
    return list_tokens(conn, None if every and current_user.can(ADMIN) else current_user.id)


def _tokens_page(form: TokenForm, status: int = 200, secret: str | None = None, made: TokenRow | None = None):
    every = request.args.get("all") == "1" and current_user.can(ADMIN)
    with db.engine.connect() as conn:
        tokens = visible_tokens(conn, every)
    return render_template("account/tokens.html", form=form, tokens=tokens, every=every, secret=secret,
                           made=made, action=ActionForm()), status


def _token_form(blank: bool = False) -> TokenForm:
    """The new-token form: as posted, or `blank` (after a token is made), with the roles one may give."""
    form = TokenForm(formdata=None) if blank else TokenForm()
    form.role.choices = token_roles()
    if blank or not form.is_submitted():
        form.role.data = current_user.role
    return form


@bp.get("/account/tokens")
@requires(VIEWER)
def tokens():
    """One's API tokens (an administrator's `?all=1`: every user's) and the form to make one."""
    return _tokens_page(_token_form())


@bp.post("/account/tokens")
@requires(VIEWER)
def create_token_view():
    """Make a token and show its secret on this answer only: it is never stored, flashed or logged."""
    form = _token_form()
    if not form.validate_on_submit():
        return _tokens_page(form, 400)
    with db.engine.connect() as conn:
        try:
            secret, made = new_token(conn, form.name.data, form.role.data, form.expires_days.data)
        except AccountError as exc:
            form.name.errors = [str(exc)]
            return _tokens_page(form, 400)
    response = current_app.make_response(_tokens_page(_token_form(blank=True), 201, secret=secret, made=made))
    response.headers["Cache-Control"] = "no-store"  # the secret must not stay in a cache
    return response


@bp.post("/account/tokens/<int:token_id>/revoke")
@requires(VIEWER)
def revoke_token_view(token_id: int):
    """Revoke one of one's tokens (an administrator: anyone's)."""
    if not ActionForm().validate_on_submit():
        abort(400)
    owner = None if current_user.can(ADMIN) else current_user.id
    with db.engine.connect() as conn:
        try:
            token = revoke_token(conn, token_id, current_actor(), user_id=owner)
        except AccountError as exc:
            return render_error(404, "No such token", str(exc))
    flash(f"Token {token.name!r} of {token.user_name} is revoked.", "ok")
    every = request.args.get("all") == "1"
    return redirect(url_for("account.tokens", all=1 if every else None), 303)
