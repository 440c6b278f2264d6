"""responses.status compares bytewise (COLLATE "C") on PostgreSQL

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

``status`` holds codes (accepted, superseded, partial), never prose: the database's linguistic collation buys
nothing there, and the index every reader uses, (round_id, status, partnership_id), builds a third faster when
its text sorts bytewise (1.8 s -> 1.2 s after a million-row load). SQLite compares bytewise already.
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.alter_column('responses', 'status', type_=sa.String(16, collation='C'),
                        existing_type=sa.String(16), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.alter_column('responses', 'status', type_=sa.String(16),
                        existing_type=sa.String(16, collation='C'), existing_nullable=False)
