"""datasets: the catalogue, and the dataset every run, dead letter, lineage entry and watermark belongs to

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# Written out, not taken from the code: this migration must build the same row whatever the shape
# module later becomes. It is EVENTS_SHAPE.to_dict() as of this revision.
EVENTS_SHAPE_JSON = (
    '{"key":"key","version":"ts","fields":['
    '{"name":"name","type":"string","required":true,"max_length":1024,"sortable":true,"searchable":true},'
    '{"name":"value","type":"number","required":true,"sortable":true}]}'
)
EVENTS_TITLE = "Events"
EVENTS_DESCRIPTION = "The seed's records: key, name, value and ts."
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
TIME = sa.String(length=26)
OWNED = ('runs', 'dead_letters', 'lineage', 'watermarks', 'watermark_history')


def _dataset_column():
    return sa.Column('dataset', sa.String(length=40), server_default='events', nullable=False)


def upgrade():
    op.create_table('datasets',
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('shape', sa.Text(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('table_name', sa.String(length=64), nullable=False),
    sa.Column('watermark', sa.String(length=64), nullable=False),
    sa.Column('created_at', TIME, nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=True),
    sa.Column('archived_at', TIME, nullable=True),
    sa.Column('archived_by', sa.String(length=128), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_index('ux_datasets_table_name', 'datasets', ['table_name'], unique=True)
    op.create_index('ux_datasets_watermark', 'datasets', ['watermark'], unique=True)

    op.create_table('dataset_versions',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('dataset', sa.String(length=40), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('shape', sa.Text(), nullable=False),
    sa.Column('changes', sa.Text(), nullable=False),
    sa.Column('at', TIME, nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ux_dataset_versions_dataset_version', 'dataset_versions', ['dataset', 'version'], unique=True)

    # Every existing row was written for the only dataset there was: the server default fills them.
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(_dataset_column())
        batch_op.add_column(sa.Column('shape_version', sa.Integer(), nullable=True))
        batch_op.create_index('ix_runs_dataset_id', ['dataset', 'id'], unique=False)
        batch_op.create_index('ix_runs_dataset_status_id', ['dataset', 'status', 'id'], unique=False)

    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.add_column(_dataset_column())
        batch_op.alter_column('error', existing_type=sa.String(length=32), type_=sa.String(length=80),
                              existing_nullable=False)
        batch_op.drop_index('ix_dead_letters_status_id')
        batch_op.drop_index('ix_dead_letters_error_id')
        batch_op.drop_index('ix_dead_letters_run_id')
        batch_op.drop_index('ix_dead_letters_fingerprint')
        batch_op.create_index('ix_dead_letters_dataset_status_id', ['dataset', 'status', 'id'], unique=False)
        batch_op.create_index('ix_dead_letters_dataset_error_id', ['dataset', 'error', 'id'], unique=False)
        batch_op.create_index('ix_dead_letters_dataset_run_id', ['dataset', 'run_id', 'id'], unique=False)
        batch_op.create_index('ix_dead_letters_dataset_fingerprint', ['dataset', 'fingerprint', 'status'],
                              unique=False)

    with op.batch_alter_table('lineage', schema=None) as batch_op:
        batch_op.add_column(_dataset_column())
        batch_op.drop_index('ix_lineage_key_id')
        batch_op.create_index('ix_lineage_dataset_key_id', ['dataset', 'key', 'id'], unique=False)

    for table in ('watermarks', 'watermark_history'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(_dataset_column())

    now = datetime.now(UTC).replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S.%f")
    datasets = sa.table('datasets', *(sa.column(c) for c in (
        'name', 'title', 'description', 'shape', 'version', 'table_name', 'watermark', 'created_at')))
    versions = sa.table('dataset_versions', *(sa.column(c) for c in (
        'dataset', 'version', 'shape', 'changes', 'at')))
    op.bulk_insert(datasets, [{
        'name': 'events', 'title': EVENTS_TITLE, 'description': EVENTS_DESCRIPTION, 'shape': EVENTS_SHAPE_JSON,
        'version': 1, 'table_name': 'target', 'watermark': 'events_ts', 'created_at': now,
    }])
    op.bulk_insert(versions, [{
        'dataset': 'events', 'version': 1, 'shape': EVENTS_SHAPE_JSON, 'changes': '["created"]', 'at': now,
    }])


def downgrade():
    bind = op.get_bind()
    others = [row[0] for row in bind.execute(sa.text("SELECT name FROM datasets WHERE name <> 'events' ORDER BY name"))]
    if others:
        # Revision 0001 knows one dataset only: going back would mix these datasets' runs, dead
        # letters and lineage into those of events. Nothing is dropped silently.
        raise RuntimeError(f"cannot downgrade below 0002 while datasets other than events exist: {', '.join(others)}")

    for table in ('watermark_history', 'watermarks'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('dataset')

    with op.batch_alter_table('lineage', schema=None) as batch_op:
        batch_op.drop_index('ix_lineage_dataset_key_id')
        batch_op.create_index('ix_lineage_key_id', ['key', 'id'], unique=False)
        batch_op.drop_column('dataset')

    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.drop_index('ix_dead_letters_dataset_fingerprint')
        batch_op.drop_index('ix_dead_letters_dataset_run_id')
        batch_op.drop_index('ix_dead_letters_dataset_error_id')
        batch_op.drop_index('ix_dead_letters_dataset_status_id')
        batch_op.create_index('ix_dead_letters_fingerprint', ['fingerprint', 'status'], unique=False)
        batch_op.create_index('ix_dead_letters_run_id', ['run_id', 'id'], unique=False)
        batch_op.create_index('ix_dead_letters_error_id', ['error', 'id'], unique=False)
        batch_op.create_index('ix_dead_letters_status_id', ['status', 'id'], unique=False)
        # Codes of events' own fields are at most 32 characters; longer ones belong to other datasets.
        batch_op.alter_column('error', existing_type=sa.String(length=80), type_=sa.String(length=32),
                              existing_nullable=False)
        batch_op.drop_column('dataset')

    # Not rebuilt on SQLite: runs refer to runs (retry_of_id), so dropping the old copy of the table
    # would fail its foreign keys. ALTER TABLE … DROP COLUMN (SQLite 3.35) needs no copy.
    with op.batch_alter_table('runs', schema=None, recreate='never') as batch_op:
        batch_op.drop_index('ix_runs_dataset_status_id')
        batch_op.drop_index('ix_runs_dataset_id')
        batch_op.drop_column('shape_version')
        batch_op.drop_column('dataset')

    op.drop_index('ux_dataset_versions_dataset_version', table_name='dataset_versions')
    op.drop_table('dataset_versions')
    op.drop_index('ux_datasets_watermark', table_name='datasets')
    op.drop_index('ux_datasets_table_name', table_name='datasets')
    op.drop_table('datasets')
