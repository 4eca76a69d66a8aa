"""The audit log: one entry per state-changing action, written in the transaction of the action itself."""
import json

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from ..models import AuditEntry
from ..pipeline.validate import now_text
from .actor import Actor

# Every action the log records (SPEC §11), with the words the audit page uses for it.
ACTIONS = {
    "sign_in": "signed in",
    "sign_in_failed": "failed to sign in",
    "sign_in_throttled": "was throttled signing in",
    "sign_out": "signed out",
    "setup": "created the first administrator",
    "password_change": "changed their password",
    "upload": "uploaded a file",
    "run_cancel": "cancelled a run",
    "run_retry": "retried a run",
    "reprocess": "reprocessed dead letters",
    "discard": "discarded dead letters",
    "reopen": "reopened dead letters",
    "watermark_set": "set a watermark",
    "watermark_reset": "reset a watermark",
    "dataset_create": "created a dataset",
    "dataset_evolve": "changed a dataset",
    "dataset_archive": "archived a dataset",
    "user_create": "created a user",
    "user_set_role": "set a user's role",
    "user_disable": "disabled a user",
    "user_enable": "enabled a user",
    "token_create": "created an API token",
    "token_revoke": "revoked an API token",
}
MAX_DETAIL = 4000  # characters: a bulk action's ids are summarised beyond this


def entry(action: str, actor: Actor, *, object_type: str | None = None, object_id=None,
          dataset: str | None = None, detail="", at: str | None = None) -> dict:
    """The row of an audit entry; `detail` is a line of text, or a dict/list written as JSON."""
    if action not in ACTIONS:
        raise ValueError(f"{action!r} is not an audited action")
    if not isinstance(detail, str):
        detail = json.dumps(detail, ensure_ascii=False, separators=(",", ":"))
    return {"at": at or now_text(), "action": action, "actor": actor.label, "user_id": actor.user_id,
            "user_name": actor.user_name.lower() if actor.user_name else None, "token_id": actor.token_id,
            "address": (actor.address or None) and actor.address[:64], "object_type": object_type,
            "object_id": None if object_id is None else str(object_id)[:256], "dataset": dataset,
            "detail": detail[:MAX_DETAIL]}


def record(conn: Connection, action: str, actor: Actor, **what) -> None:
    """Write an audit entry on `conn`, in the caller's transaction (so it commits with the action or not at all).

    `what`: object_type, object_id, dataset, detail, at (see `entry`).
    """
    conn.execute(insert(AuditEntry), [entry(action, actor, **what)])
