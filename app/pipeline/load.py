"""Loading a staged run: in-run dedup, outcome per record, then one set-based apply.

`prepare` and `classify` only read the main database; `apply` writes target, dead letters,
lineage and watermark, and is meant to run inside `write_transaction`. The SQL is generated from
the dataset's Table: its identifiers are quoted by the dialect's own preparer, every text a shape
contributes (field names in lineage details) is a bound parameter.
"""
import re
from dataclasses import dataclass

from ..formatting import number
from .stage import Staging, bulk_insert, payload_names

OUTCOMES = ("inserted", "updated", "unchanged", "stale")
# New dead letters from which a run analyzes dead_letters on PostgreSQL (see apply): below it the
# probes cost little even on a bad plan, and ANALYZE of a large table would cost more than they do.
ANALYZE_DEAD_LETTERS = 1_000


@dataclass
class LoadCounts:
    """What applying a staged run did."""

    superseded: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    dead_letters: int = 0
    lineage_entries: int = 0


def update_detail(old_name, name, old_value, value, old_ts, ts) -> str:
    """The detail of an `updated` lineage entry of `events`: each changed field as old → new."""
    parts = []
    if old_name != name:
        parts.append(f"name: {old_name!r} → {name!r}")
    if old_value != value:
        parts.append(f"value: {number(old_value)} → {number(value)}")
    if old_ts != ts:
        parts.append(f"ts: {old_ts} → {ts}")
    return "; ".join(parts)


def prepare(staging: Staging) -> int:
    """Find the staged records that a later one of the same key supersedes; return how many.

    The latest version wins and a tie goes to the later record. On SQLite most keys appear once, so
    an index probe per record beats ranking every record with a window function (4× faster there);
    on PostgreSQL the window function is faster (2.2 s against 7.9 s with its index, 3M records).
    """
    conn = staging.conn
    if conn.dialect.name == "postgresql":
        # Autovacuum never sees TEMP tables: without statistics the planner would guess their sizes.
        conn.exec_driver_sql("ANALYZE sluice_stage, sluice_skip, sluice_reject")
        conn.exec_driver_sql(
            "CREATE TEMP TABLE sluice_win AS SELECT pos, line, key, winner FROM ("
            "SELECT pos, line, key, first_value(pos) OVER (PARTITION BY key ORDER BY ver DESC, pos DESC) AS winner "
            "FROM sluice_stage) ranked WHERE pos <> winner"
        )
    else:
        conn.exec_driver_sql("CREATE INDEX ix_sluice_stage_key ON sluice_stage (key, ver, pos)")
        conn.exec_driver_sql(
            "CREATE TEMP TABLE sluice_win AS "
            "SELECT s.pos, s.line, s.key, (SELECT x.pos FROM sluice_stage x WHERE x.key = s.key "
            "ORDER BY x.ver DESC, x.pos DESC LIMIT 1) AS winner "
            "FROM sluice_stage s WHERE EXISTS (SELECT 1 FROM sluice_stage x WHERE x.key = s.key "
            "AND (x.ver > s.ver OR (x.ver = s.ver AND x.pos > s.pos)))"
        )
    conn.exec_driver_sql("CREATE UNIQUE INDEX ix_sluice_win_pos ON sluice_win (pos)")
    return conn.exec_driver_sql("SELECT count(*) FROM sluice_win").scalar()


def _quoted(staging: Staging) -> tuple:
    """The dataset table's quoted name and columns: key, payload (shape order), version, updated, run."""
    ds = staging.dataset
    quote = staging.conn.dialect.identifier_preparer.quote
    return (quote(ds.table.name), quote(ds.key_col.name), [quote(c.name) for c in ds.payload_cols],
            quote(ds.version_col.name), quote(ds.updated_col.name), quote(ds.run_col.name))


def _same(conn, new: str, old: str, nullable: bool) -> str:
    """SQL for "equal" of a staged and a stored value; NULL-safe where either may be NULL."""
    if not nullable:
        return f"{new} = {old}"
    return f"{new} IS {old}" if conn.dialect.name == "sqlite" else f"{new} IS NOT DISTINCT FROM {old}"


