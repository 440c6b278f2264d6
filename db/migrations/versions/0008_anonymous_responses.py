"""responses of anonymous rounds: no partnership, the survey tool's response id instead

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-02

A round whose questionnaire matches by ``response_id`` (an anonymous consultation) stores responses that belong
to no partnership: ``partnership_id`` becomes nullable and ``response_key`` keeps the tool's own response id
(LimeSurvey ``id``, Qualtrics ``ResponseId``, KoBo ``_id``, ODK ``KEY``, EUSurvey contribution id), by which a
later export of the same response supersedes the earlier one. Rows of other rounds keep ``response_key`` NULL.
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.alter_column('partnership_id', existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column('response_key', sa.String(length=200), nullable=True))


def downgrade() -> None:
    op.execute("DELETE FROM responses WHERE partnership_id IS NULL")
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.drop_column('response_key')
        batch_op.alter_column('partnership_id', existing_type=sa.Integer(), nullable=False)
