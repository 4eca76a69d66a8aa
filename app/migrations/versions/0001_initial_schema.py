"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-28
"""
import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('dead_letters',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('last_run_id', sa.BigInteger(), nullable=False),
    sa.Column('pos', sa.BigInteger(), nullable=False),
    sa.Column('line', sa.BigInteger(), nullable=True),
    sa.Column('key', sa.String(length=256).with_variant(sa.String(length=256, collation='C'), 'postgresql'), nullable=True),
    sa.Column('error', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('raw', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.String(length=26), nullable=False),
    sa.Column('updated_at', sa.String(length=26), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('sightings', sa.Integer(), nullable=False),
    sa.Column('last_raw', sa.Text(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=True),
    sa.Column('resolved_run_id', sa.BigInteger(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.create_index('ix_dead_letters_error_id', ['error', 'id'], unique=False)
        batch_op.create_index('ix_dead_letters_fingerprint', ['fingerprint', 'status'], unique=False)
        batch_op.create_index('ix_dead_letters_run_id', ['run_id', 'id'], unique=False)
        batch_op.create_index('ix_dead_letters_status_id', ['status', 'id'], unique=False)

    op.create_table('lineage',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.Column('pos', sa.BigInteger(), nullable=True),
    sa.Column('line', sa.BigInteger(), nullable=True),
    sa.Column('key', sa.String(length=256).with_variant(sa.String(length=256, collation='C'), 'postgresql'), nullable=False),
    sa.Column('step', sa.String(length=16), nullable=False),
    sa.Column('at', sa.String(length=26), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('dead_letter_id', sa.BigInteger(), nullable=True),
    sa.Column('actor', sa.String(length=128), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('lineage', schema=None) as batch_op:
        batch_op.create_index('ix_lineage_dead_letter', ['dead_letter_id'], unique=False, sqlite_where=sa.text('dead_letter_id IS NOT NULL'), postgresql_where=sa.text('dead_letter_id IS NOT NULL'))
        batch_op.create_index('ix_lineage_key_id', ['key', 'id'], unique=False)
        batch_op.create_index('ix_lineage_run_pos', ['run_id', 'pos'], unique=False)

    op.create_table('runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('source_name', sa.Text(), nullable=True),
    sa.Column('source_size', sa.BigInteger(), nullable=True),
    sa.Column('source_sha256', sa.String(length=64), nullable=True),
    sa.Column('file_path', sa.Text(), nullable=True),
    sa.Column('file_removed_at', sa.String(length=26), nullable=True),
    sa.Column('options', sa.Text(), nullable=False),
    sa.Column('retry_of_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('same_file_run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('dead_letter_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('queued_at', sa.String(length=26), nullable=False),
    sa.Column('started_at', sa.String(length=26), nullable=True),
    sa.Column('finished_at', sa.String(length=26), nullable=True),
    sa.Column('applied_seq', sa.BigInteger(), nullable=True),
    sa.Column('lock_seconds', sa.Double(), nullable=True),
    sa.Column('worker', sa.String(length=128), nullable=True),
    sa.Column('heartbeat_at', sa.String(length=26), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('input_records', sa.BigInteger(), nullable=False),
    sa.Column('skipped', sa.BigInteger(), nullable=False),
    sa.Column('rejected', sa.BigInteger(), nullable=False),
    sa.Column('staged', sa.BigInteger(), nullable=False),
    sa.Column('superseded', sa.BigInteger(), nullable=False),
    sa.Column('inserted', sa.BigInteger(), nullable=False),
    sa.Column('updated', sa.BigInteger(), nullable=False),
    sa.Column('unchanged', sa.BigInteger(), nullable=False),
    sa.Column('stale', sa.BigInteger(), nullable=False),
    sa.Column('dead_letters', sa.BigInteger(), nullable=False),
    sa.Column('lineage_entries', sa.BigInteger(), nullable=False),
    sa.Column('watermark_before', sa.String(length=26), nullable=True),
    sa.Column('watermark_after', sa.String(length=26), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['retry_of_id'], ['runs.id'], ),
    sa.ForeignKeyConstraint(['same_file_run_id'], ['runs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index('ix_runs_applied_seq', ['applied_seq'], unique=False)
        batch_op.create_index('ix_runs_sha256', ['source_sha256'], unique=False)
        batch_op.create_index('ix_runs_status_id', ['status', 'id'], unique=False)

    op.create_table('target',
    sa.Column('key', sa.String(length=256).with_variant(sa.String(length=256, collation='C'), 'postgresql'), nullable=False),
    sa.Column('name', sa.String(length=1024).with_variant(sa.String(length=1024, collation='C'), 'postgresql'), nullable=False),
    sa.Column('value', sa.Double(), nullable=False),
    sa.Column('ts', sa.String(length=26).with_variant(sa.String(length=26, collation='C'), 'postgresql'), nullable=False),
    sa.Column('updated_at', sa.String(length=26).with_variant(sa.String(length=26, collation='C'), 'postgresql'), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('target', schema=None) as batch_op:
        batch_op.create_index('ix_target_name_key', ['name', 'key'], unique=False)
        batch_op.create_index('ix_target_ts_key', ['ts', 'key'], unique=False)
        batch_op.create_index('ix_target_updated_key', ['updated_at', 'key'], unique=False)
        batch_op.create_index('ix_target_value_key', ['value', 'key'], unique=False)

    op.create_table('watermark_history',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('old_value', sa.String(length=26), nullable=True),
    sa.Column('new_value', sa.String(length=26), nullable=True),
    sa.Column('at', sa.String(length=26), nullable=False),
    sa.Column('via', sa.String(length=16), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.Column('actor', sa.String(length=128), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('watermark_history', schema=None) as batch_op:
        batch_op.create_index('ix_watermark_history_name_id', ['name', 'id'], unique=False)

    op.create_table('watermarks',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(length=26).with_variant(sa.String(length=26, collation='C'), 'postgresql'), nullable=True),
    sa.Column('updated_at', sa.String(length=26), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade():
    op.drop_table('watermarks')
    with op.batch_alter_table('watermark_history', schema=None) as batch_op:
        batch_op.drop_index('ix_watermark_history_name_id')

    op.drop_table('watermark_history')
    with op.batch_alter_table('target', schema=None) as batch_op:
        batch_op.drop_index('ix_target_value_key')
        batch_op.drop_index('ix_target_updated_key')
        batch_op.drop_index('ix_target_ts_key')
        batch_op.drop_index('ix_target_name_key')

    op.drop_table('target')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_status_id')
        batch_op.drop_index('ix_runs_sha256')
        batch_op.drop_index('ix_runs_applied_seq')

    op.drop_table('runs')
    with op.batch_alter_table('lineage', schema=None) as batch_op:
        batch_op.drop_index('ix_lineage_run_pos')
        batch_op.drop_index('ix_lineage_key_id')
        batch_op.drop_index('ix_lineage_dead_letter', sqlite_where=sa.text('dead_letter_id IS NOT NULL'), postgresql_where=sa.text('dead_letter_id IS NOT NULL'))

    op.drop_table('lineage')
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.drop_index('ix_dead_letters_status_id')
        batch_op.drop_index('ix_dead_letters_run_id')
        batch_op.drop_index('ix_dead_letters_fingerprint')
        batch_op.drop_index('ix_dead_letters_error_id')

    op.drop_table('dead_letters')
