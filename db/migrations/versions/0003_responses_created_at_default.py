"""responses.created_at defaults to the database's clock

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

A million-row ingest leaves ``created_at`` to the server (``now()``: the time of the storing transaction) instead
of sending the same timestamp a million times for PostgreSQL to parse (0.4 s).
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.alter_column('created_at', existing_type=sa.DateTime(timezone=True), existing_nullable=False,
                              server_default=sa.func.now())


def downgrade() -> None:
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.alter_column('created_at', existing_type=sa.DateTime(timezone=True), existing_nullable=False,
                              server_default=None)
