"""lineage key lookup: an index on (dataset, lower(key), key) for "did you mean" across case

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_lineage_dataset_lower_key', 'lineage', ['dataset', sa.text('lower(key)'), 'key'], unique=False)


def downgrade():
    op.drop_index('ix_lineage_dataset_lower_key', table_name='lineage')
