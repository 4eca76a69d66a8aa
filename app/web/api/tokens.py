"""API tokens over the API (SPEC §11): make one (its secret answered once), list and revoke them.

Every user manages their own tokens; an administrator also lists (`?all=true`) and revokes every user's.
"""
from flask import jsonify, url_for
from flask_login import current_user

from ...accounts.roles import ADMIN
from ...accounts.tokens import TokenRow, revoke_token
from ...accounts.users import AccountError
from ...extensions import db
from ..account import new_token, visible_tokens
from ..auth import VIEWER, current_actor, requires
from . import account_schemas as schemas
from .blueprint import ApiError, bp, errors

# An AccountError's code → the API's status (ACCOUNTS.md).
STATUS = {"invalid": 400, "conflict": 409, "not_found": 404, "forbidden": 403}


def token_json(token: TokenRow) -> dict:
    """A token as the API shows it (never its secret)."""
    return {"id": token.id, "user": token.user_name, "name": token.name, "role": token.role, "hint": token.hint,
            "created_at": token.created_at, "expires_at": token.expires_at, "last_used_at": token.last_used_at,
            "revoked_at": token.revoked_at, "revoked_by": token.revoked_by,
            "url": url_for("api.revoke_api_token", token_id=token.id)}


def _refused(exc: AccountError) -> ApiError:
    return ApiError(STATUS.get(exc.code, 400), exc.code, str(exc))


@bp.post("/tokens")
@requires(VIEWER)
@bp.arguments(schemas.TokenBody, as_kwargs=True)
@bp.response(201, schemas.NewToken, description="The new token with its secret (`token`), shown this once.")
@errors(400, 403, 413, 415, 503)
def create_api_token(name: str, role: str | None = None, expires_days: int | None = None):
    """Make a token acting as you, with a role at most yours (default yours) and an optional expiry."""
    with db.engine.connect() as conn:
        try:
            secret, token = new_token(conn, name, role, expires_days)
        except AccountError as exc:
            raise _refused(exc) from None
    response = jsonify({**token_json(token), "token": secret})
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/tokens")
@requires(VIEWER)
@bp.arguments(schemas.TokensQuery, location="query", as_kwargs=True)
@bp.response(200, schemas.TokenList, description="Your tokens (an administrator's `?all=true`: every "
                                                  "user's), newest first, revoked ones included.")
@errors(400, 403, 503)
def list_api_tokens(every: bool):
    """List your tokens with their last use; an administrator lists every user's with `?all=true`."""
    if every and not current_user.can(ADMIN):
        raise ApiError(403, "forbidden", "only an administrator lists every user's tokens")
    with db.engine.connect() as conn:
        tokens = visible_tokens(conn, every)
    return jsonify({"items": [token_json(t) for t in tokens], "next": None})


@bp.delete("/tokens/<int:token_id>")
@requires(VIEWER)
@bp.response(200, schemas.Token, description="The token, revoked (revoking it again changes nothing).")
@errors(404, 503)
def revoke_api_token(token_id: int):
    """Revoke one of your tokens (an administrator: anyone's); another user's is not found (404)."""
    owner = None if current_user.can(ADMIN) else current_user.id
    with db.engine.connect() as conn:
        try:
            token = revoke_token(conn, token_id, current_actor(), user_id=owner)
        except AccountError as exc:
            raise _refused(exc) from None
    return jsonify(token_json(token))
