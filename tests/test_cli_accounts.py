"""`flask --app app users …` and `tokens …` (SPEC §11): every command, one-line errors, the CLI's actor."""
import json
from pathlib import Path

import pytest
from sqlalchemy import select, update

from app import create_app
from app.accounts.actor import os_user
from app.accounts.tokens import authenticate_token
from app.accounts.users import authenticate, get_by_name, load_session_user
from app.models import ApiToken, AuditEntry

from .conftest import PASSWORD
from .test_cli import one_error_line

CLI = f"cli:{os_user()}"
NEW_PASSWORD = "a quite different passphrase"


def cli(runner, *args, input=None):
    return runner.invoke(args=list(map(str, args)), input=input)


def ok(result) -> list[str]:
    """The lines a successful command printed on standard output."""
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


@pytest.fixture
def db(app):
    """A connection to the CLI app's database, for reading back what the commands did."""
    from app.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        yield conn


def entries(db, action: str) -> list:
    with db.begin():
        return db.execute(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)).all()


@pytest.fixture
def root(make_user):
    return make_user("root", "admin")


# --- users ----------------------------------------------------------------------------------------

def test_users_create_reads_the_password_from_stdin_and_is_audited_as_the_cli(runner, db):
    result = cli(runner, "users", "create", "Alice", "--role", "operator", "--password-stdin",
                 input=PASSWORD + "\n")
    assert ok(result) == ["created user Alice (operator)"]
    assert authenticate(db, "alice", PASSWORD).role == "operator"
    (entry,) = entries(db, "user_create")
    assert (entry.actor, entry.object_id, json.loads(entry.detail)) == (CLI, "Alice", {"role": "operator"})
    assert get_by_name(db, "alice").created_by == CLI


def test_users_create_asks_for_the_password_twice_at_a_prompt(runner, db):
    ok(cli(runner, "users", "create", "root", "--role", "admin", input=f"{PASSWORD}\n{PASSWORD}\n"))
    assert authenticate(db, "root", PASSWORD).role == "admin"


def test_the_first_user_from_the_cli_ends_the_setup_link(runner, app):
    token_file = Path(app.instance_path, "setup-token")
    assert token_file.exists()
    ok(cli(runner, "users", "create", "root", "--role", "admin", "--password-stdin", input=PASSWORD))
    assert not token_file.exists() and not Path(app.instance_path, "setup-link.txt").exists()


@pytest.mark.parametrize(("args", "input", "says"), [
    (["bad name", "--role", "admin"], PASSWORD, "a user name is"),
    (["alice", "--role", "owner"], PASSWORD, "a role is one of viewer, operator, admin"),
    (["alice", "--role", "admin"], "short", "at least 8 characters"),
    (["root", "--role", "admin"], PASSWORD, "there is already a user named 'root'"),
    (["ROOT", "--role", "viewer"], PASSWORD, "there is already a user named 'ROOT'"),
])
def test_users_create_refuses_in_one_line(runner, db, root, args, input, says):
    result = cli(runner, "users", "create", *args, "--password-stdin", input=input + "\n")
    assert says in one_error_line(result)
    assert entries(db, "user_create")[-1].object_id == "root"  # the fixture's, nothing after


def test_users_create_refuses_passwords_that_differ_at_the_prompt(runner, db):
    result = cli(runner, "users", "create", "root", "--role", "admin", input=f"{PASSWORD}\nsomething else\n")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert get_by_name(db, "root") is None


def test_users_list_shows_name_role_status_and_times(runner, db, root, make_user):
    make_user("bob", "viewer")
    ok(cli(runner, "users", "disable", "bob"))
    with db.begin():
        db.exec_driver_sql("UPDATE users SET last_sign_in_at = '2026-01-02T03:04:05.000000' WHERE name = 'root'")
    header, *rows = ok(cli(runner, "users", "list"))
    assert header.split()[:4] == ["name", "role", "status", "created"]
    assert [r.split()[:3] for r in rows] == [["bob", "viewer", "disabled"], ["root", "admin", "active"]]
    assert rows[1].split()[3:] == [root.created_at[:19], "2026-01-02T03:04:05"]
    assert rows[0].split()[-1] == "-"  # bob never signed in


