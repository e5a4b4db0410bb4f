"""reliability: dead letters, enqueue bookkeeping for the sweeper, PostgreSQL teams sequence

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 23:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dead_letters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.Column('worker', sa.String(length=200), nullable=False),
    sa.Column('task', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('excerpt', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('enqueued_at', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('enqueue_count', sa.Integer(), nullable=False, server_default='0'))
    if op.get_bind().dialect.name == 'postgresql':
        # 0001 inserted the default team with id 1 explicitly; move the sequence past it
        op.execute("SELECT setval(pg_get_serial_sequence('teams', 'id'), (SELECT COALESCE(MAX(id), 1) FROM teams))")


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('enqueue_count')
        batch.drop_column('enqueued_at')
    op.drop_table('dead_letters')
