"""The lineage of one key across a dataset's runs, and keys like one that was never seen."""

from sqlalchemy import false, select
from sqlalchemy.engine import Connection

from ..datasets.registry import resolve
from ..models import Lineage
from .paging import newest_first, prefix_range, storable
from .target import target_row


def lineage_of_key(conn: Connection, key: str, dataset=None, *, cursor: str | None = None,
                   limit: int | None = None) -> dict:
    """A key's current target row and its timeline across a dataset's runs, newest first, a keyset page at a time."""
    ds = resolve(conn, dataset)
    query = select(Lineage).where(Lineage.dataset == ds.name, Lineage.key == key if storable(key) else false())
    return {"key": key, "dataset": ds.name, "target": target_row(conn, key, ds),
            **newest_first(conn, query, Lineage.id, cursor, limit)}


def similar_keys(conn: Connection, key: str, dataset=None, limit: int = 10) -> list[str]:
    """Target keys of a dataset that start like `key` (for a key that was never seen)."""
    ds = resolve(conn, dataset)
    stem = key[: max(1, len(key) - 2)]
    if not storable(stem):
        return []
    rows = conn.execute(select(ds.key_col).where(prefix_range(ds.key_col, stem)).order_by(ds.key_col).limit(limit))
    return [k for (k,) in rows]
