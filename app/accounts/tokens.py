"""API tokens: `sluice_` and 43 random characters, stored only as a SHA-256 hash, with a role ≤ their user's."""
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from ..database import brief_lock_wait, is_locked, reading, write_transaction
from ..models import ApiToken, User
from ..pipeline.validate import now_text, utc_now
from . import audit
from .actor import Actor
from .roles import at_least
from .users import USER_COLUMNS, AccountError, UserRow, check_role

PREFIX = "sluice_"  # recognisable by a secret scanner: `sluice_` + 43 characters of base64url
HINT_LENGTH = len(PREFIX) + 4
TOUCH_EVERY = timedelta(minutes=1)  # last use is written at most this often per token
MAX_EXPIRY_DAYS = 3650


@dataclass(frozen=True)
class TokenRow:
    """A token as lists show it (never its secret)."""

    id: int
    user_id: int
    user_name: str
    name: str
    role: str
    hint: str
    created_at: str
    expires_at: str | None
    last_used_at: str | None
    revoked_at: str | None
    revoked_by: str | None


_COLUMNS = [ApiToken.id, ApiToken.user_id, User.name.label("user_name"), ApiToken.name, ApiToken.role,
            ApiToken.hint, ApiToken.created_at, ApiToken.expires_at, ApiToken.last_used_at, ApiToken.revoked_at,
            ApiToken.revoked_by]


def secret_hash(secret: str) -> str:
    """The stored form of a token: SHA-256 hex (a token has 256 random bits, so no slow hash is needed)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def looks_like_token(text: str) -> bool:
    """Whether `text` has a token's form (checked before any database read)."""
    return isinstance(text, str) and text.startswith(PREFIX) and len(text) == len(PREFIX) + 43


def create_token(conn: Connection, user: UserRow, name: str, actor: Actor, *, role: str | None = None,
                 expires_days: int | None = None) -> tuple[str, TokenRow]:
    """Make a token for `user` (role at most theirs, default theirs), audit it, and return (secret, row).

    The secret is returned this once and never stored. AccountError when the name, role or expiry is refused.
    """
    name = (name or "").strip() if isinstance(name, str) else ""
    if not 1 <= len(name) <= 64:
        raise AccountError("invalid", "a token's name is 1 to 64 characters")
    role = check_role(role or user.role)
    if not at_least(user.role, role):
        raise AccountError("forbidden", f"a token's role is at most its user's ({user.role}), not {role}")
    if expires_days is not None and not (isinstance(expires_days, int) and 1 <= expires_days <= MAX_EXPIRY_DAYS):
        raise AccountError("invalid", f"a token expires after 1 to {MAX_EXPIRY_DAYS} days, or never")
    secret = PREFIX + secrets.token_urlsafe(32)
    now = now_text()
    expires = None if expires_days is None else (utc_now() + timedelta(days=expires_days)).strftime(
        "%Y-%m-%dT%H:%M:%S.%f")
    with write_transaction(conn, apply_lock=False):
        token_id = conn.execute(insert(ApiToken).values(
            user_id=user.id, name=name, role=role, secret_hash=secret_hash(secret), hint=secret[:HINT_LENGTH],
            created_at=now, expires_at=expires).returning(ApiToken.id)).scalar_one()
        audit.record(conn, "token_create", actor, object_type="token", object_id=token_id,
                     detail={"name": name, "user": user.name, "role": role, "expires_at": expires}, at=now)
    return secret, get_token(conn, token_id)


def get_token(conn: Connection, token_id: int) -> TokenRow | None:
    """The token with this id, or None."""
    with reading(conn):
        row = conn.execute(select(*_COLUMNS).join(User, User.id == ApiToken.user_id)
                           .where(ApiToken.id == token_id)).first()
    return None if row is None else TokenRow(**row._mapping)


def authenticate_token(conn: Connection, secret: str) -> tuple[TokenRow, UserRow] | None:
    """The live token and its active user for a bearer secret; None when unknown, revoked, expired or disabled.

    Records the token's last use at most once a minute, and never waits for the write lock to do it.
    """
    if not looks_like_token(secret):
        return None
    now = now_text()
    # One read for the token and its user: this runs on every request a script makes.
    user_columns = [c.label(f"u_{c.key}") for c in USER_COLUMNS]
    with reading(conn):
        row = conn.execute(select(*_COLUMNS, *user_columns).join(User, User.id == ApiToken.user_id)
                           .where(ApiToken.secret_hash == secret_hash(secret))).first()
    if row is None:
        return None
    values = row._mapping
    token = TokenRow(**{c: values[c] for c in TokenRow.__dataclass_fields__})
    user = UserRow(**{c.key: values[f"u_{c.key}"] for c in USER_COLUMNS})
    if token.revoked_at is not None or (token.expires_at is not None and token.expires_at <= now):
        return None
    if not user.active:
        return None
    _touch(conn, token, now)
    return token, user


def _touch(conn: Connection, token: TokenRow, now: str) -> None:
    since = (utc_now() - TOUCH_EVERY).strftime("%Y-%m-%dT%H:%M:%S.%f")
    if token.last_used_at is not None and token.last_used_at > since:
        return
    # Last use is a hint, not a record: on SQLite, while a run's apply holds the write lock, it is
    # skipped rather than making the request wait (the next request after the apply records it).
    try:
        with brief_lock_wait(conn, 50), write_transaction(conn, apply_lock=False):
            conn.execute(update(ApiToken).where(ApiToken.id == token.id, or_(
                ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= since)).values(last_used_at=now))
    except OperationalError as exc:
        if not is_locked(exc):
            raise


def list_tokens(conn: Connection, user_id: int | None = None) -> list[TokenRow]:
    """A user's tokens (every user's with None), newest first, revoked ones included."""
    query = select(*_COLUMNS).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id.desc())
    if user_id is not None:
        query = query.where(ApiToken.user_id == user_id)
    with reading(conn):
        return [TokenRow(**row._mapping) for row in conn.execute(query)]


def revoke_token(conn: Connection, token_id: int, actor: Actor, *, user_id: int | None = None) -> TokenRow:
    """Revoke a token (of `user_id` only, when given) and audit it; AccountError("not_found") otherwise.

    Revoking a revoked token changes nothing and is not audited again.
    """
    now = now_text()
    with write_transaction(conn, apply_lock=False):
        token = get_token(conn, token_id)
        if token is None or (user_id is not None and token.user_id != user_id):
            raise AccountError("not_found", f"there is no token {token_id}")
        if token.revoked_at is None:
            conn.execute(update(ApiToken).where(ApiToken.id == token_id)
                         .values(revoked_at=now, revoked_by=actor.label))
            audit.record(conn, "token_revoke", actor, object_type="token", object_id=token_id,
                         detail={"name": token.name, "user": token.user_name}, at=now)
        return get_token(conn, token_id)
