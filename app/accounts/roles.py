"""The three roles, each including the one before: viewer < operator < admin (SPEC §11)."""

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
ROLES = (VIEWER, OPERATOR, ADMIN)
WHAT_EACH_MAY = {
    VIEWER: "every page and read endpoint, exports",
    OPERATOR: "a viewer's, and uploads, cancel, retry, reprocess, discard, reopen, watermark set and reset",
    ADMIN: "an operator's, and users, every API token, datasets and their shapes, the audit log",
}


def rank(role: str) -> int:
    """The role's place in ROLES (0 for viewer); ValueError for a name that is not a role."""
    try:
        return ROLES.index(role)
    except ValueError:
        raise ValueError(f"{role!r} is not a role; a role is one of {', '.join(ROLES)}") from None


def at_least(role: str | None, needed: str) -> bool:
    """Whether `role` includes `needed` (admin includes operator includes viewer); None includes nothing."""
    return role in ROLES and rank(role) >= rank(needed)
