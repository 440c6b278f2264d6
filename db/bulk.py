"""Fast bulk inserts inside the caller's transaction: ``executemany`` on SQLite, ``COPY`` on PostgreSQL.

SQLAlchemy Core inserts (and pandas ``to_sql``) are about four times slower than the driver's own bulk path, which
matters for response files of a million rows. Values must already be what the column stores as text: JSON as a
string, timestamps as ISO strings (see :func:`timestamp_text`), ``None`` for NULL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, column, table

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _quoted(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return f'"{name}"'


def bulk_insert(connection: Connection, table_name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Insert ``rows`` (tuples in ``columns`` order) into ``table_name``; returns the number of rows written.

    Runs on the connection's current transaction: nothing is committed here.
    """
    column_list = ", ".join(_quoted(name) for name in columns)
    dialect = connection.dialect.name
    driver_connection = connection.connection.driver_connection
    if dialect == "sqlite":
        counter = _Counter(rows)
        placeholders = ", ".join("?" for _ in columns)
        cursor = driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(f"INSERT INTO {_quoted(table_name)} ({column_list}) VALUES ({placeholders})", counter)
        finally:
            cursor.close()
        return counter.count
    if dialect == "postgresql" and connection.dialect.driver == "psycopg":
        count = 0
        with driver_connection.cursor() as cursor:  # type: ignore[union-attr]
            with cursor.copy(f"COPY {_quoted(table_name)} ({column_list}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                    count += 1
        return count
    # Any other database: SQLAlchemy's executemany, slower but correct.
    target = table(table_name, *(column(name) for name in columns))
    batch = [dict(zip(columns, row, strict=True)) for row in rows]
    if batch:
        connection.execute(target.insert(), batch)
    return len(batch)


class _Counter:
    """Counts the rows an iterator hands to executemany without materialising them."""

    def __init__(self, rows: Iterable[Sequence[Any]]) -> None:
        self._rows = iter(rows)
        self.count = 0

    def __iter__(self) -> _Counter:
        return self

    def __next__(self) -> Sequence[Any]:
        row = next(self._rows)
        self.count += 1
        return row


def timestamp_format(connection: Connection) -> str:
    """strftime format for UTC timestamps as this database stores them (SQLAlchemy's own SQLite format)."""
    if connection.dialect.name == "sqlite":
        return "%Y-%m-%d %H:%M:%S.%f"
    return "%Y-%m-%d %H:%M:%S.%f+00:00"
