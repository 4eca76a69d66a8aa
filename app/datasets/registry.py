"""The catalogue of datasets: read one (cheaply, per request or run), create, evolve and archive them.

Each change is one write transaction holding the catalogue row, the version row and the DDL of the
dataset's table, so a failure anywhere leaves nothing half made (SQLite and PostgreSQL both have
transactional DDL).
"""
import json
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from sqlalchemy import Column, Table, bindparam, insert, inspect, select, update
from sqlalchemy.engine import Connection

from ..accounts import audit
from ..accounts.actor import Actor
from ..database import reading, write_transaction
from ..models import Dataset as DatasetRow
from ..models import DatasetVersion, Watermark
from ..pipeline.validate import now_text
from . import tables
from .shape import NAME_RE, Shape, ShapeError, check_evolution, check_indexable, parse_shape

DEFAULT = tables.DEFAULT
WATERMARK_MAX = 64  # watermarks.name
# Words that follow /datasets/ in the pages' and the API's own addresses.
ROUTE_WORDS = ("new", "propose", "shape_schema")
_NAME_RULE = "a lowercase letter, then up to 39 lowercase letters, digits or _"


class DatasetError(ValueError):
    """A dataset operation is refused; `code` is not_found, invalid, conflict or archived."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Dataset:
    """One version of a dataset as the catalogue holds it, with its table and validator."""

    name: str
    title: str
    description: str
    shape: Shape
    version: int
    archived_at: str | None
    created_at: str
    table: Table = field(repr=False, compare=False)
    watermark: str = ""

    @property
    def key_col(self) -> Column:
        """The key column of the target table."""
        return self.table.c[self.shape.key]

    @property
    def version_col(self) -> Column:
        """The version column (for events: `ts`)."""
        return self.table.c[self.shape.version]

    @property
    def payload_cols(self) -> tuple[Column, ...]:
        """The payload columns, in the shape's order."""
        return tuple(self.table.c[f.name] for f in self.shape.fields)

    @property
    def updated_col(self) -> Column:
        """When a row was last written (events: `updated_at`, others: `sluice_updated_at`)."""
        return self.table.c[_OWN_COLUMNS[self.name == DEFAULT][0]]

    @property
    def run_col(self) -> Column:
        """The run that last wrote a row (events: `run_id`, others: `sluice_run_id`)."""
        return self.table.c[_OWN_COLUMNS[self.name == DEFAULT][1]]

    @property
    def archived(self) -> bool:
        """Whether the dataset is archived (readable, but no new runs)."""
        return self.archived_at is not None

    @cached_property
    def validator(self):
        """The shape's validator, compiled on first use and shared by every object of this shape."""
        from .validator import compile_validator  # the validator imports the pipeline, which imports this

        return compile_validator(self.shape)

    def to_dict(self) -> dict:
        """The dataset as plain JSON."""
        return {
            "name": self.name, "title": self.title, "description": self.description,
            "shape": self.shape.to_dict(), "version": self.version, "archived_at": self.archived_at,
            "created_at": self.created_at, "table": self.table.name, "watermark": self.watermark,
        }


_OWN_COLUMNS = {True: ("updated_at", "run_id"), False: (tables.UPDATED, tables.RUN)}
_COLUMNS = (DatasetRow.name, DatasetRow.title, DatasetRow.description, DatasetRow.shape, DatasetRow.version,
            DatasetRow.archived_at, DatasetRow.created_at, DatasetRow.watermark)


@lru_cache(maxsize=64)
def _parsed(shape_json: str) -> Shape:
    return parse_shape(json.loads(shape_json))


@lru_cache(maxsize=256)
def _from_row(name, title, description, shape_json, version, archived_at, created_at, watermark) -> Dataset:
    # Keyed by the whole row, not (name, version) alone: two test databases, or a database restored
    # from a backup, may hold different rows under the same name and version.
    shape = _parsed(shape_json)
    return Dataset(name=name, title=title, description=description, shape=shape, version=version,
                   archived_at=archived_at, created_at=created_at, table=tables.target_table(name, shape),
                   watermark=watermark)


# Built once: executing the same statement object skips SQLAlchemy's per-call compile-cache work,
# a third of a read's cost (it happens on every request and run).
_BY_NAME = select(*_COLUMNS).where(DatasetRow.name == bindparam("name"))


