"""Operator actions on dead letters: reprocess (as a run of its own), discard, reopen.

A dead letter belongs to the dataset whose run rejected it: a reprocess retries dead letters of one
dataset (its run loads into that dataset and validates by its shape), and the same-record merge on
reopen only joins dead letters of one dataset.
"""
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from ..accounts import audit
from ..accounts.actor import Actor
from ..database import write_transaction
from ..models import DeadLetter, Lineage
from .extract import MALFORMED, Item, Unreadable
from .jsontext import loads
from .run import Options, Settings, Supervisor, create_run, execute_run
from .validate import now_text

_CHUNK = 500
AUDIT_IDS = 200  # a bulk action's audit entry lists this many of its dead letters' ids


class DeadLetterError(ValueError):
    """An action a dead letter's state does not allow (e.g. reprocessing a resolved one)."""

    def __init__(self, message: str, code: str = "conflict"):
        super().__init__(message)
        self.code = code


def parse_edit(text: str):
    """Parse an operator's edited record; raise DeadLetterError when it is not JSON."""
    try:
        return loads(text)
    except ValueError as exc:
        raise DeadLetterError(f"the edited record is not valid JSON: {exc}", "invalid") from None


def _load(conn: Connection, ids: list[int]) -> list:
    rows = []
    for i in range(0, len(ids), _CHUNK):
        rows += conn.execute(select(DeadLetter).where(DeadLetter.id.in_(ids[i:i + _CHUNK]))).all()
    # In id order, not the table's physical order: an action's lineage entries come out in that order.
    return sorted(rows, key=lambda r: r.id)


def _record_of(row) -> tuple[object, str | None]:
    """The record to retry (its last attempt, else the raw as received) and the text kept if it is not JSON.

    Text that is not a JSON record (a malformed line, or what was kept of a record over the limit)
    is retried as that text again, and fails again: only an edit can fix it.
    """
    text = row.last_raw if row.last_raw is not None else row.raw
    if row.error == "record_too_large":
        return Unreadable(row.error, row.detail), text
    try:
        return loads(text), None
    except ValueError:
        return MALFORMED, text


def _audited(ids: list[int], **detail) -> dict:
    """The object and detail of an audit entry about dead letters: one by its id, several summarised (ACCOUNTS.md)."""
    if len(ids) == 1:
        return {"object_type": "dead_letter", "object_id": ids[0], "detail": detail}
    return {"object_type": "dead_letters", "object_id": f"{len(ids)} dead letters",
            "detail": {"ids": ids[:AUDIT_IDS], "count": len(ids), **detail}}


def reprocess(conn: Connection, ids: list[int], *, edited=None, settings: Settings | None = None,
              worker: str | None = None, supervise: Supervisor | None = None, actor: Actor | None = None) -> dict:
    """Retry open dead letters of one dataset as one `reprocess` run; `edited` replaces the record of a single one.

    The run belongs to the dead letters' dataset, ignores the watermark and keeps the stale rule.
    `actor` is who asks (the run's created_by, the dead letters' updated_by, an audit entry with the
    run). Returns the run's summary; raises DeadLetterError for a selection of several datasets and
    registry.DatasetError when the dataset is archived.
    """
    ids = list(dict.fromkeys(int(i) for i in ids))
    if not ids:
        raise DeadLetterError("no dead letters selected", "invalid")
    if edited is not None and len(ids) != 1:
        raise DeadLetterError("an edited record retries exactly one dead letter", "invalid")
    with conn.begin():
        rows = {row.id: row for row in _load(conn, ids)}
    missing = [i for i in ids if i not in rows]
    if missing:
        raise DeadLetterError(f"no dead letter {missing[0]}", "not_found")
    closed = [i for i in ids if rows[i].status != "open"]
    if closed:
        raise DeadLetterError(f"dead letter {closed[0]} is {rows[closed[0]].status}; only open ones can be reprocessed")
    datasets = sorted({rows[i].dataset for i in ids})
    if len(datasets) > 1:
        raise DeadLetterError(f"the selected dead letters belong to {len(datasets)} datasets "
                              f"({', '.join(datasets)}); reprocess the dead letters of one dataset at a time",
                              "invalid")
    items, dl_ids = [], {}
    for pos, dl_id in enumerate(ids, start=1):
        record, text = (edited, None) if edited is not None else _record_of(rows[dl_id])
        items.append(Item(pos, None, record, text))
        dl_ids[pos] = dl_id
    edit = {"edited": True} if edited is not None else {}

    def audit_of(run_id: int) -> dict:
        return audit.entry("reprocess", actor, dataset=datasets[0], **_audited(ids, run=run_id, **edit))

    run_id = create_run(conn, kind="reprocess", options=Options(ignore_watermark=True),
                        source_name=f"dead letter {ids[0]}" if len(ids) == 1 else f"{len(ids)} dead letters",
                        dead_letter_id=ids[0] if len(ids) == 1 else None, worker=worker, dataset=datasets[0],
                        actor=actor, audit_of=audit_of if actor is not None else None)
    return execute_run(conn, run_id, lambda: iter(items), settings=settings, dl_ids=dl_ids, supervise=supervise)


