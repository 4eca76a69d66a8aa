"""Sluice's tables on a plain SQLAlchemy DeclarativeBase: datasets, target, dead letters, lineage, watermarks, runs.

Every run, dead letter, lineage entry and watermark belongs to one dataset (column `dataset`, the
default dataset `events` when none is named). A dataset other than `events` has a target table of
its own, built from its shape at run time (see `datasets/tables.py`), so it is not a model here.

Staging is the sixth table of the model; it is a per-run TEMP table (see `pipeline/stage.py`), so
writing it never takes the main database's lock and nothing of a run stays in it.
"""
from sqlalchemy import BigInteger, Boolean, Double, ForeignKey, Index, Integer, String, Text, func, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def binary_text(length: int | None = None) -> String:
    """A string column that sorts and compares by code point on every database."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


# Integer on SQLite keeps the id an alias of the rowid; BIGINT on PostgreSQL for long histories.
BigId = BigInteger().with_variant(Integer(), "sqlite")
TIME = String(26)  # canonical UTC text, YYYY-MM-DDTHH:MM:SS[.ffffff]


class Base(DeclarativeBase):
    pass


DATASET_NAME = String(40)


def dataset_column() -> Mapped[str]:
    """The dataset a row belongs to; rows written before datasets existed belong to `events`."""
    return mapped_column(DATASET_NAME, server_default="events")


class Dataset(Base):
    __tablename__ = "datasets"

    name: Mapped[str] = mapped_column(DATASET_NAME, primary_key=True)
    title: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    shape: Mapped[str] = mapped_column(Text)  # the shape's plain JSON form
    version: Mapped[int] = mapped_column(Integer)
    table_name: Mapped[str] = mapped_column(String(64))
    watermark: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[str] = mapped_column(TIME)
    created_by: Mapped[str | None] = mapped_column(String(128))
    archived_at: Mapped[str | None] = mapped_column(TIME)
    archived_by: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        Index("ux_datasets_table_name", "table_name", unique=True),
        Index("ux_datasets_watermark", "watermark", unique=True),
    )


class DatasetVersion(Base):
    __tablename__ = "dataset_versions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dataset: Mapped[str] = mapped_column(DATASET_NAME)
    version: Mapped[int] = mapped_column(Integer)
    shape: Mapped[str] = mapped_column(Text)  # the shape's plain JSON form at this version
    changes: Mapped[str] = mapped_column(Text)  # a JSON array of lines: what this version changed
    at: Mapped[str] = mapped_column(TIME)
    actor: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (Index("ux_dataset_versions_dataset_version", "dataset", "version", unique=True),)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dataset: Mapped[str] = dataset_column()
    shape_version: Mapped[int | None] = mapped_column(Integer)  # the dataset's version the run used
    kind: Mapped[str] = mapped_column(String(16))  # upload, api, cli, reprocess, retry
    status: Mapped[str] = mapped_column(String(16), default="queued")
    source_name: Mapped[str | None] = mapped_column(Text)
    source_size: Mapped[int | None] = mapped_column(BigInteger)
    source_sha256: Mapped[str | None] = mapped_column(String(64))
    file_path: Mapped[str | None] = mapped_column(Text)
    file_removed_at: Mapped[str | None] = mapped_column(TIME)
    options: Mapped[str] = mapped_column(Text, default="{}")
    retry_of_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    same_file_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    dead_letter_id: Mapped[int | None] = mapped_column(BigId)
    queued_at: Mapped[str] = mapped_column(TIME)
    started_at: Mapped[str | None] = mapped_column(TIME)
    finished_at: Mapped[str | None] = mapped_column(TIME)
    applied_seq: Mapped[int | None] = mapped_column(BigInteger)
    lock_seconds: Mapped[float | None] = mapped_column(Double)
    worker: Mapped[str | None] = mapped_column(String(128))
    created_by: Mapped[str | None] = mapped_column(String(128))  # who uploaded, retried or reprocessed
    cancelled_by: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[str | None] = mapped_column(TIME)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    input_records: Mapped[int] = mapped_column(BigInteger, default=0)
    skipped: Mapped[int] = mapped_column(BigInteger, default=0)
    rejected: Mapped[int] = mapped_column(BigInteger, default=0)
    staged: Mapped[int] = mapped_column(BigInteger, default=0)
    superseded: Mapped[int] = mapped_column(BigInteger, default=0)
    inserted: Mapped[int] = mapped_column(BigInteger, default=0)
    updated: Mapped[int] = mapped_column(BigInteger, default=0)
    unchanged: Mapped[int] = mapped_column(BigInteger, default=0)
    stale: Mapped[int] = mapped_column(BigInteger, default=0)
    dead_letters: Mapped[int] = mapped_column(BigInteger, default=0)
    lineage_entries: Mapped[int] = mapped_column(BigInteger, default=0)
    watermark_before: Mapped[str | None] = mapped_column(TIME)
    watermark_after: Mapped[str | None] = mapped_column(TIME)
    error: Mapped[str | None] = mapped_column(Text)
    # A dry run's first would-be rejects (JSON list of {pos, line, key, error, detail, raw}); NULL otherwise.
    dry_run_rejects: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_runs_status_id", "status", "id"),
        Index("ix_runs_dataset_id", "dataset", "id"),
        Index("ix_runs_dataset_status_id", "dataset", "status", "id"),
        Index("ix_runs_sha256", "source_sha256"),
        Index("ix_runs_applied_seq", "applied_seq"),
        Index("ix_runs_dataset_kind_id", "dataset", "kind", "id"),
        Index("ix_runs_dataset_queued_at", "dataset", "queued_at"),
    )


class RunProgress(Base):
    """A running run's live progress where several hosts must see it (PostgreSQL); SQLite keeps it in files."""

    __tablename__ = "run_progress"

    run_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    data: Mapped[str] = mapped_column(Text)  # the reporter's JSON: phase, records, skipped, rejected, bytes
    updated_at: Mapped[str] = mapped_column(TIME)


