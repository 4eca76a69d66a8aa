"""Users: create, find, and the session id that ends every session when the password changes."""
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from ..database import reading, write_transaction
from ..models import ApiToken, User
from ..pipeline.validate import now_text
from . import audit, passwords
from .actor import Actor
from .roles import ADMIN, ROLES, rank

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class AccountError(ValueError):
    """A user or token change that cannot be made. `code`: invalid, conflict, not_found, forbidden."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class UserRow:
    """A user as the app sees it (never the password hash)."""

    id: int
    name: str
    role: str
    session_epoch: str
    disabled_at: str | None
    created_at: str
    created_by: str | None
    password_changed_at: str
    last_sign_in_at: str | None

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    def session_id(self) -> str:
        """The id a session stores: it stops matching once the password changes (a new epoch)."""
        return f"{self.id}.{self.session_epoch}"


USER_COLUMNS = [User.id, User.name, User.role, User.session_epoch, User.disabled_at, User.created_at,
            User.created_by, User.password_changed_at, User.last_sign_in_at]


def _row(row) -> UserRow | None:
    return None if row is None else UserRow(**row._mapping)


def check_name(name: str) -> str:
    """A user name as given, when it is 1–64 letters, digits, `.`, `_`, `@` or `-` starting with a letter or digit."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise AccountError("invalid", "a user name is 1 to 64 letters, digits, '.', '_', '@' or '-', "
                           "starting with a letter or a digit")
    return name


def check_role(role: str) -> str:
    """The role, when it is one (AccountError otherwise)."""
    if role not in ROLES:
        raise AccountError("invalid", f"a role is one of {', '.join(ROLES)}, not {str(role)[:40]!r}")
    return role


def count_users(conn: Connection) -> int:
    """How many users exist (disabled ones included)."""
    with reading(conn):
        return conn.execute(select(func.count()).select_from(User)).scalar_one()


def get_user(conn: Connection, user_id: int) -> UserRow | None:
    """The user with this id, or None."""
    with reading(conn):
        return _row(conn.execute(select(*USER_COLUMNS).where(User.id == user_id)).first())


def get_by_name(conn: Connection, name: str) -> UserRow | None:
    """The user with this name (any case), or None."""
    if not isinstance(name, str) or len(name) > 64:
        return None
    with reading(conn):
        return _row(conn.execute(select(*USER_COLUMNS).where(User.name_key == name.lower())).first())


def load_session_user(conn: Connection, session_id: str) -> UserRow | None:
    """The active user whose session id this is (`<id>.<epoch>`); None when it is stale, disabled or unknown."""
    user_id, _, epoch = str(session_id).partition(".")
    if not (user_id.isascii() and user_id.isdigit() and len(user_id) <= 18 and epoch):
        return None
    user = get_user(conn, int(user_id))
    if user is None or not user.active or not secrets.compare_digest(user.session_epoch, epoch):
        return None
    return user


def create_user(conn: Connection, name: str, role: str, actor: Actor, *, password: str | None = None,
                password_hash: str | None = None, action: str = "user_create",
                guard: Callable[[Connection], None] | None = None) -> UserRow:
    """Create a user with a password (or an Argon2 hash of one) and audit it; AccountError when it cannot be made.

    `action` is `setup` for the first administrator made through the setup link, whose `guard` refuses
    (AccountError) inside the insert's transaction, once no other writer can add a user before it commits.
    """
    check_name(name)
    check_role(role)
    if password_hash is None:
        password_hash = _new_hash(password)
    now = now_text()
    with write_transaction(conn, apply_lock=False):
        if guard is not None:
            _lock_users(conn)
            guard(conn)
        if conn.execute(select(User.id).where(User.name_key == name.lower())).first() is not None:
            raise AccountError("conflict", f"there is already a user named {name!r}")
        user_id = conn.execute(insert(User).values(
            name=name, name_key=name.lower(), role=role, password_hash=password_hash,
            session_epoch=_new_epoch(), created_at=now, created_by=actor.label,
            password_changed_at=now).returning(User.id)).scalar_one()
        audit.record(conn, action, actor, object_type="user", object_id=name, detail={"role": role}, at=now)
    return get_user(conn, user_id)


def list_users(conn: Connection) -> list[UserRow]:
    """Every user, disabled ones included, by name (without regard to case)."""
    with reading(conn):
        return [_row(row) for row in conn.execute(select(*USER_COLUMNS).order_by(User.name_key))]


def authenticate(conn: Connection, name: str, password: str) -> UserRow | None:
    """The active user with this name and password, or None; the sign-in time is recorded by the caller.

    A hash made with weaker parameters than today's is replaced by a new one.
    """
    with reading(conn):
        found = conn.execute(select(User.id, User.password_hash, User.disabled_at)
                             .where(User.name_key == str(name).lower()[:64])).first()
    if not passwords.verify(found.password_hash if found else None, password) or found.disabled_at:
        return None
    if passwords.needs_rehash(found.password_hash):
        with write_transaction(conn, apply_lock=False):
            conn.execute(update(User).where(User.id == found.id)
                         .values(password_hash=passwords.hash_password(password)))
    return get_user(conn, found.id)


