"""The audit log's API models: the query (the page's filter, a keyset page) and the entries it answers."""
from marshmallow import Schema, fields, validate

from ...accounts import audit
from ..audit import AuditView
from .schemas import CURSOR_PATTERN, TIME, PageQuery


class AuditQuery(AuditView, PageQuery):
    pass


def _str(**kwargs) -> fields.String:
    return fields.String(required=True, **kwargs)


def _maybe(**kwargs) -> fields.String:
    return fields.String(required=True, allow_none=True, **kwargs)


class AuditEntry(Schema):
    """One entry of the audit log: who did what, on which object, when, from where."""

    id = fields.Integer(required=True)
    at = _str(metadata={"description": TIME})
    action = _str(validate=validate.OneOf(list(audit.ACTIONS)))
    action_words = _str(metadata={"description": "The action in words, as the audit page shows it."})
    actor = _str(metadata={"description": "Who: a user name, `NAME (token LABEL)` for a token, `cli:<os user>` for "
                                          "the command line, `anonymous` before sign-in (a failed sign-in)."})
    user_name = _maybe(metadata={"description": "The acting user's name, lower case; null for the command line "
                                                "and anonymous entries."})
    token_id = fields.Integer(required=True, allow_none=True,
                              metadata={"description": "The API token the user acted through, if any."})
    address = _maybe(metadata={"description": "The client's address (web and API)."})
    object_type = _maybe(metadata={"description": "run, dead_letter, dead_letters (a bulk action), watermark, "
                                                  "dataset, user or token."})
    object_id = _maybe(metadata={"description": "The object's id or name (as text)."})
    dataset = _maybe(metadata={"description": "The dataset the action was on, if any."})
    detail = fields.Raw(required=True, metadata={
        "description": "What else the entry says: a line of text, or the object or list it was recorded as.",
        "anyOf": [{"type": "string"}, {"type": "object"}, {"type": "array"}]})


class AuditPage(Schema):
    items = fields.List(fields.Nested(AuditEntry), required=True)
    next = _maybe(metadata={"pattern": CURSOR_PATTERN,
                            "description": "Pass as `cursor` for the next page; null on the last."})
