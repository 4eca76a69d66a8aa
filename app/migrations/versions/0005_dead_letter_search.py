"""dead-letter search: text inside raw, last_raw and detail; key prefix; counts per code within a status

SQLite: an external-content FTS5 table (trigram tokenizer) over dead_letters, kept in step by
triggers. PostgreSQL: pg_trgm GIN indexes on the three columns; when the extension cannot be
created (no rights), the migration still succeeds and a search scans, with a logged warning.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""
import logging

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

SEARCHED = ("raw", "last_raw", "detail")
FTS = "dead_letters_fts"
TRIGRAM_INDEXES = {f"ix_dead_letters_trgm_{c}": c for c in SEARCHED}
# The FTS table follows the rows through triggers: every writer (pipeline, retries, the web's
# edits) stays as it is. Updates of other columns (status, attempts, …) do not fire them.
SQLITE_TRIGGERS = (
    f"""CREATE TRIGGER dead_letters_fts_insert AFTER INSERT ON dead_letters BEGIN
        INSERT INTO {FTS}(rowid, raw, last_raw, detail) VALUES (new.id, new.raw, new.last_raw, new.detail);
    END""",
    f"""CREATE TRIGGER dead_letters_fts_delete AFTER DELETE ON dead_letters BEGIN
        INSERT INTO {FTS}({FTS}, rowid, raw, last_raw, detail)
        VALUES ('delete', old.id, old.raw, old.last_raw, old.detail);
    END""",
    f"""CREATE TRIGGER dead_letters_fts_update AFTER UPDATE OF raw, last_raw, detail ON dead_letters BEGIN
        INSERT INTO {FTS}({FTS}, rowid, raw, last_raw, detail)
        VALUES ('delete', old.id, old.raw, old.last_raw, old.detail);
        INSERT INTO {FTS}(rowid, raw, last_raw, detail) VALUES (new.id, new.raw, new.last_raw, new.detail);
    END""",
)


def _has_trigram(bind) -> bool:
    return bind.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'").first() is not None


def upgrade():
    op.create_index('ix_dead_letters_dataset_key_id', 'dead_letters', ['dataset', 'key', 'id'], unique=False)
    op.create_index('ix_dead_letters_dataset_status_error_id', 'dead_letters',
                    ['dataset', 'status', 'error', 'id'], unique=False)
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute(f"CREATE VIRTUAL TABLE {FTS} USING fts5(raw, last_raw, detail, content='dead_letters', "
                   "content_rowid='id', tokenize='trigram')")
        op.execute(f"INSERT INTO {FTS}({FTS}) VALUES ('rebuild')")  # backfill the existing rows
        for trigger in SQLITE_TRIGGERS:
            op.execute(trigger)
        return
    try:
        with bind.begin_nested():  # a refused CREATE EXTENSION must not abort the whole upgrade
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except sa.exc.DBAPIError as exc:
        log.warning("dead-letter search is not indexed: pg_trgm could not be created (%s); "
                    "a search scans the dead letters", str(exc).splitlines()[0])
    if _has_trigram(bind):
        for name, column in TRIGRAM_INDEXES.items():
            op.execute(f"CREATE INDEX {name} ON dead_letters USING gin ({column} gin_trgm_ops)")


def downgrade():
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS dead_letters_fts_{trigger}")
        op.execute(f"DROP TABLE IF EXISTS {FTS}")
    else:
        for name in TRIGRAM_INDEXES:
            op.execute(f"DROP INDEX IF EXISTS {name}")
        # The extension stays: other databases objects may use it, and dropping needs rights.
    op.drop_index('ix_dead_letters_dataset_status_error_id', table_name='dead_letters')
    op.drop_index('ix_dead_letters_dataset_key_id', table_name='dead_letters')