def _get(conn: Connection, name: str) -> Dataset | None:
    row = conn.execute(_BY_NAME, {"name": name}).first()
    return _from_row(*row) if row is not None else None


def get_dataset(conn: Connection, name: str = DEFAULT) -> Dataset:
    """The dataset of that name as it is now; DatasetError("not_found") when there is none."""
    if not isinstance(name, str):
        raise DatasetError("not_found", f"there is no dataset {name!r}")
    with reading(conn):
        dataset = _get(conn, name)
    if dataset is None:
        raise DatasetError("not_found", f"there is no dataset {name!r}")
    return dataset


def resolve(conn: Connection, dataset: "Dataset | str | None") -> Dataset:
    """A Dataset as given, or the dataset of that name, or events for None."""
    if isinstance(dataset, Dataset):
        return dataset
    return get_dataset(conn, DEFAULT if dataset is None else dataset)


def list_datasets(conn: Connection) -> list[Dataset]:
    """Every dataset, archived ones too: events first, then by name."""
    with reading(conn):
        rows = conn.execute(select(*_COLUMNS).order_by(DatasetRow.name)).all()
    found = [_from_row(*row) for row in rows]
    return sorted(found, key=lambda d: (d.name != DEFAULT, d.name))


def shape_versions(conn: Connection, name: str) -> list[dict]:
    """The dataset's versions, newest first: version, shape (plain JSON), changes, at, actor."""
    get_dataset(conn, name)
    with reading(conn):
        rows = conn.execute(
            select(DatasetVersion.version, DatasetVersion.shape, DatasetVersion.changes, DatasetVersion.at,
                   DatasetVersion.actor)
            .where(DatasetVersion.dataset == name).order_by(DatasetVersion.version.desc())
        ).all()
    return [{"version": r.version, "shape": json.loads(r.shape), "changes": json.loads(r.changes),
             "at": r.at, "actor": r.actor} for r in rows]


def ensure_writable(dataset: Dataset) -> None:
    """Raise DatasetError("archived") when the dataset takes no new runs."""
    if dataset.archived:
        raise DatasetError("archived", f"dataset {dataset.name!r} is archived since {dataset.archived_at}: "
                                       "its data stays readable, but it takes no new runs")


def watermark_name(name: str, shape: Shape) -> str:
    """The name a new dataset's watermark gets: `<name>_<version field>` (shortened when too long)."""
    return "events_ts" if name == DEFAULT else tables.identifier(name, shape.version)[:WATERMARK_MAX]


def _shape(shape) -> Shape:
    try:
        # A Shape built in code is checked like plain JSON: its names become SQL identifiers.
        return parse_shape(shape.to_dict() if isinstance(shape, Shape) else shape)
    except ShapeError as exc:
        raise DatasetError("invalid", str(exc)) from None


def _indexable(shape: Shape, before: Shape | None = None) -> None:
    try:
        check_indexable(shape, before)
    except ShapeError as exc:
        raise DatasetError("invalid", str(exc)) from None