def _change_status(conn: Connection, ids: list[int], *, frm: str, to: str, step: str, detail: str,
                   actor: Actor | None, action: str, reason: str | None, then=None) -> int:
    ids = list(dict.fromkeys(int(i) for i in ids))
    if not ids:
        raise DeadLetterError("no dead letters selected", "invalid")
    now = now_text()
    with write_transaction(conn):
        rows = _load(conn, ids)
        found = {r.id: r for r in rows}
        missing = [i for i in ids if i not in found]
        if missing:
            raise DeadLetterError(f"no dead letter {missing[0]}", "not_found")
        wrong = [r for r in rows if r.status != frm]
        if wrong:
            raise DeadLetterError(f"dead letter {wrong[0].id} is {wrong[0].status}; only {frm} ones can be {to}")
        label = actor.label if actor else None
        values = {"status": to, "updated_at": now, "updated_by": label}
        if to == "discarded":
            values["reason"] = reason
        for i in range(0, len(ids), _CHUNK):
            conn.execute(update(DeadLetter).where(DeadLetter.id.in_(ids[i:i + _CHUNK])).values(**values))
        conn.execute(insert(Lineage), [
            {"dataset": r.dataset, "run_id": None, "pos": r.pos, "line": r.line, "key": r.key or "",
             "step": step, "at": now, "detail": detail, "dead_letter_id": r.id, "actor": label} for r in rows])
        if then is not None:
            then(conn, rows, now, label)
        if actor is not None:
            datasets = sorted({r.dataset for r in rows})
            extra = {"reason": reason} if to == "discarded" else {}
            audit.record(conn, action, actor, dataset=datasets[0] if len(datasets) == 1 else None, at=now,
                         **_audited(ids, **extra))
    return len(rows)


def _merge_same_records(conn: Connection, rows: list, now: str, actor: str | None) -> None:
    """Merge open dead letters of one dataset, raw and error (SPEC §4): the oldest stays open with every sighting.

    The others are discarded with a reason naming it and keep no sighting, so none is counted twice.
    """
    groups: dict[tuple[str, str], list] = {}
    for dataset in sorted({r.dataset for r in rows}):
        fingerprints = sorted({r.fingerprint for r in rows if r.dataset == dataset})
        for i in range(0, len(fingerprints), _CHUNK):
            for r in conn.execute(select(DeadLetter).where(
                    DeadLetter.dataset == dataset, DeadLetter.fingerprint.in_(fingerprints[i:i + _CHUNK]),
                    DeadLetter.status == "open").order_by(DeadLetter.id)):
                groups.setdefault((dataset, r.fingerprint), []).append(r)
    merged = []
    for oldest, *others in (g for g in groups.values() if len(g) > 1):
        last_runs = [r.last_run_id for r in (oldest, *others) if r.last_run_id is not None]
        conn.execute(update(DeadLetter).where(DeadLetter.id == oldest.id).values(
            sightings=oldest.sightings + sum(r.sightings for r in others),
            last_run_id=max(last_runs) if last_runs else None, updated_at=now))
        conn.execute(update(DeadLetter).where(DeadLetter.id.in_([r.id for r in others])).values(
            status="discarded", sightings=0, reason=f"merged into dead letter {oldest.id}", updated_at=now,
            updated_by=actor))
        merged += [(r, oldest.id) for r in others]
    if merged:
        conn.execute(insert(Lineage), [
            {"dataset": r.dataset, "run_id": None, "pos": r.pos, "line": r.line, "key": r.key or "",
             "step": "discarded", "at": now,
             "detail": f"merged into dead letter {into}: the same record and error",
             "dead_letter_id": r.id, "actor": actor} for r, into in merged])