class Target(Base):
    __tablename__ = "target"

    key: Mapped[str] = mapped_column(binary_text(256), primary_key=True)
    name: Mapped[str] = mapped_column(binary_text(1024))
    value: Mapped[float] = mapped_column(Double)
    ts: Mapped[str] = mapped_column(binary_text(26))
    updated_at: Mapped[str] = mapped_column(binary_text(26))
    run_id: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_target_ts_key", "ts", "key"),
        Index("ix_target_value_key", "value", "key"),
        Index("ix_target_updated_key", "updated_at", "key"),
        Index("ix_target_name_key", "name", "key"),
    )


class DeadLetter(Base):
    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dataset: Mapped[str] = dataset_column()
    run_id: Mapped[int] = mapped_column(BigInteger)
    last_run_id: Mapped[int] = mapped_column(BigInteger)
    pos: Mapped[int] = mapped_column(BigInteger)
    line: Mapped[int | None] = mapped_column(BigInteger)
    key: Mapped[str | None] = mapped_column(binary_text(256))
    error: Mapped[str] = mapped_column(String(80))  # codes name a field: up to 71 characters
    detail: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="open")  # open, resolved, discarded
    created_at: Mapped[str] = mapped_column(TIME)
    updated_at: Mapped[str] = mapped_column(TIME)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sightings: Mapped[int] = mapped_column(Integer, default=1)
    last_raw: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(String(16))
    resolved_run_id: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(Text)
    updated_by: Mapped[str | None] = mapped_column(String(128))  # who last discarded, reopened or retried it

    __table_args__ = (
        Index("ix_dead_letters_dataset_status_id", "dataset", "status", "id"),
        # Counts per error code within a status, from the index alone.
        Index("ix_dead_letters_dataset_status_error_id", "dataset", "status", "error", "id"),
        # Key-prefix search: a range of this index.
        Index("ix_dead_letters_dataset_key_id", "dataset", "key", "id"),
        Index("ix_dead_letters_dataset_error_id", "dataset", "error", "id"),
        Index("ix_dead_letters_dataset_run_id", "dataset", "run_id", "id"),
        # The same record again (SPEC §4): the open dead letter of a fingerprint, and its min(id), in one
        # probe. With id in the index no plan has to walk (dataset, status, id) filtering on fingerprint,
        # which PostgreSQL chose without statistics: quadratic in the open dead letters (migration 0007).
        Index("ix_dead_letters_dataset_fingerprint_status_id", "dataset", "fingerprint", "status", "id"),
    )


# The dead-letter search index (migration 0005) lives outside these models: SQLite's FTS5 table and
# its shadow tables, and PostgreSQL's pg_trgm indexes, which exist only where the extension could
# be created. Neither can be expressed here, so schema comparisons leave them out.
SEARCH_INDEX_OBJECTS = ("dead_letters_fts", "ix_dead_letters_trgm_")


# procrastinate's own tables, functions and types (the queue executor), kept by its schema, not ours.
QUEUE_OBJECTS = ("procrastinate_",)


def include_name(name, type_, parent_names) -> bool:
    """Whether a schema comparison looks at this reflected object (not the search index's or the queue's)."""
    return not (name or "").startswith(SEARCH_INDEX_OBJECTS + QUEUE_OBJECTS)


