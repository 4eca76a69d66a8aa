"""The watermark: read it, move it (pipeline, only forward), set or reset it (operator), its history."""
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from ..database import write_transaction
from ..models import Target, Watermark, WatermarkHistory
from .validate import canonical, now_text, parse_ts, utc_now

NAME = "events_ts"


class WatermarkError(ValueError):
    """An operator's watermark value is not acceptable; the message says why."""


def current(conn: Connection, name: str = NAME) -> str | None:
    """The watermark's value, or None when there is none."""
    return conn.execute(select(Watermark.value).where(Watermark.name == name)).scalar()


def _write(conn: Connection, name: str, old: str | None, new: str | None, via: str,
           run_id: int | None = None, actor: str | None = None) -> None:
    now = now_text()
    exists = conn.execute(select(Watermark.name).where(Watermark.name == name)).first()
    if exists:
        conn.execute(update(Watermark).where(Watermark.name == name).values(value=new, updated_at=now))
    else:
        conn.execute(insert(Watermark).values(name=name, value=new, updated_at=now))
    conn.execute(insert(WatermarkHistory).values(name=name, old_value=old, new_value=new, at=now, via=via,
                                                 run_id=run_id, actor=actor))


def advance(conn: Connection, old: str | None, run_id: int | None, name: str = NAME) -> str | None:
    """Move the watermark to the greatest ts in the target table, never backwards; return it."""
    newest = conn.execute(select(func.max(Target.ts))).scalar()
    if newest is not None and (old is None or newest > old):
        _write(conn, name, old, newest, "pipeline", run_id)
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


def preview(conn: Connection, value: str | None) -> int:
    """How many target rows lie at or after `value` (all of them for a reset)."""
    query = select(func.count()).select_from(Target)
    if value is not None:
        query = query.where(Target.ts >= check_value(value))
    return conn.execute(query).scalar()


def set_value(conn: Connection, value: str, *, via: str, actor: str | None = None, name: str = NAME) -> str:
    """Set the watermark to an operator's value (any direction); return its canonical text."""
    new = check_value(value)
    with write_transaction(conn):
        _write(conn, name, current(conn, name), new, via, actor=actor)
    return new


def reset(conn: Connection, *, via: str, actor: str | None = None, name: str = NAME) -> None:
    """Remove the watermark: the next run processes everything and the stale rule protects newer data."""
    with write_transaction(conn):
        _write(conn, name, current(conn, name), None, via, actor=actor)


def history(conn: Connection, name: str = NAME, limit: int = 100) -> list[dict]:
    """The latest changes of a watermark, newest first."""
    rows = conn.execute(select(WatermarkHistory).where(WatermarkHistory.name == name)
                        .order_by(WatermarkHistory.id.desc()).limit(limit))
    return [dict(r._mapping) for r in rows]
