"""`flask --app app users …` and `tokens …`: users, their roles and passwords, API tokens, the setup link.

The command line acts as `cli:<operating-system user>` in the audit log. Errors are one line and a
non-zero exit, as for `etl` (the same guard).
"""
import sys

import click
from flask import current_app
from flask.cli import AppGroup

from .accounts import setup
from .accounts.actor import cli_actor
from .accounts.roles import ROLES
from .accounts.tokens import create_token, get_token, list_tokens, revoke_token
from .accounts.users import (
    AccountError,
    UserRow,
    check_name,
    check_role,
    count_users,
    create_user,
    get_by_name,
    list_users,
    set_disabled,
    set_password,
    set_role,
)
from .cli import _connection, _guard
from .pipeline.validate import now_text

users = AppGroup("users", help="Create users, set their roles and passwords, disable and enable them.")
tokens = AppGroup("tokens", help="Create, list and revoke API tokens.")
ROLE_HELP = f"One of {', '.join(ROLES)}."
password_stdin_option = click.option(
    "--password-stdin", is_flag=True,
    help="Read the password from standard input (one line) instead of a prompt.")


def _password(from_stdin: bool) -> str:
    """A new password: one line of standard input (its newline dropped), or typed twice at a hidden prompt."""
    if from_stdin:
        line = sys.stdin.readline()
        return line.removesuffix("\n").removesuffix("\r")
    return click.prompt("Password", hide_input=True, confirmation_prompt="Repeat the password", err=True)


def _user(conn, name: str) -> UserRow:
    user = get_by_name(conn, name)
    if user is None:
        raise AccountError("not_found", f"there is no user named {name[:64]!r}")
    return user


def _when(text: str | None) -> str:
    return text[:19] if text else "-"


@users.command("create")
@click.argument("name")
@click.option("--role", required=True, metavar="ROLE", help=ROLE_HELP)
@password_stdin_option
@_guard
def users_create_command(name, role, password_stdin):
    """Create user NAME with ROLE and a password (the first admin, too: the setup link then ends)."""
    with _connection() as conn:
        check_name(name)  # each refusal before asking for a password, not after
        check_role(role)
        if get_by_name(conn, name) is not None:
            raise AccountError("conflict", f"there is already a user named {name!r}")
        user = create_user(conn, name, role, cli_actor(), password=_password(password_stdin))
    setup.forget_setup(current_app.instance_path)  # a user exists: the setup link has done its work
    click.echo(f"created user {user.name} ({user.role})")


@users.command("list")
@_guard
def users_list_command():
    """List every user: name, role, status, created, last sign-in (UTC)."""
    with _connection() as conn:
        rows = list_users(conn)
    click.echo(f"{'name':<24} {'role':<9} {'status':<9} {'created (UTC)':<19}  last sign-in (UTC)")
    for u in rows:
        click.echo(f"{u.name:<24} {u.role:<9} {'active' if u.active else 'disabled':<9} {_when(u.created_at):<19}  "
                   f"{_when(u.last_sign_in_at)}")


@users.command("set-role")
@click.argument("name")
@click.argument("role")
@_guard
def users_set_role_command(name, role):
    """Give user NAME the role ROLE (viewer, operator or admin)."""
    with _connection() as conn:
        before = _user(conn, name)
        user = set_role(conn, name, role, cli_actor())
    click.echo(f"{user.name} is already {user.role}" if before.role == user.role
               else f"{user.name}: {before.role} → {user.role}")


@users.command("disable")
@click.argument("name")
@_guard
def users_disable_command(name):
    """Disable user NAME: their sessions and API tokens stop working at once."""
    with _connection() as conn:
        user = set_disabled(conn, name, True, cli_actor())
    click.echo(f"disabled {user.name}: their sessions and API tokens no longer work")


@users.command("enable")
@click.argument("name")
@_guard
def users_enable_command(name):
    """Enable user NAME again (they sign in anew; their tokens work again)."""
    with _connection() as conn:
        user = set_disabled(conn, name, False, cli_actor())
    click.echo(f"enabled {user.name}")


@users.command("set-password")
@click.argument("name")
@password_stdin_option
@_guard
def users_set_password_command(name, password_stdin):
    """Reset user NAME's password: every session of theirs ends."""
    with _connection() as conn:
        _user(conn, name)  # before asking for a password, not after
        user = set_password(conn, name, _password(password_stdin), cli_actor())
    click.echo(f"set a new password for {user.name}; their sessions have ended")


@users.command("setup-link")
@click.option("--base-url", metavar="URL", default=None,
              help="Where Sluice is reached (default: $SLUICE_BASE_URL, or http://127.0.0.1:5000).")
@_guard
def users_setup_link_command(base_url):
    """Print the one-time link that creates the first administrator, while there is no user."""
    with _connection() as conn:
        exists = bool(count_users(conn))
    if exists:
        click.echo("users exist; sign in", err=True)
        return
    click.echo(setup.setup_link(current_app.instance_path, base_url))


@tokens.command("create")
@click.option("--user", "user_name", required=True, metavar="NAME", help="The token's user.")
@click.option("--name", "label", required=True, metavar="LABEL", help="What the token is for (1 to 64 characters).")
@click.option("--role", default=None, metavar="ROLE", help="At most the user's role (default: theirs).")
@click.option("--expires-days", type=int, default=None, metavar="N", help="Expire after N days (default: never).")
@_guard
def tokens_create_command(user_name, label, role, expires_days):
    """Create an API token and print it alone on standard output: it is shown this once."""
    with _connection() as conn:
        user = _user(conn, user_name)
        if not user.active:
            raise AccountError("conflict", f"user {user.name} is disabled: their tokens would not work")
        secret, token = create_token(conn, user, label, cli_actor(), role=role, expires_days=expires_days)
    click.echo(secret)
    click.echo(f"created token {token.id} {token.name!r} for {token.user_name} ({token.role}, "
               + (f"expires {token.expires_at[:19]} UTC" if token.expires_at else "never expires")
               + "); it is not shown again", err=True)


@tokens.command("list")
@click.option("--user", "user_name", default=None, metavar="NAME", help="Only this user's tokens.")
@_guard
def tokens_list_command(user_name):
    """List API tokens, newest first (never their secret: only their first characters)."""
    with _connection() as conn:
        user_id = _user(conn, user_name).id if user_name else None
        rows = list_tokens(conn, user_id)
    now = now_text()
    click.echo(f"{'id':>6}  {'user':<24} {'name':<24} {'role':<9} {'token':<14} {'status':<8} "
               f"{'created (UTC)':<19}  {'last used (UTC)':<19}  expires (UTC)")
    for t in rows:
        status = ("revoked" if t.revoked_at else "expired" if t.expires_at and t.expires_at <= now else "active")
        click.echo(f"{t.id:>6}  {t.user_name:<24} {t.name:<24} {t.role:<9} {t.hint + '…':<14} {status:<8} "
                   f"{_when(t.created_at):<19}  {_when(t.last_used_at):<19}  {_when(t.expires_at)}")


@tokens.command("revoke")
@click.argument("token_id", metavar="ID", type=int)
@_guard
def tokens_revoke_command(token_id):
    """Revoke API token ID: it stops working at once."""
    with _connection() as conn:
        before = get_token(conn, token_id)
        token = revoke_token(conn, token_id, cli_actor())
    if before is not None and before.revoked_at:
        click.echo(f"token {token.id} {token.name!r} of {token.user_name} was already revoked "
                   f"({_when(token.revoked_at)} UTC)")
    else:
        click.echo(f"revoked token {token.id} {token.name!r} of {token.user_name}")