def classify(staging: Staging) -> dict:
    """Decide inserted / updated / unchanged / stale for each winner against the dataset's table."""
    # Imported here: app.datasets builds on app.pipeline (validate, load), not the other way round.
    from ..datasets.shape import EVENTS_SHAPE
    from ..datasets.validator import describe_update

    conn, ds = staging.conn, staging.dataset
    table, key, payload, version, _updated, _run = _quoted(staging)
    staged = payload_names(ds)
    nullable = [c.nullable for c in ds.payload_cols]
    same = " AND ".join([*(_same(conn, f"w.{p}", f"t.{c}", n)
                           for p, c, n in zip(staged, payload, nullable, strict=True)),
                         f"w.ver = t.{version}"])
    conn.exec_driver_sql("DROP TABLE IF EXISTS sluice_out")
    conn.exec_driver_sql("DROP TABLE IF EXISTS sluice_upd")
    # Rows are kept in key order: the upsert and the lineage inserts then touch each index in order.
    conn.exec_driver_sql(
        "CREATE TEMP TABLE sluice_out AS "
        f"SELECT w.pos, w.line, w.key, {''.join(f'w.{p}, ' for p in staged)}w.ver, "
        f"CASE WHEN t.{key} IS NULL THEN 'inserted' WHEN w.ver < t.{version} THEN 'stale' "
        f"WHEN {same} THEN 'unchanged' ELSE 'updated' END AS outcome, "
        f"{''.join(f't.{c} AS o{p}, ' for p, c in zip(staged, payload, strict=True))}t.{version} AS over "
        f"FROM sluice_stage w LEFT JOIN {table} t ON t.{key} = w.key "
        "WHERE NOT EXISTS (SELECT 1 FROM sluice_win p WHERE p.pos = w.pos) ORDER BY w.key"
    )
    conn.exec_driver_sql("CREATE TEMP TABLE sluice_upd (pos BIGINT PRIMARY KEY, detail TEXT)")
    shape = EVENTS_SHAPE if ds.shape == EVENTS_SHAPE else ds.shape  # the same object: a cheap test per row
    width = len(staged) + 1
    result = conn.exec_driver_sql(
        f"SELECT pos, {''.join(f'o{p}, ' for p in staged)}over, {''.join(f'{p}, ' for p in staged)}ver "
        "FROM sluice_out WHERE outcome = 'updated'"
    )
    booleans = [i for i, f in enumerate(ds.shape.fields) if f.type == "boolean"]
    while rows := result.fetchmany(20_000):
        if booleans:  # SQLite hands booleans back as 0 and 1
            rows = [_as_booleans(r, booleans, width) for r in rows]
        bulk_insert(conn, "sluice_upd", ["pos", "detail"],
                    [(r[0], describe_update(shape, r[1:width + 1], r[width + 1:])) for r in rows])
    counts = dict.fromkeys(OUTCOMES, 0)
    for outcome, n in conn.exec_driver_sql("SELECT outcome, count(*) FROM sluice_out GROUP BY outcome"):
        counts[outcome] = n
    return counts


def _as_booleans(row, booleans: list[int], width: int) -> tuple:
    row = list(row)
    for i in booleans:
        for at in (1 + i, 1 + width + i):
            if row[at] is not None:
                row[at] = bool(row[at])
    return tuple(row)


def texts(shape) -> dict:
    """The lineage details a shape contributes, as bound parameters (field names are data, not SQL)."""
    version = shape.version
    names = [f.name for f in shape.fields] + [version]
    if len(names) <= 6:
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        same = f"same {listed} as the stored row"
    else:
        same = f"same values in all {len(names)} fields as the stored row"
    return {"valid": f"valid; {version} ", "ver": f"{version} ",
            "older_stored": f" is older than the stored {version} ", "same": same}


# :ds typed like the column it is compared with, so that PostgreSQL deduces one type for the parameter.
_DS = "CAST(:ds AS VARCHAR(40))"
_LINEAGE = ("INSERT INTO lineage (dataset, run_id, pos, line, key, step, at, detail, dead_letter_id) "
            f"SELECT {_DS}, :run, ")
# Lineage with who: the `reprocessed` entries of a retry. :actor is typed too (it may be NULL).
_ACTOR = "CAST(:actor AS VARCHAR(128))"
_LINEAGE_BY = ("INSERT INTO lineage (dataset, run_id, pos, line, key, step, at, detail, dead_letter_id, actor) "
               f"SELECT {_DS}, :run, ")
# A record's read step is stamped when the run began reading (:read_at); its outcome when it applied (:now).
_STAGED = "s.pos, s.line, s.key, 'staged', :read_at, :valid || s.ver, NULL FROM sluice_stage s ORDER BY s.key, s.ver, s.pos"
_SKIPPED = ("s.pos, s.line, COALESCE(s.key, ''), 'skipped', :read_at, "
            ":ver || s.ver || ' is older than the watermark ' || :wm, NULL FROM sluice_skip s ORDER BY s.key, s.pos")
