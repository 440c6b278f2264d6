"""Panel attributes: every panel column beyond the required ones is kept as given, in a JSON column

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

``partnerships.acronym``, ``strand`` and ``country`` become keys of ``partnerships.attributes`` (with whatever
other columns a panel has, e.g. ``sector``); ``round_participants.strand``, the strand a partnership had when the
round opened, becomes that round's snapshot ``round_participants.attributes``. Data moves with the schema: the
attributes are written from the old columns before these are dropped, and back on downgrade.
"""
import json

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def _write_attributes(bind: sa.engine.Connection, table_name: str, attributes: dict[int, dict[str, str]]) -> None:
    if not attributes:
        return
    table = sa.table(table_name, sa.column('id', sa.Integer()), sa.column('attributes', sa.JSON()))
    bind.execute(
        table.update().where(table.c.id == sa.bindparam('row_id'))
        .values(attributes=sa.bindparam('new_attributes', type_=sa.JSON())),
        [{'row_id': row_id, 'new_attributes': value} for row_id, value in attributes.items()],
    )


def _partnership_attributes(acronym: str | None, strand: int | None, country: str | None) -> dict[str, str]:
    attributes: dict[str, str] = {}
    # The reference panel's column order: acronym, strand, country.
    if acronym:
        attributes['acronym'] = acronym
    if strand is not None:
        attributes['strand'] = str(strand)
    if country:
        attributes['country'] = country
    return attributes


def upgrade() -> None:
    bind = op.get_bind()
    # Plain ALTER TABLE (no batch copy): SQLite (3.35+) adds and drops these columns in place, and copying
    # ``partnerships`` would trip the foreign keys that point at it.
    for table_name in ('partnerships', 'round_participants'):
        op.add_column(table_name, sa.Column('attributes', sa.JSON(), nullable=False, server_default='{}'))
    rows = bind.execute(sa.text('SELECT id, acronym, strand, country FROM partnerships')).all()
    _write_attributes(bind, 'partnerships', {row.id: _partnership_attributes(row.acronym, row.strand, row.country)
                                             for row in rows})
    # A round's snapshot: the partnership's attributes now, with the strand it had when the round opened.
    rows = bind.execute(sa.text(
        'SELECT rp.id, rp.strand, p.acronym, p.country FROM round_participants rp '
        'JOIN partnerships p ON p.id = rp.partnership_id')).all()
    _write_attributes(bind, 'round_participants',
                      {row.id: _partnership_attributes(row.acronym, row.strand, row.country) for row in rows})
    for table_name, column in (('partnerships', 'acronym'), ('partnerships', 'strand'),
                               ('partnerships', 'country'), ('round_participants', 'strand')):
        op.drop_column(table_name, column)
    if bind.dialect.name == 'postgresql':
        for table_name in ('partnerships', 'round_participants'):
            op.alter_column(table_name, 'attributes', server_default=None, existing_type=sa.JSON())


def _strand(attributes: dict[str, str]) -> int:
    try:
        return int(attributes.get('strand', 0))
    except (TypeError, ValueError):
        return 0


def downgrade() -> None:
    bind = op.get_bind()
    op.add_column('partnerships', sa.Column('acronym', sa.String(64), nullable=True))
    op.add_column('partnerships', sa.Column('strand', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('partnerships', sa.Column('country', sa.String(2), nullable=False, server_default=''))
    op.add_column('round_participants', sa.Column('strand', sa.Integer(), nullable=False, server_default='0'))
    table = sa.table('partnerships', sa.column('id', sa.Integer()), sa.column('attributes', sa.JSON()))
    for row in bind.execute(sa.select(table.c.id, table.c.attributes)).all():
        attributes = row.attributes if isinstance(row.attributes, dict) else json.loads(row.attributes or '{}')
        bind.execute(sa.text('UPDATE partnerships SET acronym = :acronym, strand = :strand, country = :country '
                             'WHERE id = :id'),
                     {'id': row.id, 'acronym': attributes.get('acronym') or None, 'strand': _strand(attributes),
                      'country': (attributes.get('country') or '')[:2]})
    table = sa.table('round_participants', sa.column('id', sa.Integer()), sa.column('attributes', sa.JSON()))
    for row in bind.execute(sa.select(table.c.id, table.c.attributes)).all():
        attributes = row.attributes if isinstance(row.attributes, dict) else json.loads(row.attributes or '{}')
        bind.execute(sa.text('UPDATE round_participants SET strand = :strand WHERE id = :id'),
                     {'id': row.id, 'strand': _strand(attributes)})
    op.drop_column('partnerships', 'attributes')
    op.drop_column('round_participants', 'attributes')
