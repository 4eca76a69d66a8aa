"""The audit log: one entry per state-changing action, written in the transaction of the action itself;
and its reading side: filtered keyset pages, newest first, and every entry of a filter for exports."""
import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta

from sqlalchemy import and_, insert, select
from sqlalchemy.engine import Connection

from ..models import AuditEntry
from ..pipeline.validate import now_text, parse_ts
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
    "run_backfill": "backfilled a run",
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
    detail = detail_text(detail)
    return {"at": at or now_text(), "action": action, "actor": actor.label, "user_id": actor.user_id,
            "user_name": actor.user_name.lower() if actor.user_name else None, "token_id": actor.token_id,
            "address": (actor.address or None) and actor.address[:64], "object_type": object_type,
            "object_id": None if object_id is None else str(object_id)[:256], "dataset": dataset,
            "detail": detail[:MAX_DETAIL]}


def record(conn: Connection, action: str, actor: Actor, **what) -> None:
    """Write an audit entry on `conn`, in the caller's transaction (so it commits with the action or not at all).

    `what`: object_type, object_id, dataset, detail, at (see `entry`).
    """
    write(conn, entry(action, actor, **what))


def write(conn: Connection, *entries: dict | None) -> None:
    """Write entries made earlier with `entry` (None: none) in the caller's transaction."""
    rows = [e for e in entries if e is not None]
    if rows:
        conn.execute(insert(AuditEntry), rows)


def detail_text(detail) -> str:
    """An entry's detail as one line of text: text as it is, an object or list as compact JSON."""
    return detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False, separators=(",", ":"))


def parse_detail(text: str | None):
    """A stored detail: the object or list it was recorded as, else its text."""
    if text and text[0] in "{[":
        try:
            return json.loads(text)
        except ValueError:  # text that only looks like JSON (or JSON cut at MAX_DETAIL)
            pass
    return text or ""


# --- reading the log ------------------------------------------------------------------------------

CLI = "cli:"
# What a row of the log holds for pages, the API and exports, in this order.
COLUMNS = ("id", "at", "action", "action_words", "actor", "user_name", "token_id", "address", "object_type",
           "object_id", "dataset", "detail")
_READ = (AuditEntry.id, AuditEntry.at, AuditEntry.action, AuditEntry.actor, AuditEntry.user_name,
         AuditEntry.token_id, AuditEntry.address, AuditEntry.object_type, AuditEntry.object_id,
         AuditEntry.dataset, AuditEntry.detail)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
# How much of a time was given: minutes, seconds, a fraction (parse_ts checks the whole grammar).
_PRECISION = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?", re.ASCII)
TIME_FORMS = "YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS] (UTC)"


def time_bound(text: str, *, end: bool = False) -> str | None:
    """A filter's time as canonical UTC text; ValueError when it is none of TIME_FORMS.

    The end of a range is the first instant after the day, minute or second it names, so that
    `to=2026-03-01` takes in the whole of that day (None: after year 9999, no bound at all).
    """
    text = text.strip() if isinstance(text, str) else ""
    date_only = bool(_DATE.fullmatch(text))
    canonical = parse_ts(text + "T00:00" if date_only else text)
    if canonical is None:
        raise ValueError(f"not a time: use {TIME_FORMS}")
    if not end:
        return canonical
    if date_only:
        step = timedelta(days=1)
    else:
        seconds, fraction = _PRECISION.match(text).groups()
        step = timedelta(microseconds=1) if fraction else timedelta(seconds=1) if seconds else timedelta(minutes=1)
    try:
        return (datetime.fromisoformat(canonical) + step).isoformat()
    except OverflowError:
        return None


def who_condition(who: str):
    """The user filter: a user's name in any case (their sessions and tokens), or `cli:<name>` for the command line.

    Names are stored lower case in `user_name`. The command line has no user (its `user_name` is
    NULL), so `cli:<name>` compares the actor label among those entries alone; the (user_name, id)
    index serves both.
    """
    who = who.strip()
    if who[:len(CLI)].lower() == CLI:
        return and_(AuditEntry.user_name.is_(None), AuditEntry.actor == CLI + who[len(CLI):])
    return AuditEntry.user_name == who.lower()


def _filtered(user: str | None, action: str | None, since: str | None, until: str | None):
    query = select(*_READ)
    if user:
        query = query.where(who_condition(user))
    if action:
        query = query.where(AuditEntry.action == action)
    if since:
        query = query.where(AuditEntry.at >= since)
    if until:
        query = query.where(AuditEntry.at < until)
    return query


def _row(row: dict) -> dict:
    out = {c: row.get(c) for c in COLUMNS}
    out["action_words"] = ACTIONS.get(row["action"], row["action"])
    out["detail"] = parse_detail(row["detail"])
    return out


def entries_page(conn: Connection, *, user: str | None = None, action: str | None = None, since: str | None = None,
                 until: str | None = None, cursor: str | None = None, before: str | None = None,
                 limit: int | None = None) -> dict:
    """The log newest first, one keyset page at a time: by user, action, and `since <= at < until` (canonical UTC).

    `cursor` is a page's `next`, `before` its `prev`; BadCursor for one this code did not write.
    """
    # Imported here: the read side imports the dataset registry, which audits its changes through this module.
    from .. import queries

    page = queries.keyset_page(conn, _filtered(user, action, since, until), (AuditEntry.id,), key_of=lambda r: (r["id"],),
                         limit=queries.page_limit(limit), after=queries.one_int(queries.decode_cursor(cursor, 1)),
                         before=queries.one_int(queries.decode_cursor(before, 1)), descending=True)
    page["rows"] = [_row(r) for r in page["rows"]]
    return page


def iter_entries(conn: Connection, *, batch: int = 2000, **view) -> Iterator[dict]:
    """Every entry of a filter (`entries_page`'s), newest first, in keyset batches (for streamed exports)."""
    cursor = None
    while True:
        page = entries_page(conn, **view, cursor=cursor, limit=batch)
        yield from page["rows"]
        cursor = page["next"]
        if cursor is None:
            return