_REJECTED = ("r.pos, r.line, COALESCE(r.key, ''), 'rejected', :read_at, r.error || ': ' || r.detail, {dead_letter} "
             "FROM sluice_reject r ORDER BY r.key, r.pos")
_SUPERSEDED = ("w.pos, w.line, w.key, 'superseded', :now, "
               "'superseded by the record at position ' || CAST(w.winner AS TEXT) || ' of this run', NULL "
               "FROM sluice_win w ORDER BY w.key, w.pos")
_OUTCOME = ("o.pos, o.line, o.key, o.outcome, :now, "
            "CASE o.outcome WHEN 'inserted' THEN 'new key' "
            "WHEN 'unchanged' THEN :same "
            "WHEN 'stale' THEN :ver || o.ver || :older_stored || o.over "
            "|| '; stored row kept' ELSE u.detail END, NULL "
            "FROM sluice_out o LEFT JOIN sluice_upd u ON u.pos = o.pos")
# A new dead letter's columns, and its values from a reject `r` and its fingerprint's count `c.n`.
_DL_COLUMNS = ("dataset, run_id, last_run_id, pos, line, key, error, detail, raw, fingerprint, "
               "status, created_at, updated_at, attempts, sightings")
_DL_VALUES = f"{_DS}, :run, :run, r.pos, r.line, r.key, r.error, r.detail, r.raw, r.fp, 'open', :now, :now, 0, c.n "
# A sighting of open dead letters, each by its count `c.n` of this run's records (FROM what follows).
_SIGHTED = "UPDATE dead_letters SET sightings = sightings + c.n, last_run_id = :run, updated_at = :now FROM "


def _open_dead_letter(fp: str, but: str = "") -> str:
    """SQL for the open dead letter of fingerprint `fp` in the run's dataset (the oldest, should there be several)."""
    return ("(SELECT min(d.id) FROM dead_letters d "
            f"WHERE d.dataset = :ds AND d.fingerprint = {fp} AND d.status = 'open'{but})")


def parameters(staging: Staging, *, run_id: int, now: str, read_at: str, watermark: str | None,
               actor: str | None = None, base: int | None = None) -> dict:
    """The bound parameters of a run's apply and lineage SQL."""
    return {"run": run_id, "now": now, "read_at": read_at, "wm": watermark or "", "ds": staging.dataset.name,
            "actor": actor, "base": base, **texts(staging.dataset.shape)}


def reserve_dead_letters(staging: Staging, params: dict) -> None:
    """Before the lock (PostgreSQL, lineage writer): each reject's dead letter, an open one or a new id.

    A rejected record adds a sighting to the open dead letter of its fingerprint, or makes a new one
    (the first record of each fingerprint, ids in file order). Both are decided here, against what
    is committed, so that the `rejected` entries can name their dead letters beside the apply;
    `reservations_hold` tells under the lock whether the open dead letters are still these.
    """
    conn = staging.conn
    # nextval in the outer query, over rows already in file order: ids follow positions. A
    # reservation not used (a run that fails or falls back) leaves a gap, as any rollback does.
    conn.exec_driver_sql(_params(conn, (
        "CREATE TEMP TABLE sluice_dl AS SELECT g.fp, g.pos, g.n, g.open_id, "
        "CASE WHEN g.open_id IS NULL THEN nextval(pg_get_serial_sequence('dead_letters', 'id')) END AS new_id "
        f"FROM (SELECT c.fp, c.pos, c.n, {_open_dead_letter('c.fp')} AS open_id "
        "FROM (SELECT fp, min(pos) AS pos, count(*) AS n FROM sluice_reject GROUP BY fp) c ORDER BY c.pos) g"),
        params), params)
    conn.exec_driver_sql("CREATE UNIQUE INDEX ix_sluice_dl_fp ON sluice_dl (fp)")
    conn.exec_driver_sql("ANALYZE sluice_dl")


def analyze_dead_letters(conn, inserted: int) -> None:
    """Under the lock, after inserting `inserted` dead letters: ANALYZE them, if they are many (PostgreSQL)."""
    if conn.dialect.name == "postgresql" and inserted >= ANALYZE_DEAD_LETTERS:
        # Without statistics (a new table, or many rows of this transaction) both the
        # (dataset, fingerprint, status, id) index and (dataset, status, id) look like one row to
        # the planner, and it may take the latter for min(id), filtering on fingerprint: a walk over
        # every open dead letter per reject, quadratic (minutes at 50k rejects). ANALYZE sees this
        # transaction's rows and samples a bounded number of them (~0.2 s); the next run's
        # reserve_dead_letters probes the same way. Never before the lock: its table lock, held
        # to the end of the transaction, would block another run's ANALYZE under the lock.
        conn.exec_driver_sql("ANALYZE dead_letters")