def discard(conn: Connection, ids: list[int], *, reason: str | None = None, actor: Actor | None = None) -> int:
    """Discard open dead letters with an optional reason; return how many (audited when `actor` is given)."""
    reason = (reason or "").strip() or None
    return _change_status(conn, ids, frm="open", to="discarded", step="discarded",
                          detail=f"discarded: {reason}" if reason else "discarded", actor=actor,
                          action="discard", reason=reason)


def reopen(conn: Connection, ids: list[int], *, actor: Actor | None = None) -> int:
    """Reopen discarded dead letters (merged with an open one of the same record and error); return how many.

    Audited when `actor` is given.
    """
    return _change_status(conn, ids, frm="discarded", to="open", step="reopened", detail="reopened",
                          actor=actor, action="reopen", reason=None, then=_merge_same_records)


# The status a dead letter must have for each action: reprocess and discard take open ones, reopen discarded ones.
ACTION_STATUS = {"reprocess": "open", "discard": "open", "reopen": "discarded"}
MAX_SELECTION = 500  # ids one selection may name (a page of checkboxes, or an API call's list)


@dataclass
class Selection:
    """Dead letters an operator picked for an action: those that fit it, and those left out (id → status)."""

    fit: list[int]
    unfit: dict[int, str] = field(default_factory=dict)


def select_ids(conn: Connection, ids: list[int], *, dataset: str, action: str) -> Selection:
    """Check picked ids for an action in one dataset; raise DeadLetterError when one is unknown or of another dataset.

    Ids are taken in order without repeats, at most MAX_SELECTION of them; those whose status does not
    fit the action are reported in `unfit`, not dropped silently.
    """
    ids = list(dict.fromkeys(int(i) for i in ids))
    if not ids:
        raise DeadLetterError("no dead letters selected", "invalid")
    if len(ids) > MAX_SELECTION:
        raise DeadLetterError(f"{len(ids)} dead letters selected; at most {MAX_SELECTION} at a time "
                              "(choose all matching the filter instead)", "invalid")
    with conn.begin():
        rows = {row.id: row for row in _load(conn, ids)}
    foreign = [i for i in ids if i not in rows or rows[i].dataset != dataset]
    if foreign:
        raise DeadLetterError(f"no dead letter {', '.join(map(str, foreign[:10]))} in dataset {dataset}", "not_found")
    wanted = ACTION_STATUS[action]
    return Selection([i for i in ids if rows[i].status == wanted],
                     {i: rows[i].status for i in ids if rows[i].status != wanted})


_FIELD_CODE = re.compile(r"(missing|invalid)_([a-z_][a-z0-9_]*)")
_FUTURE = re.compile(r" (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?)Z? is later than now")


def retry_hint(letter: dict, now: datetime, tolerance: timedelta) -> str | None:
    """Why retrying an open dead letter as it is would fail the same way, or None when it might not.

    A `future_timestamp` fails until its timestamp is within `tolerance` of `now` (naive UTC); a
    missing or invalid field (the key, the version) fails until an edit supplies or fixes it.
    """
    if letter.get("status") != "open":
        return None
    error = letter.get("error") or ""
    if error == "future_timestamp":
        found = _FUTURE.search(letter.get("detail") or "")
        if found is None:
            return None
        until = datetime.fromisoformat(found.group(1)) - tolerance
        if until <= now:
            return None
        return f"a retry will fail the same way until {until.strftime('%Y-%m-%d %H:%M:%S')} (UTC)"
    match = _FIELD_CODE.fullmatch(error)
    if match is None:  # a record that could not be read at all: the edit page says what is wrong
        return None
    verb = "supply" if match.group(1) == "missing" else "fix"
    return f"an edit must {verb} {match.group(2)}; Reprocess as it is will fail again"


__all__ = ["ACTION_STATUS", "MAX_SELECTION", "DeadLetterError", "Selection", "discard", "parse_edit", "reopen",
           "reprocess", "retry_hint", "select_ids"]
