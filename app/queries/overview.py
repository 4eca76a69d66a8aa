"""Headline numbers: rows loaded, open dead letters and watermarks of a dataset or of all, and the latest runs."""

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from ..datasets.registry import DEFAULT, list_datasets, resolve
from ..intake import pending_runs
from ..models import DeadLetter, Run, Watermark


def _rows_loaded(conn: Connection, name: str | None = None) -> dict[str, int]:
    # Rows are only ever added to a target by applied runs, so their inserted counts add up to the
    # row count: an aggregate over the small runs table instead of counting millions of rows.
    query = select(Run.dataset, func.coalesce(func.sum(Run.inserted), 0)).where(Run.applied_seq.is_not(None))
    if name is not None:
        query = query.where(Run.dataset == name)
    return {d: int(n) for d, n in conn.execute(query.group_by(Run.dataset))}


def open_dead_letters(conn: Connection, name: str) -> int:
    return conn.execute(select(func.count()).select_from(DeadLetter)
                        .where(DeadLetter.dataset == name, DeadLetter.status == "open")).scalar()


def overview(conn: Connection, dataset=None) -> dict:
    """A dataset's headline numbers (target rows, open dead letters, watermark) and its latest runs."""
    ds = resolve(conn, dataset)
    watermark = conn.execute(select(Watermark.value).where(Watermark.name == ds.watermark)).scalar()
    return {"dataset": ds.name, "target_rows": _rows_loaded(conn, ds.name).get(ds.name, 0),
            "open_dead_letters": open_dead_letters(conn, ds.name), "watermark": watermark,
            "latest_runs": latest_runs(conn, ds)}


def latest_runs(conn: Connection, dataset=None, *, every: bool = False, limit: int = 10) -> list[dict]:
    """The newest runs of a dataset (or of every dataset), those waiting in the intake included."""
    query = select(Run).order_by(Run.id.desc()).limit(limit)
    name = None if every else resolve(conn, dataset).name
    if name is not None:
        query = query.where(Run.dataset == name)
    rows = [dict(r._mapping) for r in conn.execute(query)]
    waiting = [r for r in pending_runs(conn) if name is None or r.get("dataset", DEFAULT) == name]
    return sorted(rows + waiting, key=lambda r: r["id"], reverse=True)[:limit]


def datasets_overview(conn: Connection, *, archived: bool = True) -> list[dict]:
    """Every dataset (events first) with its row count, open dead letters and watermark: a few cheap queries."""
    datasets = [d for d in list_datasets(conn) if archived or d.archived_at is None]
    loaded = _rows_loaded(conn)
    marks = dict(conn.execute(select(Watermark.name, Watermark.value)
                              .where(Watermark.name.in_([d.watermark for d in datasets]))).all()) if datasets else {}
    return [{"dataset": d, "name": d.name, "title": d.title, "archived_at": d.archived_at,
             "target_rows": loaded.get(d.name, 0), "open_dead_letters": open_dead_letters(conn, d.name),
             "watermark": marks.get(d.watermark)} for d in datasets]