def reservations_hold(staging: Staging, params: dict, *, inserted: int) -> bool:
    """Under the lock: whether every fingerprint's open dead letter is still the one `reserve_dead_letters` found.

    `inserted`: the run's own new ones, in the table already (`insert_reserved_dead_letters`).
    """
    conn = staging.conn
    analyze_dead_letters(conn, inserted)  # for the probes below
    # Leaving out the run's own new ones (insert_reserved_dead_letters), which it sees already.
    open_id = _open_dead_letter("x.fp", but=" AND d.id IS DISTINCT FROM x.new_id")
    return not conn.exec_driver_sql(_params(conn, (
        f"SELECT EXISTS (SELECT 1 FROM sluice_dl x WHERE x.open_id IS DISTINCT FROM {open_id})"),
        params), params).scalar()


def prepared_entries(staging: Staging, params: dict) -> list[tuple[str, dict]]:
    """A prepared run's `superseded` and `rejected` entries (naming the dead letters of `reserve_dead_letters`).

    As SELECTs of whole lineage rows with ids in the run's range, for
    lineage_writer.LineageWriter.outcomes, as are `outcome_entries`; the columns are lineage_writer.COLUMNS.
    """
    rejected = _REJECTED.format(dead_letter="(SELECT COALESCE(x.open_id, x.new_id) FROM sluice_dl x WHERE x.fp = r.fp)")
    return _whole_rows(staging, params, (("w", _SUPERSEDED, 1), ("r", rejected, 0)))


def outcome_entries(staging: Staging, params: dict) -> list[tuple[str, dict]]:
    """The outcome entries of a classified run (see `prepared_entries`)."""
    return _whole_rows(staging, params, (("o", _OUTCOME, 1),))


def skipped_entries(staging: Staging, params: dict) -> list[tuple[str, dict]]:
    """The `skipped` entries of a run, as a SELECT of whole lineage rows (for LineageWriter.replace)."""
    return _whole_rows(staging, params, (("s", _SKIPPED, 0),))


def _whole_rows(staging: Staging, params: dict, parts) -> list[tuple[str, dict]]:
    """Each (alias, body, slot) as a SELECT of lineage rows: id `base + 2 * pos + slot` (0 read step, 1 outcome)."""
    head = f"SELECT CAST(:base AS BIGINT) + 2 * {{a}}.pos + {{slot}}, {_DS}, :run, "
    return [(_params(staging.conn, head.format(a=a, slot=slot) + body, params), params) for a, body, slot in parts]


def apply(staging: Staging, *, params: dict, retry: bool, counts: LoadCounts, lineage=None) -> None:
    """Write the classified run into its dataset's table, dead letters and lineage (inside the write lock).

    `params` come from `parameters`; its `actor` (a label) is who asked for a retry of dead letters:
    their `updated_by` and `reprocessed` entries. With `lineage` (a LineageWriter, PostgreSQL), every
    entry is that writer's, and the new dead letters are in already (`insert_reserved_dead_letters`,
    counted in `counts.dead_letters`).
    """
    conn, ds = staging.conn, staging.dataset

    def sql(statement: str) -> int:
        return conn.exec_driver_sql(_params(conn, statement, params), params).rowcount

    table, key, payload, version, updated, run = _quoted(staging)
    staged = payload_names(ds)
    insert = (f"INSERT INTO {table} ({key}, {''.join(f'{c}, ' for c in payload)}{version}, {updated}, {run}) "
              f"SELECT key, {''.join(f'{p}, ' for p in staged)}ver, :now, :run FROM sluice_out ")
    # The outcomes were decided under the lock (or before it, with no apply since): an `inserted` key
    # is not in the table, so a plain INSERT does (a third cheaper on PostgreSQL than ON CONFLICT's
    # speculative insertion), and only the updated rows go through the upsert.
    sql(insert + "WHERE outcome = 'inserted'")
    sql(insert + f"WHERE outcome = 'updated' "
        f"ON CONFLICT ({key}) DO UPDATE SET {''.join(f'{c} = excluded.{c}, ' for c in payload)}"
        f"{version} = excluded.{version}, {updated} = excluded.{updated}, {run} = excluded.{run}")
    entries = _retried_dead_letters(sql) if retry else 0
    if not retry:
        if lineage is None:
            counts.dead_letters = _new_dead_letters(sql)
            analyze_dead_letters(conn, counts.dead_letters)
        else:  # the new ones are in already, and analyzed by reservations_hold
            # reserve_dead_letters counted each fingerprint's records and found its open dead letter
            # (reservations_hold: still that one, the only open one, as reopen merges): a probe by id.
            sql(_SIGHTED + "sluice_dl AS c WHERE dead_letters.id = c.open_id")
        dead_letter = _open_dead_letter("r.fp")
    else:
        dead_letter = "(SELECT t.dl_id FROM sluice_retry t WHERE t.pos = r.pos)"

    if lineage is not None:
        counts.lineage_entries = lineage.written
        return
    entries += sql(_LINEAGE + _STAGED)
    entries += sql(_LINEAGE + _SKIPPED)
    entries += sql(_LINEAGE + _REJECTED.format(dead_letter=dead_letter))
    entries += sql(_LINEAGE + _SUPERSEDED)
    entries += sql(_LINEAGE + _OUTCOME)
    counts.lineage_entries = entries


