"""Each round records its token scheme and its secret's fingerprint; kept files say how their tokens are stored

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

- ``rounds.token_scheme``: how the round's tokens are spelled. Rounds opened before this revision keep
  ``b64url`` (URL-safe base64: their tokens are already in people's mailboxes and must still match); rounds
  opened after it get ``alnum`` (letters and digits only, safe in every survey tool and spreadsheet).
- ``rounds.token_fingerprint``: HMAC of a fixed label under the round's secret (never the secret), so that a
  round is never served with another secret. NULL for rounds opened before: set by their next use.
- ``ingested_files.token_storage``: how the kept file's token column is stored (``hashed``: each token replaced
  by its SHA-256; NULL: kept as received, before this revision or a file without a token column).
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


# Plain ALTER TABLE, no batch copy: SQLite (3.35+) adds and drops these columns in place, whereas copying
# ``rounds`` drops the old table, and its ON DELETE CASCADE foreign keys would empty round_participants and outbox.
def upgrade() -> None:
    op.add_column('rounds', sa.Column('token_scheme', sa.String(16), nullable=False, server_default='b64url'))
    op.add_column('rounds', sa.Column('token_fingerprint', sa.String(64), nullable=True))
    op.add_column('ingested_files', sa.Column('token_storage', sa.String(16), nullable=True))


def downgrade() -> None:
    op.drop_column('ingested_files', 'token_storage')
    op.drop_column('rounds', 'token_fingerprint')
    op.drop_column('rounds', 'token_scheme')
