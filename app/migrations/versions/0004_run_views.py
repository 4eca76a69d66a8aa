"""run views: a dry run's would-be rejects kept with its record; indexes for the runs list's filters

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dry_run_rejects', sa.Text(), nullable=True))
    op.create_index('ix_runs_dataset_kind_id', 'runs', ['dataset', 'kind', 'id'], unique=False)
    op.create_index('ix_runs_dataset_queued_at', 'runs', ['dataset', 'queued_at'], unique=False)


def downgrade():
    op.drop_index('ix_runs_dataset_queued_at', table_name='runs')
    op.drop_index('ix_runs_dataset_kind_id', table_name='runs')
    # Not rebuilt on SQLite: runs refer to runs (retry_of_id), see 0002.
    with op.batch_alter_table('runs', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('dry_run_rejects')