class Lineage(Base):
    __tablename__ = "lineage"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dataset: Mapped[str] = dataset_column()
    run_id: Mapped[int | None] = mapped_column(BigInteger)
    pos: Mapped[int | None] = mapped_column(BigInteger)
    line: Mapped[int | None] = mapped_column(BigInteger)
    key: Mapped[str] = mapped_column(binary_text(256), default="")
    step: Mapped[str] = mapped_column(String(16))
    at: Mapped[str] = mapped_column(TIME)
    detail: Mapped[str] = mapped_column(Text, default="")
    dead_letter_id: Mapped[int | None] = mapped_column(BigInteger)
    actor: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        Index("ix_lineage_dataset_key_id", "dataset", "key", "id"),
        Index("ix_lineage_run_pos", "run_id", "pos"),
        Index("ix_lineage_dead_letter", "dead_letter_id",
              sqlite_where=text("dead_letter_id IS NOT NULL"),
              postgresql_where=text("dead_letter_id IS NOT NULL")),
    )


# "Did you mean": keys that differ from a typed one only by (ASCII) case, one index probe per variant.
Index("ix_lineage_dataset_lower_key", Lineage.dataset, func.lower(Lineage.key), Lineage.key)


class Watermark(Base):
    __tablename__ = "watermarks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset: Mapped[str] = dataset_column()
    value: Mapped[str | None] = mapped_column(binary_text(26))
    updated_at: Mapped[str] = mapped_column(TIME)


class WatermarkHistory(Base):
    __tablename__ = "watermark_history"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[str] = dataset_column()
    old_value: Mapped[str | None] = mapped_column(TIME)
    new_value: Mapped[str | None] = mapped_column(TIME)
    at: Mapped[str] = mapped_column(TIME)
    via: Mapped[str] = mapped_column(String(16))  # pipeline, cli, web, api
    run_id: Mapped[int | None] = mapped_column(BigInteger)
    actor: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (Index("ix_watermark_history_name_id", "name", "id"),)


ACTOR = String(128)  # who: a user name, "alice (token deploy)", or "cli:<os user>"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))  # as typed; unique without regard to case (name_key)
    name_key: Mapped[str] = mapped_column(String(64))  # the name in lower case
    role: Mapped[str] = mapped_column(String(16))  # viewer, operator, admin
    password_hash: Mapped[str] = mapped_column(String(256))
    # Part of every session's id: changing it (a new password) ends every session made before.
    session_epoch: Mapped[str] = mapped_column(String(32))
    disabled_at: Mapped[str | None] = mapped_column(TIME)
    created_at: Mapped[str] = mapped_column(TIME)
    created_by: Mapped[str | None] = mapped_column(ACTOR)
    password_changed_at: Mapped[str] = mapped_column(TIME)
    last_sign_in_at: Mapped[str | None] = mapped_column(TIME)

    __table_args__ = (Index("ux_users_name_key", "name_key", unique=True),)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))  # at most the user's role when it was made
    secret_hash: Mapped[str] = mapped_column(String(64))  # SHA-256 hex of the whole token
    hint: Mapped[str] = mapped_column(String(32))  # the token's first characters, to recognise it in a list
    created_at: Mapped[str] = mapped_column(TIME)
    expires_at: Mapped[str | None] = mapped_column(TIME)
    last_used_at: Mapped[str | None] = mapped_column(TIME)
    revoked_at: Mapped[str | None] = mapped_column(TIME)
    revoked_by: Mapped[str | None] = mapped_column(ACTOR)

    __table_args__ = (
        Index("ux_api_tokens_secret_hash", "secret_hash", unique=True),
        Index("ix_api_tokens_user_id", "user_id", "id"),
    )


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[str] = mapped_column(TIME)
    action: Mapped[str] = mapped_column(String(40))  # sign_in, upload, discard, ... (accounts/audit.py)
    actor: Mapped[str] = mapped_column(ACTOR)  # the label shown: alice, alice (token deploy), cli:root
    user_id: Mapped[int | None] = mapped_column(BigInteger)  # no foreign key: entries outlive nothing
    user_name: Mapped[str | None] = mapped_column(String(64))  # lower case (name_key), for the filter
    token_id: Mapped[int | None] = mapped_column(BigInteger)
    address: Mapped[str | None] = mapped_column(String(64))
    object_type: Mapped[str | None] = mapped_column(String(32))  # run, dead_letter, watermark, dataset, user, token
    object_id: Mapped[str | None] = mapped_column(String(256))
    dataset: Mapped[str | None] = mapped_column(DATASET_NAME)
    detail: Mapped[str] = mapped_column(Text, default="")  # one line, or JSON for structured details

    __table_args__ = (
        Index("ix_audit_log_user_name_id", "user_name", "id"),
        Index("ix_audit_log_action_id", "action", "id"),
        Index("ix_audit_log_at_id", "at", "id"),
    )
