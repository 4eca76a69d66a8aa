"""The API's models of API tokens (SPEC §11): the body that makes one, the query that lists them, the answers."""
from marshmallow import EXCLUDE, Schema, fields, validate

from ...accounts.roles import ROLES
from ...accounts.tokens import MAX_EXPIRY_DAYS, PREFIX
from ..filters import Flag, Int, text
from .schemas import TIME

ROLE = {"type": "string", "enum": list(ROLES)}


class TokensQuery(Schema):
    class Meta:
        unknown = EXCLUDE

    every = Flag(data_key="all", load_default=False, metadata={"description": "An administrator's: every user's tokens "
                                                                              "(else only one's own)."})


# The white space Python's str.strip() removes, spelled out: a name needs one character besides it and NUL.
_SPACE = "\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NAME_PATTERN = f"^[^\x00]*[^\x00{_SPACE}][^\x00]*$"


class TokenBody(Schema):
    name = text(64, required=True, metadata={"pattern": NAME_PATTERN, "description": "What the token is for "
                                             "(`deploy`, `nightly export`); surrounding white space is dropped."})
    role = fields.String(validate=validate.OneOf(ROLES), metadata={
        "description": "At most your own role (403 above it); absent: your role."})
    expires_days = Int(allow_none=True, validate=validate.Range(1, MAX_EXPIRY_DAYS),
                       metadata={"description": "Days until it stops working; absent or null: never."})


def _time(**kwargs) -> fields.String:
    return fields.String(required=True, metadata={"description": TIME}, **kwargs)


class Token(Schema):
    """A token as lists show it: never its secret, only its first characters (`hint`)."""

    id = fields.Integer(required=True)
    user = fields.String(required=True, metadata={"description": "The user it acts as."})
    name = fields.String(required=True)
    role = fields.String(required=True, metadata=ROLE)
    hint = fields.String(required=True, metadata={"description": f"Its first characters (`{PREFIX}` and 4)."})
    created_at = _time()
    expires_at = _time(allow_none=True)
    last_used_at = fields.String(required=True, allow_none=True,
                                 metadata={"description": f"{TIME}; recorded at most once a minute."})
    revoked_at = _time(allow_none=True)
    revoked_by = fields.String(required=True, allow_none=True)
    url = fields.String(required=True)


class NewToken(Token):
    """A token just made, with its secret: this answer is the only time it is shown."""

    token = fields.String(required=True, metadata={
        "description": f"The secret (`{PREFIX}` and 43 characters): send it as `Authorization: Bearer <token>`."})


class TokenList(Schema):
    items = fields.List(fields.Nested(Token), required=True)
    next = fields.Raw(required=True, metadata={"type": "null"})
