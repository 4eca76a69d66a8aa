"""A dataset's watermark: read it, move it (pipeline, only forward), set or reset it (operator), its history.

`dataset` is a registry Dataset, a dataset's name, or None for `events`; its watermark is named
by the dataset (`events_ts` for events).
"""
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from ..accounts import audit
from ..accounts.actor import Actor
from ..database import write_transaction
from ..models import Watermark, WatermarkHistory
from .validate import canonical, now_text, parse_ts, utc_now

NAME = "events_ts"


class WatermarkError(ValueError):
    """An operator's watermark value is not acceptable; the message says why."""


def _dataset(conn: Connection, dataset=None):
    """The Dataset meant by `dataset` (a Dataset, a name, or None for events)."""
    # Imported here: app.datasets builds on app.pipeline, not the other way round.
    from ..datasets.registry import resolve

    return resolve(conn, dataset)


def current(conn: Connection, name: str = NAME) -> str | None:
    """The value of the watermark named `name` (a dataset's `watermark`), or None when there is none."""
    return conn.execute(select(Watermark.value).where(Watermark.name == name)).scalar()


def _write(conn: Connection, dataset, old: str | None, new: str | None, via: str,
           run_id: int | None = None, actor: str | None = None) -> None:
    now, name = now_text(), dataset.watermark
    exists = conn.execute(select(Watermark.name).where(Watermark.name == name)).first()
    if exists:
        conn.execute(update(Watermark).where(Watermark.name == name).values(value=new, updated_at=now))
    else:
        conn.execute(insert(Watermark).values(name=name, dataset=dataset.name, value=new, updated_at=now))
    conn.execute(insert(WatermarkHistory).values(name=name, dataset=dataset.name, old_value=old, new_value=new,
                                                 at=now, via=via, run_id=run_id, actor=actor))


def advance(conn: Connection, old: str | None, run_id: int | None, dataset=None) -> str | None:
    """Move the dataset's watermark to the greatest version in its table, never backwards; return it."""
    dataset = _dataset(conn, dataset)
    newest = conn.execute(select(func.max(dataset.version_col))).scalar()
    if newest is not None and (old is None or newest > old):
        _write(conn, dataset, old, newest, "pipeline", run_id)
        return newest
    return old


def check_value(value: str) -> str:
    """Return the canonical text of an operator's watermark value, or raise WatermarkError."""
    if not isinstance(value, str) or not value.strip():
        raise WatermarkError("a watermark value is required")
    canonical_ts = parse_ts(value.strip())
    if canonical_ts is None:
        raise WatermarkError(f"{value!r} is not a timestamp like 2025-01-15T12:30:00Z")
    if canonical_ts > canonical(utc_now()):
        raise WatermarkError(f"{canonical_ts} lies in the future")
    return canonical_ts


def preview(conn: Connection, value: str | None, dataset=None) -> int:
    """How many rows of the dataset's table lie at or after `value` (all of them for a reset)."""
    dataset = _dataset(conn, dataset)
    query = select(func.count()).select_from(dataset.table)
    if value is not None:
        query = query.where(dataset.version_col >= check_value(value))
    return conn.execute(query).scalar()


def _change(conn: Connection, ds, new: str | None, via: str, actor: Actor | None, action: str) -> None:
    """An operator's change of the watermark, with its history entry and (given an actor) its audit entry."""
    old = current(conn, ds.watermark)
    _write(conn, ds, old, new, via, actor=actor.label if actor else None)
    if actor is not None:
        audit.record(conn, action, actor, object_type="watermark", object_id=ds.watermark, dataset=ds.name,
                     detail={"from": old, "to": new})


def set_value(conn: Connection, value: str, *, via: str, actor: Actor | None = None, dataset=None) -> str:
    """Set the dataset's watermark to an operator's value (any direction); return its canonical text."""
    new = check_value(value)
    with write_transaction(conn):
        _change(conn, _dataset(conn, dataset), new, via, actor, "watermark_set")
    return new


def reset(conn: Connection, *, via: str, actor: Actor | None = None, dataset=None) -> None:
    """Remove the dataset's watermark: the next run processes everything, the stale rule protects newer data."""
    with write_transaction(conn):
        _change(conn, _dataset(conn, dataset), None, via, actor, "watermark_reset")


def history(conn: Connection, dataset=None, limit: int = 100) -> list[dict]:
    """The latest changes of the dataset's watermark, newest first."""
    name = _dataset(conn, dataset).watermark
    rows = conn.execute(select(WatermarkHistory).where(WatermarkHistory.name == name)
                        .order_by(WatermarkHistory.id.desc()).limit(limit))
    return [dict(r._mapping) for r in rows]