def insert_reserved_dead_letters(staging: Staging, params: dict) -> int:
    """Before the lock, in the apply's transaction: the new dead letters `reserve_dead_letters` chose; return how many.

    Inserted rows conflict with no one (no other transaction sees them, and ids come from the
    sequence), so they need not wait for the lock; `reservations_hold` checks under it that they are
    still the right ones. Their (trigram) index upkeep is most of what dead letters cost.
    """
    conn = staging.conn
    return conn.exec_driver_sql(_params(conn, (
        f"INSERT INTO dead_letters (id, {_DL_COLUMNS}) SELECT c.new_id, {_DL_VALUES}"
        "FROM sluice_reject r JOIN sluice_dl c ON r.pos = c.pos WHERE c.new_id IS NOT NULL ORDER BY r.pos"),
        params), params).rowcount


def _new_dead_letters(sql) -> int:
    """Dead letters for a file's rejects; the same record again (in this dataset) only counts a sighting."""
    sql(_SIGHTED + "(SELECT fp, count(*) AS n FROM sluice_reject GROUP BY fp) AS c "
        "WHERE dead_letters.dataset = :ds AND dead_letters.fingerprint = c.fp AND dead_letters.status = 'open'")
    return sql(
        f"INSERT INTO dead_letters ({_DL_COLUMNS}) SELECT {_DL_VALUES}"
        "FROM sluice_reject r JOIN (SELECT fp, min(pos) AS pos, count(*) AS n FROM sluice_reject "
        "GROUP BY fp) AS c ON r.pos = c.pos "
        "WHERE NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.dataset = :ds AND d.fingerprint = r.fp "
        "AND d.status = 'open') ORDER BY r.pos")


def _retried_dead_letters(sql) -> int:
    """Update retried dead letters (a pass resolves with the outcome, a failure keeps them open)."""
    sql("UPDATE dead_letters SET error = r.error, detail = r.detail, last_raw = r.raw, "
        f"attempts = attempts + 1, last_run_id = :run, updated_at = :now, updated_by = {_ACTOR} "
        "FROM sluice_reject r JOIN sluice_retry t ON t.pos = r.pos WHERE t.dl_id = dead_letters.id")
    sql("UPDATE dead_letters SET status = 'resolved', outcome = COALESCE(o.outcome, 'superseded'), "
        "resolved_run_id = :run, attempts = attempts + 1, last_run_id = :run, updated_at = :now, "
        f"last_raw = t.raw, updated_by = {_ACTOR} "
        "FROM sluice_retry t JOIN sluice_stage s ON s.pos = t.pos LEFT JOIN sluice_out o ON o.pos = t.pos "
        "WHERE t.dl_id = dead_letters.id")
    return sql(_LINEAGE_BY + "t.pos, NULL, COALESCE(s.key, r.key, ''), 'reprocessed', :now, "
               f"'retry of dead letter ' || CAST(t.dl_id AS TEXT), t.dl_id, {_ACTOR} FROM sluice_retry t "
               "LEFT JOIN sluice_stage s ON s.pos = t.pos LEFT JOIN sluice_reject r ON r.pos = t.pos "
               "ORDER BY t.pos")


_PARAM = re.compile(r"(?<![:\w]):(\w+)")


def _params(conn, statement: str, params: dict) -> str:
    """Turn :name parameters into the driver's own style (exec_driver_sql passes SQL through)."""
    if conn.dialect.name == "postgresql":
        return _PARAM.sub(lambda m: f"%({m.group(1)})s" if m.group(1) in params else m.group(0),
                          statement.replace("%", "%%"))
    return statement
