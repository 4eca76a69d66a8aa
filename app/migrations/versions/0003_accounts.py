"""accounts: users, API tokens, the audit log, and who uploaded or cancelled a run

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
TIME = sa.String(length=26)
ACTOR = sa.String(length=128)


def upgrade():
    op.create_table('users',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('name_key', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('password_hash', sa.String(length=256), nullable=False),
    sa.Column('session_epoch', sa.String(length=32), nullable=False),
    sa.Column('disabled_at', TIME, nullable=True),
    sa.Column('created_at', TIME, nullable=False),
    sa.Column('created_by', ACTOR, nullable=True),
    sa.Column('password_changed_at', TIME, nullable=False),
    sa.Column('last_sign_in_at', TIME, nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ux_users_name_key', 'users', ['name_key'], unique=True)

    op.create_table('api_tokens',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('user_id', BIG_ID, nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('hint', sa.String(length=32), nullable=False),
    sa.Column('created_at', TIME, nullable=False),
    sa.Column('expires_at', TIME, nullable=True),
    sa.Column('last_used_at', TIME, nullable=True),
    sa.Column('revoked_at', TIME, nullable=True),
    sa.Column('revoked_by', ACTOR, nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id']),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ux_api_tokens_secret_hash', 'api_tokens', ['secret_hash'], unique=True)
    op.create_index('ix_api_tokens_user_id', 'api_tokens', ['user_id', 'id'], unique=False)

    op.create_table('audit_log',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('at', TIME, nullable=False),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('actor', ACTOR, nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=True),
    sa.Column('user_name', sa.String(length=64), nullable=True),
    sa.Column('token_id', sa.BigInteger(), nullable=True),
    sa.Column('address', sa.String(length=64), nullable=True),
    sa.Column('object_type', sa.String(length=32), nullable=True),
    sa.Column('object_id', sa.String(length=256), nullable=True),
    sa.Column('dataset', sa.String(length=40), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_audit_log_user_name_id', 'audit_log', ['user_name', 'id'], unique=False)
    op.create_index('ix_audit_log_action_id', 'audit_log', ['action', 'id'], unique=False)
    op.create_index('ix_audit_log_at_id', 'audit_log', ['at', 'id'], unique=False)

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('created_by', ACTOR, nullable=True))
        batch_op.add_column(sa.Column('cancelled_by', ACTOR, nullable=True))
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('updated_by', ACTOR, nullable=True))


def downgrade():
    with op.batch_alter_table('dead_letters', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('updated_by')
    # Not rebuilt on SQLite: runs refer to runs (retry_of_id), see 0002.
    with op.batch_alter_table('runs', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('cancelled_by')
        batch_op.drop_column('created_by')
    op.drop_index('ix_audit_log_at_id', table_name='audit_log')
    op.drop_index('ix_audit_log_action_id', table_name='audit_log')
    op.drop_index('ix_audit_log_user_name_id', table_name='audit_log')
    op.drop_table('audit_log')
    op.drop_index('ix_api_tokens_user_id', table_name='api_tokens')
    op.drop_index('ux_api_tokens_secret_hash', table_name='api_tokens')
    op.drop_table('api_tokens')
    op.drop_index('ux_users_name_key', table_name='users')
    op.drop_table('users')