def test_users_set_role(runner, db, root, make_user):
    make_user("bob", "viewer")
    assert ok(cli(runner, "users", "set-role", "bob", "operator")) == ["bob: viewer → operator"]
    assert ok(cli(runner, "users", "set-role", "bob", "operator")) == ["bob is already operator"]
    (entry,) = entries(db, "user_set_role")
    assert (entry.actor, json.loads(entry.detail)) == (CLI, {"from": "viewer", "to": "operator"})


@pytest.mark.parametrize(("args", "says"), [
    (["set-role", "root", "viewer"], "the last active administrator cannot get another role"),
    (["set-role", "nobody", "viewer"], "there is no user named 'nobody'"),
    (["set-role", "root", "god"], "a role is one of"),
    (["disable", "root"], "the last active administrator cannot be disabled"),
    (["disable", "nobody"], "there is no user named 'nobody'"),
    (["enable", "nobody"], "there is no user named 'nobody'"),
    (["set-password", "nobody", "--password-stdin"], "there is no user named 'nobody'"),
])
def test_user_changes_refuse_in_one_line(runner, db, root, args, says):
    assert says in one_error_line(cli(runner, "users", *args, input=NEW_PASSWORD + "\n"))
    assert get_by_name(db, "root") == root


def test_users_disable_and_enable_end_sessions_and_tokens(runner, db, root, make_user):
    bob = make_user("bob", "operator")
    secret = ok(cli(runner, "tokens", "create", "--user", "bob", "--name", "ci"))[0]
    assert ok(cli(runner, "users", "disable", "bob")) == ["disabled bob: their sessions and API tokens no longer work"]
    assert load_session_user(db, bob.session_id()) is None and authenticate_token(db, secret) is None
    assert ok(cli(runner, "users", "enable", "bob")) == ["enabled bob"]
    assert authenticate_token(db, secret) is not None
    assert [(e.action, e.actor) for e in entries(db, "user_disable") + entries(db, "user_enable")] == [
        ("user_disable", CLI), ("user_enable", CLI)]


def test_users_set_password_resets_it_and_ends_sessions(runner, db, root):
    result = cli(runner, "users", "set-password", "root", "--password-stdin", input=NEW_PASSWORD + "\r\n")
    assert ok(result) == ["set a new password for root; their sessions have ended"]
    assert load_session_user(db, root.session_id()) is None
    assert authenticate(db, "root", NEW_PASSWORD) is not None and authenticate(db, "root", PASSWORD) is None
    (entry,) = entries(db, "password_change")
    assert (entry.actor, entry.object_id, json.loads(entry.detail)) == (CLI, "root", {"by": "reset"})


def test_users_set_password_from_the_prompt(runner, db, root):
    ok(cli(runner, "users", "set-password", "root", input=f"{NEW_PASSWORD}\n{NEW_PASSWORD}\n"))
    assert authenticate(db, "root", NEW_PASSWORD) is not None


# --- the setup link --------------------------------------------------------------------------------

def test_users_setup_link_prints_the_link_while_no_user_exists(runner, app):
    link = ok(cli(runner, "users", "setup-link", "--base-url", "http://sluice.test:8080/"))
    token = Path(app.instance_path, "setup-token").read_text().strip()
    assert link == [f"http://sluice.test:8080/setup/{token}"]


def test_users_setup_link_says_sign_in_once_users_exist(runner, root):
    result = cli(runner, "users", "setup-link")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == "users exist; sign in\n"


# --- tokens ----------------------------------------------------------------------------------------

def test_tokens_create_prints_the_token_alone_and_it_authenticates(runner, db, root):
    result = cli(runner, "tokens", "create", "--user", "root", "--name", "deploy", "--role", "operator",
                 "--expires-days", "30")
    (secret,) = ok(result)
    assert result.stdout == secret + "\n"
    token, user = authenticate_token(db, secret)
    assert (token.name, token.role, user.name) == ("deploy", "operator", "root")
    assert token.expires_at is not None
    assert f"created token {token.id} 'deploy' for root (operator, expires" in result.stderr
    assert secret not in result.stderr
    (entry,) = entries(db, "token_create")
    assert (entry.actor, entry.object_id) == (CLI, str(token.id))


