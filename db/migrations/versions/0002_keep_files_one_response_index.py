"""keep each ingested file's bytes; one index on responses

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

- ``ingested_files.content``: the file as received (zlib), so a response's raw cells are its row of the file;
  ``responses.raw`` becomes nullable (new rows leave it empty; rows stored under 0001 keep theirs).
- ``responses``: one index on (round_id, status, partnership_id) replaces (round_id, status) and
  (partnership_id); every query of responses filters on the round and the status.
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('ingested_files', schema=None) as batch_op:
        batch_op.add_column(sa.Column('content', sa.LargeBinary(), nullable=True))

    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.alter_column('raw', existing_type=sa.JSON(), nullable=True)
        batch_op.drop_index('ix_responses_round_status')
        batch_op.drop_index('ix_responses_partnership_id')
        batch_op.create_index(
            'ix_responses_round_status_partnership', ['round_id', 'status', 'partnership_id'], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.drop_index('ix_responses_round_status_partnership')
        batch_op.create_index('ix_responses_partnership_id', ['partnership_id'], unique=False)
        batch_op.create_index('ix_responses_round_status', ['round_id', 'status'], unique=False)
        # Rows stored under 0002 have no raw copy: downgrading needs them filled in from ingested_files.content.
        batch_op.alter_column('raw', existing_type=sa.JSON(), nullable=False)

    with op.batch_alter_table('ingested_files', schema=None) as batch_op:
        batch_op.drop_column('content')
