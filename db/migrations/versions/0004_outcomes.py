"""honest outcomes: the gates verdict of a run and its baseline dtype

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('gates_verdict', sa.String(length=20), nullable=True))
        batch.add_column(sa.Column('baseline_dtype', sa.String(length=10), nullable=False, server_default='fp32'))


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('baseline_dtype')
        batch.drop_column('gates_verdict')
