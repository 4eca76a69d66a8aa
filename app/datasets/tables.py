"""A dataset's target table: its columns and indexes from the shape, and the DDL that builds and evolves it."""
import hashlib
from functools import lru_cache

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import BigInteger, Boolean, Column, Double, Index, MetaData, Table, Text
from sqlalchemy.engine import Connection

from ..models import Target, binary_text
from .shape import KEY_MAX_LENGTH, Field, Shape

DEFAULT = "events"
TABLE_PREFIX = "ds_"
UPDATED = "sluice_updated_at"  # when the row was last written, as canonical UTC text
RUN = "sluice_run_id"          # the run that last wrote it
IDENTIFIER_MAX = 63            # PostgreSQL's limit on a name; SQLite has none
TIME_LENGTH = 26               # canonical UTC text, YYYY-MM-DDTHH:MM:SS[.ffffff]


def table_name(name: str) -> str:
    """The SQL name of a dataset's target table (`target` for events)."""
    return Target.__tablename__ if name == DEFAULT else TABLE_PREFIX + name


def identifier(*parts: str) -> str:
    """A name made of `parts` joined by `_`, shortened with a hash of the whole when it is too long."""
    full = "_".join(parts)
    if len(full) <= IDENTIFIER_MAX:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:10]
    return f"{full[:IDENTIFIER_MAX - len(digest) - 1]}_{digest}"


def _column_type(f: Field):
    if f.type == "string":
        return binary_text(f.max_length)
    if f.type == "timestamp":
        return binary_text(TIME_LENGTH)
    return {"number": Double(), "integer": BigInteger(), "boolean": Boolean(), "json": Text()}[f.type]


def _indexed(f: Field) -> bool:
    return f.sortable or f.searchable


@lru_cache(maxsize=256)
def target_table(name: str, shape: Shape) -> Table:
    """The dataset's target table: the existing `target` table for events, else `ds_<name>` from the shape."""
    if name == DEFAULT:
        return Target.__table__
    sql_name = table_name(name)
    table = Table(
        sql_name,
        MetaData(),  # its own: tables of two versions of one shape never meet
        Column(shape.key, binary_text(KEY_MAX_LENGTH), primary_key=True),
        *(Column(f.name, _column_type(f), nullable=not f.required) for f in shape.fields),
        Column(shape.version, binary_text(TIME_LENGTH), nullable=False),
        Column(UPDATED, binary_text(TIME_LENGTH), nullable=False),
        Column(RUN, BigInteger(), nullable=True),
    )
    # Each index ends with the key: pages sort by (column, key) and page on from the last row.
    for column in (shape.version, UPDATED, *(f.name for f in shape.fields if _indexed(f))):
        Index(identifier("ix", sql_name, column, "key"), table.c[column], table.c[shape.key])
    return table


def create_table(conn: Connection, dataset) -> None:
    """Create a new dataset's target table and its indexes, in the caller's transaction."""
    _build(conn, None, dataset.table)


def evolve_table(conn: Connection, old, new) -> None:
    """Bring a dataset's table from its `old` version to its `new` one (columns, lengths, indexes)."""
    _build(conn, old.table, new.table)


def _build(conn: Connection, old: Table | None, new: Table) -> None:
    """Make the database's table `new`, given that it is `old` now (None: absent).

    Only the changes check_evolution allows can occur: a nullable column added, a string's length
    raised, an index added. Anything else would be a bug here, so it stops instead of guessing.
    """
    ops = Operations(MigrationContext.configure(conn))
    if old is None:
        new.create(conn)  # the table and its indexes, names quoted by SQLAlchemy
        return
    if old.name != new.name:
        raise ValueError(f"table {old.name!r} cannot become {new.name!r}")
    for column in new.columns:
        before = old.c.get(column.name)
        if before is None:
            if not column.nullable:
                raise ValueError(f"column {column.name!r} would be added as NOT NULL")
            ops.add_column(new.name, Column(column.name, column.type, nullable=True))
        elif _length(before) != _length(column):
            if _length(column) is None or (_length(before) is not None and _length(column) < _length(before)):
                raise ValueError(f"column {column.name!r} cannot shrink")
            # SQLite does not enforce a VARCHAR's length (the validator does), so there is nothing
            # to alter there; PostgreSQL gets ALTER COLUMN … TYPE VARCHAR(n) COLLATE "C", which
            # only widens and so rewrites nothing.
            if conn.dialect.name != "sqlite":
                ops.alter_column(new.name, column.name, type_=column.type, existing_type=before.type,
                                 existing_nullable=before.nullable)
    have = {index.name for index in old.indexes}
    for index in sorted(new.indexes, key=lambda i: i.name):
        if index.name not in have:
            index.create(conn)


def _length(column: Column) -> int | None:
    return getattr(column.type, "length", None)
