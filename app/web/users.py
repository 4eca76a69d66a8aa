"""The administrators' page of users (SPEC §11): list, create, set a role, disable and enable again."""
from flask import Blueprint, abort, flash, redirect, render_template, url_for

from ..accounts.roles import ADMIN, ROLES
from ..accounts.users import AccountError, create_user, list_users, set_disabled, set_role
from ..extensions import db
from .auth import current_actor, requires
from .forms import ActionForm, NewUserForm, RoleForm

bp = Blueprint("users", __name__, url_prefix="/users")


def _new_user_form() -> NewUserForm:
    form = NewUserForm()
    form.role.choices = list(ROLES)
    return form


def _page(form: NewUserForm, status: int = 200, error: str | None = None):
    with db.engine.connect() as conn:
        users = list_users(conn)
    return render_template("users/index.html", users=users, form=form, roles=ROLES, action=ActionForm(),
                           error=error), status


@bp.get("")
@requires(ADMIN)
def index():
    """Every user with their role, status and last sign-in, and the form to create one."""
    return _page(_new_user_form())


@bp.post("")
@requires(ADMIN)
def create():
    """Create a user with a role and an initial password (which they can change on their account page)."""
    form = _new_user_form()
    if not form.validate_on_submit():
        return _page(form, 400)
    with db.engine.connect() as conn:
        try:
            user = create_user(conn, form.username.data.strip(), form.role.data, current_actor(),
                               password=form.new.data)
        except AccountError as exc:
            return _page(form, 409 if exc.code == "conflict" else 400, error=f"Not created: {exc}")
    flash(f"User {user.name} ({user.role}) is created: give them their initial password.", "ok")
    return redirect(url_for("users.index"), 303)


def _change(apply, done: str):
    """Apply a change to one user; its AccountError's message is flashed, and back to the list."""
    with db.engine.connect() as conn:
        try:
            user = apply(conn)
        except AccountError as exc:
            flash(f"Not changed: {exc}", "error")
            return redirect(url_for("users.index"), 303)
    flash(done.format(user=user), "ok")
    return redirect(url_for("users.index"), 303)


@bp.post("/<name>/role")
@requires(ADMIN)
def change_role(name: str):
    """Give a user another role (the last active administrator keeps theirs)."""
    form = RoleForm()
    form.role.choices = list(ROLES)
    if not form.validate_on_submit():
        abort(400)
    return _change(lambda conn: set_role(conn, name, form.role.data, current_actor()),
                   "{user.name} is now {user.role}.")


@bp.post("/<name>/disable")
@requires(ADMIN)
def disable(name: str):
    """Disable a user: their sessions and tokens stop at their next request."""
    if not ActionForm().validate_on_submit():
        abort(400)
    return _change(lambda conn: set_disabled(conn, name, True, current_actor()),
                   "{user.name} is disabled: their sessions and API tokens no longer work.")


@bp.post("/<name>/enable")
@requires(ADMIN)
def enable(name: str):
    """Enable a disabled user again (they sign in anew; their tokens work again)."""
    if not ActionForm().validate_on_submit():
        abort(400)
    return _change(lambda conn: set_disabled(conn, name, False, current_actor()),
                   "{user.name} is enabled again.")