def _new_hash(password: str) -> str:
    try:
        return passwords.hash_password(password)
    except passwords.PasswordError as exc:
        raise AccountError("invalid", str(exc)) from None


def _new_epoch() -> str:
    return secrets.token_hex(8)


def _lock_users(conn: Connection) -> None:
    # SQLite's write transaction already holds the only write lock; PostgreSQL's lets another insert
    # a user meanwhile, so a check of "no user yet" would not hold until the commit without this.
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")


def _active_admins(conn: Connection) -> int:
    # FOR UPDATE (PostgreSQL): two administrators demoting or disabling each other at once are
    # taken one after the other, so the second sees the first's change and at least one admin remains.
    return len(conn.execute(select(User.id).where(User.role == ADMIN, User.disabled_at.is_(None))
                            .with_for_update()).all())


def _find(conn: Connection, name: str):
    """The user named `name` (id, name, role, disabled_at) in the caller's transaction; AccountError otherwise."""
    user = conn.execute(select(User.id, User.name, User.role, User.disabled_at)
                        .where(User.name_key == str(name).lower()[:64])).first()
    if user is None:
        raise AccountError("not_found", f"there is no user named {str(name)[:64]!r}")
    return user


def set_disabled(conn: Connection, name: str, disabled: bool, actor: Actor) -> UserRow:
    """Disable a user (every session and token stops at its next request) or enable them again; audited.

    A disabled user's sessions do not come back when they are enabled again: each needs a new sign-in.
    AccountError: not_found, or conflict for the last active administrator.
    """
    now = now_text()
    with write_transaction(conn, apply_lock=False):
        user = _find(conn, name)
        if disabled and user.disabled_at is None and user.role == ADMIN and _active_admins(conn) == 1:
            raise AccountError("conflict", "the last active administrator cannot be disabled")
        if disabled == (user.disabled_at is not None):
            return get_user(conn, user.id)  # nothing to change, nothing to audit
        conn.execute(update(User).where(User.id == user.id).values(
            disabled_at=now if disabled else None, session_epoch=_new_epoch()))
        audit.record(conn, "user_disable" if disabled else "user_enable", actor, object_type="user",
                     object_id=user.name, at=now)
        return get_user(conn, user.id)


def set_role(conn: Connection, name: str, role: str, actor: Actor) -> UserRow:
    """Give a user another role, audited with {"from", "to"}; the same role changes nothing and is not audited.

    The user's tokens above the new role are lowered to it (a token's role is at most its user's).
    AccountError: invalid role, not_found, or conflict when no active administrator would remain.
    """
    check_role(role)
    now = now_text()
    with write_transaction(conn, apply_lock=False):
        user = _find(conn, name)
        if user.role == role:
            return get_user(conn, user.id)
        if user.role == ADMIN and user.disabled_at is None and _active_admins(conn) == 1:
            raise AccountError("conflict", "the last active administrator cannot get another role")
        conn.execute(update(User).where(User.id == user.id).values(role=role))
        above = [r for r in ROLES if rank(r) > rank(role)]
        conn.execute(update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.role.in_(above))
                     .values(role=role))
        audit.record(conn, "user_set_role", actor, object_type="user", object_id=user.name,
                     detail={"from": user.role, "to": role}, at=now)
        return get_user(conn, user.id)


def change_password(conn: Connection, user_id: int, current: str, new: str, actor: Actor) -> UserRow:
    """Change one's own password, given the current one; every session ends; audited (password_change).

    Returns the user with their new session id, for the caller to sign its own session in again.
    AccountError: not_found, or invalid when the current password is wrong or the new one is refused.
    """
    with reading(conn):
        found = conn.execute(select(User.name, User.password_hash).where(User.id == user_id)).first()
    if found is None:
        raise AccountError("not_found", f"there is no user {user_id}")
    if not passwords.verify(found.password_hash, current):
        raise AccountError("invalid", "the current password is wrong")
    return _replace_password(conn, found.name, new, actor, detail="")


def set_password(conn: Connection, name: str, new: str, actor: Actor) -> UserRow:
    """Reset a user's password (an administrator's, from the command line); every session ends; audited.

    AccountError: not_found, or invalid when the new password is refused.
    """
    return _replace_password(conn, name, new, actor, detail={"by": "reset"})


def _replace_password(conn: Connection, name: str, new: str, actor: Actor, *, detail) -> UserRow:
    password_hash = _new_hash(new)  # before the write lock: hashing takes a while on purpose
    now = now_text()
    with write_transaction(conn, apply_lock=False):
        user = _find(conn, name)
        conn.execute(update(User).where(User.id == user.id).values(
            password_hash=password_hash, password_changed_at=now, session_epoch=_new_epoch()))
        audit.record(conn, "password_change", actor, object_type="user", object_id=user.name, detail=detail,
                     at=now)
        return get_user(conn, user.id)
