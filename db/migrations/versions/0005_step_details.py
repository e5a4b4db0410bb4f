"""one record per step: structured diagnostics (per-layer tables, curves, settings) on the step row

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 02:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('step_results') as batch:
        batch.add_column(sa.Column('details', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('step_results') as batch:
        batch.drop_column('details')
