"""dead letter by fingerprint: (dataset, fingerprint, status, id), so min(id) of one open record is one probe

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

# Plain drop/create, never a batch recreate: that would rebuild dead_letters on SQLite and drop the
# FTS triggers of migration 0005.


def upgrade():
    op.drop_index('ix_dead_letters_dataset_fingerprint', table_name='dead_letters')
    op.create_index('ix_dead_letters_dataset_fingerprint_status_id', 'dead_letters',
                    ['dataset', 'fingerprint', 'status', 'id'], unique=False)


def downgrade():
    op.drop_index('ix_dead_letters_dataset_fingerprint_status_id', table_name='dead_letters')
    op.create_index('ix_dead_letters_dataset_fingerprint', 'dead_letters', ['dataset', 'fingerprint', 'status'],
                    unique=False)