@pytest.mark.parametrize(("args", "says"), [
    (["--user", "nobody", "--name", "x"], "there is no user named 'nobody'"),
    (["--user", "viewer", "--name", "x", "--role", "operator"], "at most its user's (viewer)"),
    (["--user", "viewer", "--name", "x", "--role", "owner"], "a role is one of"),
    (["--user", "viewer", "--name", "x", "--expires-days", "0"], "expires after 1 to"),
    (["--user", "viewer", "--name", " "], "a token's name is 1 to 64 characters"),
    (["--user", "gone", "--name", "x"], "user gone is disabled"),
])
def test_tokens_create_refuses_in_one_line(runner, db, root, make_user, args, says):
    make_user("viewer", "viewer")
    make_user("gone", "viewer")
    ok(cli(runner, "users", "disable", "gone"))
    result = cli(runner, "tokens", "create", *args)
    assert says in one_error_line(result) and result.stdout == ""
    assert entries(db, "token_create") == []


def test_tokens_list_shows_each_token_but_never_its_secret(runner, db, root, make_user):
    make_user("bob", "viewer")
    root_secret = ok(cli(runner, "tokens", "create", "--user", "root", "--name", "deploy"))[0]
    bob_secret = ok(cli(runner, "tokens", "create", "--user", "bob", "--name", "report", "--expires-days", "1"))[0]
    old_secret = ok(cli(runner, "tokens", "create", "--user", "bob", "--name", "old"))[0]
    ok(cli(runner, "tokens", "revoke", "3"))
    with db.begin():  # token 2 expired a second ago
        db.execute(update(ApiToken).where(ApiToken.id == 2).values(expires_at="2000-01-01T00:00:00.000000"))
    authenticate_token(db, root_secret)
    listing = cli(runner, "tokens", "list")
    header, *rows = ok(listing)
    assert header.split()[:7] == ["id", "user", "name", "role", "token", "status", "created"]
    assert [r.split()[:6] for r in rows] == [
        ["3", "bob", "old", "viewer", old_secret[:11] + "…", "revoked"],
        ["2", "bob", "report", "viewer", bob_secret[:11] + "…", "expired"],
        ["1", "root", "deploy", "admin", root_secret[:11] + "…", "active"]]
    assert rows[2].split()[7] != "-" and rows[1].split()[7] == "-"  # root's token was used, bob's not
    assert not any(secret in listing.output for secret in (root_secret, bob_secret, old_secret))
    assert [r.split()[0] for r in ok(cli(runner, "tokens", "list", "--user", "BOB"))[1:]] == ["3", "2"]
    assert "there is no user named 'nobody'" in one_error_line(cli(runner, "tokens", "list", "--user", "nobody"))


def test_tokens_revoke_stops_the_token(runner, db, root):
    secret = ok(cli(runner, "tokens", "create", "--user", "root", "--name", "deploy"))[0]
    assert ok(cli(runner, "tokens", "revoke", "1")) == ["revoked token 1 'deploy' of root"]
    assert authenticate_token(db, secret) is None
    again = ok(cli(runner, "tokens", "revoke", "1"))
    assert again[0].startswith("token 1 'deploy' of root was already revoked")
    (entry,) = entries(db, "token_revoke")
    assert (entry.actor, entry.object_id) == (CLI, "1")
    assert "there is no token 9" in one_error_line(cli(runner, "tokens", "revoke", "9"))


def test_an_unreachable_database_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_INSTANCE_PATH", str(tmp_path / "instance"))
    broken = create_app({"TESTING": True, "SECRET_KEY": "test", "SLUICE_EMBEDDED_WORKER": False,
                         "SQLALCHEMY_DATABASE_URI": "sqlite:////nonexistent/dir/x.db"})
    runner = broken.test_cli_runner()
    for args in (["users", "list"], ["users", "setup-link"], ["users", "disable", "x"], ["tokens", "list"],
                 ["tokens", "create", "--user", "x", "--name", "y"], ["tokens", "revoke", "1"],
                 ["users", "create", "x", "--role", "admin", "--password-stdin"]):
        assert "the database is unreachable" in one_error_line(cli(runner, *args, input=PASSWORD)), args
