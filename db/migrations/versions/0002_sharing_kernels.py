"""share links, kernel benchmarks, device ceilings, notes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 07:47:56.594209
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('device_ceilings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_name', sa.String(length=200), nullable=False),
    sa.Column('copy_gb_per_s', sa.Float(), nullable=False),
    sa.Column('matmul_tflop_per_s', sa.JSON(), nullable=False),
    sa.Column('measured_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('device_name')
    )
    op.create_table('kernel_benchmarks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('team_id', sa.Integer(), nullable=False),
    sa.Column('kernel', sa.String(length=100), nullable=False),
    sa.Column('shape', sa.String(length=200), nullable=False),
    sa.Column('dtype', sa.String(length=20), nullable=False),
    sa.Column('device', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('mode', sa.String(length=20), nullable=False),
    sa.Column('row', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('share_links',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('playbook_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['playbook_id'], ['playbooks.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('playbooks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('notes', sa.Text(), nullable=True))

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('notes', sa.Text(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('notes')

    with op.batch_alter_table('playbooks', schema=None) as batch_op:
        batch_op.drop_column('notes')

    op.drop_table('share_links')
    op.drop_table('kernel_benchmarks')
    op.drop_table('device_ceilings')
