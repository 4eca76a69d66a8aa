"""A watermark's value and its history."""

from sqlalchemy import select
from sqlalchemy.engine import Connection

from ..datasets.registry import resolve
from ..models import Watermark, WatermarkHistory
from .paging import newest_first


def watermark_page(conn: Connection, dataset=None, *, cursor: str | None = None, limit: int | None = None,
                   name: str | None = None) -> dict:
    """A dataset's watermark (or the one called `name`): its value and history, newest first, a keyset page at a time."""
    ds = resolve(conn, dataset) if name is None or dataset is not None else None
    name = ds.watermark if name is None else name
    row = conn.execute(select(Watermark).where(Watermark.name == name)).first()
    dataset_name = ds.name if ds is not None else (row.dataset if row is not None else None)
    query = select(WatermarkHistory).where(WatermarkHistory.name == name)
    return {"name": name, "dataset": dataset_name, "value": row.value if row else None,
            "updated_at": row.updated_at if row else None,
            **newest_first(conn, query, WatermarkHistory.id, cursor, limit)}