def _text(value, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DatasetError("invalid", f"the {what} must be text")
    return value.strip()


def _insert_version(conn: Connection, name: str, version: int, shape: Shape, changes: list[str], at: str,
                    actor: Actor | None, action: str) -> None:
    """The dataset's new version row and (given an actor) the audit entry of the change that made it."""
    conn.execute(insert(DatasetVersion).values(
        dataset=name, version=version, shape=_json(shape), changes=json.dumps(changes, ensure_ascii=False),
        at=at, actor=_label(actor),
    ))
    if actor is not None:
        audit.record(conn, action, actor, object_type="dataset", object_id=name, dataset=name, at=at,
                     detail={"version": version, "changes": changes})


def _label(actor: Actor | None) -> str | None:
    return actor.label if actor is not None else None


def _json(shape: Shape) -> str:
    return json.dumps(shape.to_dict(), separators=(",", ":"))


def create_dataset(conn: Connection, name: str, shape: "Shape | dict", *, title: str = "", description: str = "",
                   actor: Actor | None = None) -> Dataset:
    """Create a dataset and its empty table in one transaction (audited given `actor`); DatasetError when refused."""
    if not isinstance(name, str) or not re.fullmatch(NAME_RE, name):
        raise DatasetError("invalid", f"{name!r} is not a valid dataset name ({_NAME_RULE})")
    if name in ROUTE_WORDS:
        raise DatasetError("invalid", f"{name!r} names a page of its own (/datasets/{name}); choose another name")
    parsed = _shape(shape)
    _indexable(parsed)
    title, description = _text(title, "title"), _text(description, "description")
    watermark = watermark_name(name, parsed)
    table_name = tables.table_name(name)
    with write_transaction(conn):
        if _get(conn, name) is not None:
            raise DatasetError("conflict", f"a dataset named {name!r} exists already")
        taken = conn.execute(select(DatasetRow.name).where(DatasetRow.watermark == watermark)).scalar()
        if taken is not None or conn.execute(select(Watermark.name).where(Watermark.name == watermark)).first():
            raise DatasetError("conflict", f"the watermark name {watermark!r} ({name}_{parsed.version}) is taken"
                                           + (f" by dataset {taken!r}" if taken else "")
                                           + ": choose another dataset name or version field name")
        if inspect(conn).has_table(table_name):
            raise DatasetError("conflict", f"a table named {table_name!r} exists already in the database")
        now = now_text()
        conn.execute(insert(DatasetRow).values(
            name=name, title=title, description=description, shape=_json(parsed), version=1,
            table_name=table_name, watermark=watermark, created_at=now, created_by=_label(actor),
        ))
        dataset = _get(conn, name)
        tables.create_table(conn, dataset)
        _insert_version(conn, name, 1, parsed, ["created"], now, actor, "dataset_create")
    return dataset


def evolve_dataset(conn: Connection, name: str, *, shape: "Shape | dict | None" = None, title: str | None = None,
                   description: str | None = None, actor: Actor | None = None) -> Dataset:
    """Apply allowed changes (shape, title, description) as a new version, audited given `actor`.

    Raises DatasetError when refused.
    """
    new_shape = _shape(shape) if shape is not None else None
    with write_transaction(conn):
        old = _get(conn, name)
        if old is None:
            raise DatasetError("not_found", f"there is no dataset {name!r}")
        if old.archived:
            raise DatasetError("archived", f"dataset {name!r} is archived since {old.archived_at}: "
                                           "its shape and title no longer change")
        changes: list[str] = []
        if new_shape is not None and new_shape != old.shape:
            if name == DEFAULT:
                raise DatasetError("conflict", "the events dataset keeps the seed's shape (key, name, value, ts); "
                                               "create a new dataset for records of another shape")
            try:
                changes += check_evolution(old.shape, new_shape)
            except ShapeError as exc:
                raise DatasetError("conflict", str(exc)) from None
            _indexable(new_shape, old.shape)
        else:
            new_shape = old.shape
        values = {}
        for what, new_value, old_value in (("title", title, old.title), ("description", description, old.description)):
            if new_value is None:
                continue
            new_value = _text(new_value, what)
            if new_value != old_value:
                values[what] = new_value
                changes.append(f"changed the {what} from {old_value!r} to {new_value!r}")
        if not changes:
            return old
        version = old.version + 1
        conn.execute(update(DatasetRow).where(DatasetRow.name == name)
                     .values(shape=_json(new_shape), version=version, **values))
        new = _get(conn, name)
        tables.evolve_table(conn, old, new)
        _insert_version(conn, name, version, new_shape, changes, now_text(), actor, "dataset_evolve")
    return new


def archive_dataset(conn: Connection, name: str, *, actor: Actor | None = None) -> Dataset:
    """Archive a dataset: it takes no new runs, and its table and history stay readable (audited given `actor`)."""
    with write_transaction(conn):
        old = _get(conn, name)
        if old is None:
            raise DatasetError("not_found", f"there is no dataset {name!r}")
        if name == DEFAULT:
            raise DatasetError("conflict", "the events dataset cannot be archived: it is the dataset every "
                                           "page, command and upload means when none is named")
        if old.archived:
            raise DatasetError("archived", f"dataset {name!r} is archived already (since {old.archived_at})")
        now = now_text()
        version = old.version + 1
        conn.execute(update(DatasetRow).where(DatasetRow.name == name)
                     .values(version=version, archived_at=now, archived_by=_label(actor)))
        dataset = _get(conn, name)
        _insert_version(conn, name, version, old.shape, ["archived"], now, actor, "dataset_archive")
    return dataset
