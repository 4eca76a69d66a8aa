"""Run history: keyset pages of runs, one run in full, live status of a few, and the lineage a run wrote."""
import json
import math
from bisect import bisect_left
from dataclasses import asdict
from datetime import date, datetime, timedelta
from types import SimpleNamespace

from sqlalchemy import case, func, select, tuple_
from sqlalchemy.engine import Connection

from ..datasets.registry import DEFAULT, resolve
from ..intake import ALL, pending_runs
from ..models import Lineage, Run
from ..pipeline.run import Options, warnings_of
from ..pipeline.validate import utc_now
from .paging import decode_cursor, encode_cursor, ints, keyset_page, one_int, page_limit

RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
COUNT_COLUMNS = ("input_records", "skipped", "rejected", "staged", "superseded", "inserted", "updated", "unchanged",
                 "stale", "dead_letters", "lineage_entries")


def _day_bounds(since: date | None, until: date | None) -> tuple[str | None, str | None]:
    """The queued_at text range of inclusive UTC days: [since, the day after until)."""
    high = None if until is None or until == date.max else (until + timedelta(days=1)).isoformat()
    return (since.isoformat() if since else None), high


def _run_filters(name: str, status, kind, since, until) -> list:
    """The conditions of a filtered runs view (each served by an index on `dataset` and its column)."""
    low, high = _day_bounds(since, until)
    conditions = [Run.dataset == name]
    if status:
        conditions.append(Run.status == status)
    if kind:
        conditions.append(Run.kind == kind)
    if low:
        conditions.append(Run.queued_at >= low)
    if high:
        conditions.append(Run.queued_at < high)
    return conditions


def _seconds(start: str | None, end: str | None) -> float | None:
    if not (start and end):
        return None
    return max(0.0, (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())


def _with_outcome(row: dict) -> dict:
    """A run row with what the list shows beside its columns: loaded, duration, rate and its options."""
    options = Options.from_json(row["options"])
    seconds = _seconds(row["started_at"], row["finished_at"])
    return {**row, "loaded": row["inserted"] + row["updated"], "seconds": seconds,
            "rate": row["input_records"] / seconds if seconds else None,
            "dry_run": options.dry_run, "backfill_of": options.backfill_of,
            "ignore_watermark": options.ignore_watermark}


def runs_page(conn: Connection, dataset=None, *, status: str | None = None, kind: str | None = None,
              since: date | None = None, until: date | None = None, cursor: str | None = None,
              before: str | None = None, limit: int | None = None) -> dict:
    """A dataset's runs newest first, by status, kind and queued days (UTC, inclusive), a keyset page each.

    Each row also carries `loaded`, `seconds` (finished − started), `rate` (records read per second) and
    its options' `dry_run`, `backfill_of` and `ignore_watermark`.
    """
    ds = resolve(conn, dataset)
    query = select(Run).where(*_run_filters(ds.name, status, kind, since, until))
    page = keyset_page(conn, query, (Run.id,), key_of=lambda r: (r["id"],), limit=page_limit(limit),
                 after=one_int(decode_cursor(cursor, 1)), before=one_int(decode_cursor(before, 1)), descending=True)
    page.update(status=status, kind=kind, since=since, until=until, dataset=ds.name)
    _add_pending(conn, page, ds.name, status, kind, _day_bounds(since, until))
    page["rows"] = [_with_outcome(r) for r in page["rows"]]
    return page


def _add_pending(conn: Connection, page: dict, name: str, status, kind, bounds) -> None:
    """Add the runs waiting in the SQLite intake (not in `runs` yet) that match the filters and fall in the page."""
    low, high = bounds

    def matches(r: dict) -> bool:
        return (status in (None, r["status"]) and kind in (None, r["kind"])
                and (low is None or r["queued_at"] >= low) and (high is None or r["queued_at"] < high))

    waiting = [r for r in pending_runs(conn, dataset=name) if matches(r)]
    if waiting:
        rows = page["rows"]
        high_id = rows[0]["id"] if rows and page["prev"] else math.inf
        low_id = rows[-1]["id"] if rows and page["next"] else -math.inf
        page["rows"] = sorted(rows + [r for r in waiting if low_id < r["id"] < high_id],
                              key=lambda r: r["id"], reverse=True)


def runs_per_day(conn: Connection, dataset=None, *, days: int = 30, status: str | None = None,
                 kind: str | None = None, since: date | None = None, until: date | None = None,
                 today: date | None = None) -> list[dict]:
    """Records loaded and the reject rate per UTC day, for the last `days` days up to `until` (or today).

    One grouped query over the (dataset, queued_at) index range. Counts come from the runs that were
    applied to the table (succeeded, not dry runs: the others kept nothing); `runs` counts every run
    that matches. Each day: day, runs, loaded, rejected, checked (input − skipped), reject_rate (%, None
    for nothing checked). Days without runs are there with zeros; an empty list when the range is empty.
    """
    ds = resolve(conn, dataset)
    last = until or today or utc_now().date()
    first = last - timedelta(days=days - 1)
    if since and since > first:
        first = since
    if first > last:
        return []
    day = func.substr(Run.queued_at, 1, 10).label("day")
    applied = Run.applied_seq.is_not(None)

    def applied_sum(value):
        return func.coalesce(func.sum(case((applied, value), else_=0)), 0)

    query = (select(day, func.count().label("runs"), applied_sum(Run.inserted + Run.updated).label("loaded"),
                    applied_sum(Run.rejected).label("rejected"),
                    applied_sum(Run.input_records - Run.skipped).label("checked"))
             .where(*_run_filters(ds.name, status, kind, first, last)).group_by(day))
    found = {r.day: r for r in conn.execute(query)}
    out = []
    for n in range((last - first).days + 1):
        name = (first + timedelta(days=n)).isoformat()
        r = found.get(name)
        runs, loaded, rejected, checked = (int(v) for v in (r[1:] if r else (0, 0, 0, 0)))
        out.append({"day": name, "runs": runs, "loaded": loaded, "rejected": rejected, "checked": checked,
                    "reject_rate": 100 * rejected / checked if checked else None})
    return out


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
