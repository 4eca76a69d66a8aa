"""run progress in the database: a run executed on one host shows its progress on every host

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'run_progress',
        sa.Column('run_id', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('data', sa.Text(), nullable=False),
        sa.Column('updated_at', sa.String(length=26), nullable=False),
        sa.PrimaryKeyConstraint('run_id'),
    )


def downgrade():
    op.drop_table('run_progress')
