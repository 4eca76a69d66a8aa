"""Run history: keyset pages of runs, one run in full, live status of a few, and the lineage a run wrote."""
import json
import math
from bisect import bisect_left
from dataclasses import asdict
from types import SimpleNamespace

from sqlalchemy import func, select, tuple_
from sqlalchemy.engine import Connection

from ..datasets.registry import DEFAULT, resolve
from ..intake import ALL, pending_runs
from ..models import Lineage, Run
from ..pipeline.run import Options, warnings_of
from .paging import decode_cursor, encode_cursor, ints, keyset_page, one_int, page_limit

RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
COUNT_COLUMNS = ("input_records", "skipped", "rejected", "staged", "superseded", "inserted", "updated", "unchanged",
                 "stale", "dead_letters", "lineage_entries")

def runs_page(conn: Connection, dataset=None, *, status: str | None = None, cursor: str | None = None,
              before: str | None = None, limit: int | None = None) -> dict:
    """A dataset's runs newest first, optionally of one status, one keyset page at a time."""
    ds = resolve(conn, dataset)
    query = select(Run).where(Run.dataset == ds.name)
    if status:
        query = query.where(Run.status == status)
    page = keyset_page(conn, query, (Run.id,), key_of=lambda r: (r["id"],), limit=page_limit(limit),
                 after=one_int(decode_cursor(cursor, 1)), before=one_int(decode_cursor(before, 1)), descending=True)
    page.update(status=status, dataset=ds.name)
    _add_pending(conn, page, status, ds.name)
    return page


def _add_pending(conn: Connection, page: dict, status: str | None, name: str) -> None:
    """Add the runs waiting in the SQLite intake (not in `runs` yet) that fall within this page."""
    waiting = [r for r in pending_runs(conn) if status in (None, r["status"]) and r.get("dataset", DEFAULT) == name]
    if waiting:
        rows = page["rows"]
        high = rows[0]["id"] if rows and page["prev"] else math.inf
        low = rows[-1]["id"] if rows and page["next"] else -math.inf
        page["rows"] = sorted(rows + [r for r in waiting if low < r["id"] < high], key=lambda r: r["id"],
                              reverse=True)


def run_detail(conn: Connection, run_id: int) -> dict | None:
    """A run's row (its dataset and shape version too) with its options, related runs (retries, backfills)."""
    row = conn.execute(select(Run).where(Run.id == run_id)).first()
    waiting = pending_runs(conn, [run_id]) if row is None else []
    if row is None and not waiting:
        return None
    run = dict(row._mapping) if row is not None else waiting[0]
    run.setdefault("dataset", DEFAULT)
    run.setdefault("shape_version", None)
    run["options_parsed"] = asdict(Options.from_json(run["options"]))
    later = conn.execute(select(Run.id, Run.options).where(Run.retry_of_id == run_id).order_by(Run.id)).all()
    run["retried_by"] = [r.id for r in later]  # retries and backfills alike (both are kind `retry`)
    run["backfilled_by"] = [r.id for r in later if Options.from_json(r.options).backfill_of == run_id]
    run["loaded"] = run["inserted"] + run["updated"]
    run["dry_run_rejects"] = json.loads(run["dry_run_rejects"]) if run.get("dry_run_rejects") else None
    run["ahead"] = _ahead(conn, [run["id"]]).get(run["id"]) if run["status"] == "queued" else None
    return run


def _ahead(conn: Connection, queued: list[int]) -> dict[int, int]:
    """How many runs are queued or running before each of these queued runs (the queue is in id order)."""
    if not queued:
        return {}
    top = max(queued)
    before = list(conn.execute(select(Run.id).where(Run.status.in_(("queued", "running")), Run.id < top)).scalars())
    before += [r["id"] for r in pending_runs(conn, dataset=ALL) if r["status"] == "queued" and r["id"] < top]
    before.sort()
    return {i: bisect_left(before, i) for i in queued}


_STATUS_COLUMNS = ("id", "dataset", "kind", "status", "created_by", "cancel_requested", "queued_at", "started_at",
                   "finished_at", "watermark_before", "watermark_after", "error", *COUNT_COLUMNS)


def run_status(conn: Connection, run_ids: list[int]) -> list[dict]:
    """The status, times, watermarks, every count and the warnings of a few runs, for live pages.

    A queued run also says how many runs are `ahead` of it; every row has `loaded` (inserted + updated).
    """
    wanted = run_ids[:100]
    if not wanted:
        return []
    columns = [Run.__table__.c[name] for name in (*_STATUS_COLUMNS, "options")]  # warnings_of reads the options
    rows = [dict(r._mapping) for r in conn.execute(select(*columns).where(Run.id.in_(wanted)))]
    missing = sorted(set(wanted) - {r["id"] for r in rows})
    rows += pending_runs(conn, missing) if missing else []
    ahead = _ahead(conn, [r["id"] for r in rows if r["status"] == "queued"])
    return [{**{k: r.get(k) for k in _STATUS_COLUMNS}, "dataset": r.get("dataset") or DEFAULT,
             "cancel_requested": bool(r.get("cancel_requested")), "loaded": r["inserted"] + r["updated"],
             "ahead": ahead.get(r["id"]), "warnings": warnings_of(SimpleNamespace(**r))} for r in rows]


def run_lineage(conn: Connection, run_id: int, *, cursor: str | None = None, limit: int | None = None) -> dict:
    """The lineage entries a run wrote, in file order, one keyset page at a time."""
    after = decode_cursor(cursor, 2)
    after = after if after is None else ints(after)
    query = select(Lineage).where(Lineage.run_id == run_id)
    columns = (func.coalesce(Lineage.pos, 0), Lineage.id)
    limit = page_limit(limit)
    if after is not None:
        query = query.where(tuple_(*columns) > tuple_(int(after[0]), int(after[1])))
    rows = [dict(r._mapping) for r in conn.execute(query.order_by(*columns).limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return {"rows": rows, "limit": limit,
            "next": encode_cursor((rows[-1]["pos"] or 0, rows[-1]["id"])) if more else None}
