"""searches over a playbook's parameters; a run can be a search's trial

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 15:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'searches',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('team_id', sa.Integer(), sa.ForeignKey('teams.id'), nullable=False),
        sa.Column('playbook_name', sa.String(length=200), nullable=False),
        sa.Column('playbook_snapshot', sa.JSON(), nullable=False),
        sa.Column('workload', sa.String(length=500), nullable=False),
        sa.Column('device', sa.String(length=20), nullable=False),
        sa.Column('baseline_dtype', sa.String(length=10), nullable=False, server_default='fp32'),
        sa.Column('dispatch', sa.String(length=10), nullable=False, server_default='celery'),
        sa.Column('status', sa.String(length=20), nullable=False, server_default='running'),
        sa.Column('cancel_requested', sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column('version', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('finished_at', sa.DateTime(), nullable=True),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('result', sa.JSON(), nullable=True),
    )
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('search_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('trial_number', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('trial_params', sa.JSON(), nullable=True))
        batch.create_foreign_key('fk_runs_search_id', 'searches', ['search_id'], ['id'], ondelete='SET NULL')
        batch.create_index('ix_runs_search_id', ['search_id'])


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.drop_index('ix_runs_search_id')
        batch.drop_constraint('fk_runs_search_id', type_='foreignkey')
        batch.drop_column('trial_params')
        batch.drop_column('trial_number')
        batch.drop_column('search_id')
    op.drop_table('searches')
