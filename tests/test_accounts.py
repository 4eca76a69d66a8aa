"""Accounts core (SPEC §11): roles and the last administrator, sessions that end, passwords, API tokens."""
import json
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.accounts.actor import Actor
from app.accounts.tokens import authenticate_token, create_token, get_token, revoke_token
from app.accounts.users import (
    AccountError,
    authenticate,
    change_password,
    create_user,
    get_by_name,
    list_users,
    load_session_user,
    set_disabled,
    set_password,
    set_role,
)
from app.models import ApiToken, AuditEntry, User
from app.pipeline.validate import utc_now

from .conftest import PASSWORD

BOSS = Actor(label="boss", user_id=None, user_name="boss")
NEW_PASSWORD = "a quite different passphrase"


@pytest.fixture
def user(conn, password_hash):
    """`user(name, role)`: a user with the password PASSWORD."""
    def _make(name: str, role: str = "viewer"):
        return create_user(conn, name, role, Actor(label="test"), password_hash=password_hash)
    return _make


def audit(conn, action: str) -> list:
    """The audit entries of `action`, oldest first."""
    with conn.begin():
        return conn.execute(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)).all()


def ago(**delta) -> str:
    return (utc_now() - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%S.%f")


def set_token(conn, token_id: int, **values) -> None:
    with conn.begin():
        conn.execute(update(ApiToken).where(ApiToken.id == token_id).values(**values))


# --- users and roles --------------------------------------------------------------------------------

def test_users_are_listed_by_name_without_regard_to_case(conn, user):
    for name in ("carol", "Alice", "bob"):
        user(name)
    assert [u.name for u in list_users(conn)] == ["Alice", "bob", "carol"]


def test_set_role_changes_the_role_and_audits_from_and_to(conn, user):
    user("root", "admin")
    user("alice", "viewer")
    changed = set_role(conn, "ALICE", "operator", BOSS)
    assert changed.role == "operator" and get_by_name(conn, "alice").role == "operator"
    (entry,) = audit(conn, "user_set_role")
    assert (entry.actor, entry.object_type, entry.object_id) == ("boss", "user", "alice")
    assert json.loads(entry.detail) == {"from": "viewer", "to": "operator"}


def test_setting_the_same_role_changes_nothing_and_is_not_audited(conn, user):
    user("alice", "operator")
    assert set_role(conn, "alice", "operator", BOSS).role == "operator"
    assert audit(conn, "user_set_role") == []


def test_the_last_active_admin_keeps_the_role(conn, user):
    user("root", "admin")
    with pytest.raises(AccountError) as refused:
        set_role(conn, "root", "operator", BOSS)
    assert refused.value.code == "conflict" and "last active administrator" in str(refused.value)
    assert get_by_name(conn, "root").role == "admin"


def test_a_disabled_admin_does_not_count_as_the_other_admin(conn, user):
    user("root", "admin")
    user("old", "admin")
    set_disabled(conn, "old", True, BOSS)
    with pytest.raises(AccountError, match="last active administrator"):
        set_role(conn, "root", "viewer", BOSS)
    with pytest.raises(AccountError, match="last active administrator"):
        set_disabled(conn, "root", True, BOSS)
    set_disabled(conn, "old", False, BOSS)
    assert set_role(conn, "root", "viewer", BOSS).role == "viewer"  # "old" is an active admin again


@pytest.mark.parametrize(("name", "role", "code"), [("nobody", "viewer", "not_found"),
                                                    ("alice", "owner", "invalid")])
def test_set_role_refuses_an_unknown_user_or_role(conn, user, name, role, code):
    user("alice")
    with pytest.raises(AccountError) as refused:
        set_role(conn, name, role, BOSS)
    assert refused.value.code == code


def test_a_demoted_users_tokens_lose_the_role_they_no_longer_have(conn, user):
    user("root", "admin")
    alice = user("alice", "admin")
    secret, _ = create_token(conn, alice, "deploy", BOSS)
    set_role(conn, "alice", "viewer", BOSS)
    token, _ = authenticate_token(conn, secret)
    assert token.role == "viewer"


# --- sessions and passwords -------------------------------------------------------------------------

def test_disabling_ends_every_session_and_enabling_brings_none_back(conn, user):
    alice = user("alice")
    assert load_session_user(conn, alice.session_id()) == alice
    set_disabled(conn, "alice", True, BOSS)
    assert load_session_user(conn, alice.session_id()) is None
    assert authenticate(conn, "alice", PASSWORD) is None
    again = set_disabled(conn, "alice", False, BOSS)
    assert load_session_user(conn, alice.session_id()) is None
    assert load_session_user(conn, again.session_id()) == again
    assert [e.action for e in audit(conn, "user_disable") + audit(conn, "user_enable")] == [
        "user_disable", "user_enable"]


def test_change_password_ends_other_sessions_and_returns_the_new_one(conn, user):
    alice = user("alice")
    changed = change_password(conn, alice.id, PASSWORD, NEW_PASSWORD, Actor.of_user(alice.id, "alice"))
    assert load_session_user(conn, alice.session_id()) is None
    assert load_session_user(conn, changed.session_id()) == changed
    assert authenticate(conn, "alice", PASSWORD) is None
    assert authenticate(conn, "alice", NEW_PASSWORD).id == alice.id
    (entry,) = audit(conn, "password_change")
    assert (entry.actor, entry.object_id, entry.user_id) == ("alice", "alice", alice.id)


def test_change_password_refuses_a_wrong_current_password(conn, user):
    alice = user("alice")
    with pytest.raises(AccountError) as refused:
        change_password(conn, alice.id, "not my password", NEW_PASSWORD, BOSS)
    assert refused.value.code == "invalid" and "current password" in str(refused.value)
    assert load_session_user(conn, alice.session_id()) == alice
    assert authenticate(conn, "alice", PASSWORD) is not None
    assert audit(conn, "password_change") == []


def test_change_password_refuses_a_short_new_password(conn, user):
    alice = user("alice")
    with pytest.raises(AccountError) as refused:
        change_password(conn, alice.id, PASSWORD, "short", BOSS)
    assert refused.value.code == "invalid" and "at least 8" in str(refused.value)
    assert authenticate(conn, "alice", PASSWORD) is not None


def test_set_password_resets_it_ends_sessions_and_is_audited_as_a_reset(conn, user):
    alice = user("alice")
    set_password(conn, "alice", NEW_PASSWORD, BOSS)
    assert load_session_user(conn, alice.session_id()) is None
    assert authenticate(conn, "alice", NEW_PASSWORD) is not None
    (entry,) = audit(conn, "password_change")
    assert (entry.actor, entry.object_id, json.loads(entry.detail)) == ("boss", "alice", {"by": "reset"})
    with pytest.raises(AccountError) as refused:
        set_password(conn, "nobody", NEW_PASSWORD, BOSS)
    assert refused.value.code == "not_found"


@pytest.mark.parametrize(("name", "password"), [("alice", "wrong password"), ("nobody", PASSWORD),
                                                ("alice", ""), ("x" * 500, PASSWORD)])
def test_authenticate_refuses_a_wrong_password_or_unknown_user(conn, user, name, password):
    user("alice")
    assert authenticate(conn, name, password) is None


def test_authenticate_finds_the_name_in_any_case(conn, user):
    alice = user("Alice")
    assert authenticate(conn, "aLICE", PASSWORD).id == alice.id


def test_the_stored_password_is_an_argon2id_hash_never_the_password(conn):
    create_user(conn, "alice", "viewer", BOSS, password=NEW_PASSWORD)
    with conn.begin():
        stored = conn.execute(select(User.password_hash).where(User.name == "alice")).scalar_one()
    assert stored.startswith("$argon2id$") and NEW_PASSWORD not in stored


# --- API tokens --------------------------------------------------------------------------------------

def test_a_token_cannot_have_a_role_above_its_users(conn, user):
    alice = user("alice", "operator")
    with pytest.raises(AccountError) as refused:
        create_token(conn, alice, "too much", BOSS, role="admin")
    assert refused.value.code == "forbidden"
    secret, _ = create_token(conn, alice, "less", BOSS, role="viewer")
    assert authenticate_token(conn, secret)[0].role == "viewer"


def test_an_expired_token_no_longer_authenticates(conn, user):
    secret, token = create_token(conn, user("alice"), "soon", BOSS, expires_days=1)
    assert authenticate_token(conn, secret) is not None
    set_token(conn, token.id, expires_at=ago(seconds=1))
    assert authenticate_token(conn, secret) is None


def test_a_revoked_token_no_longer_authenticates(conn, user):
    secret, token = create_token(conn, user("alice"), "ci", BOSS)
    revoked = revoke_token(conn, token.id, BOSS)
    assert revoked.revoked_by == "boss"
    assert authenticate_token(conn, secret) is None
    revoke_token(conn, token.id, BOSS)  # again: nothing changes, nothing more is audited
    assert len(audit(conn, "token_revoke")) == 1


def test_a_disabled_users_token_no_longer_authenticates(conn, user):
    secret, _ = create_token(conn, user("alice"), "ci", BOSS)
    set_disabled(conn, "alice", True, BOSS)
    assert authenticate_token(conn, secret) is None
    set_disabled(conn, "alice", False, BOSS)
    assert authenticate_token(conn, secret) is not None


@pytest.mark.parametrize("secret", ["", "sluice_", "sluice_" + "A" * 43, "Bearer x", "sluice_" + "é" * 43])
def test_an_unknown_token_does_not_authenticate(conn, user, secret):
    create_token(conn, user("alice"), "ci", BOSS)
    assert authenticate_token(conn, secret) is None


def test_last_use_is_written_at_most_once_a_minute(conn, user):
    secret, token = create_token(conn, user("alice"), "ci", BOSS)
    assert token.last_used_at is None
    authenticate_token(conn, secret)
    assert get_token(conn, token.id).last_used_at is not None
    recent = ago(seconds=30)
    set_token(conn, token.id, last_used_at=recent)
    authenticate_token(conn, secret)
    assert get_token(conn, token.id).last_used_at == recent  # used 30 s ago: not written again
    stale = ago(minutes=2)
    set_token(conn, token.id, last_used_at=stale)
    authenticate_token(conn, secret)
    assert get_token(conn, token.id).last_used_at > recent  # two minutes ago: written now
