"""Fast bulk inserts inside the caller's transaction: ``executemany`` on SQLite, ``COPY`` on PostgreSQL.

SQLAlchemy Core inserts (and pandas ``to_sql``) are about four times slower than the driver's own bulk path, which
matters for response files of a million rows. Values must already be what the column stores as text: JSON as a
string, timestamps as ISO strings (see :func:`timestamp_text`), ``None`` for NULL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, ForeignKeyConstraint, Table, UniqueConstraint, column, table, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.schema import AddConstraint, CreateIndex, DropConstraint, DropIndex

SQLITE_BULK_CACHE_KIB = 64 * 1024
# From this many rows (when they are a good part of the table), PostgreSQL loads go through checked_in_bulk,
# if its locks can be had within BULK_LOCK_TIMEOUT_MS.
BULK_LOAD_ROWS = 50_000
BULK_LOCK_TIMEOUT_MS = 5_000
# PostgreSQL's advice for bulk loads: more memory for rebuilding the indexes and keys (the default 64 MB also
# keeps CREATE INDEX from using parallel workers).
BULK_MAINTENANCE_WORK_MEM = "256MB"
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
        # A bigger page cache while inserting: index pages stay in memory instead of being spilled to the WAL
        # and read back (the default 2 MB cache makes a million-row insert twice as slow).
        previous = cursor.execute("PRAGMA cache_size").fetchone()[0]
        cursor.execute(f"PRAGMA cache_size = {-SQLITE_BULK_CACHE_KIB}")
        try:
            cursor.executemany(f"INSERT INTO {_quoted(table_name)} ({column_list}) VALUES ({placeholders})", counter)
        finally:
            cursor.execute(f"PRAGMA cache_size = {int(previous)}")
            cursor.close()
        return counter.count
    if dialect == "postgresql" and connection.dialect.driver == "psycopg":
        count = 0
        statement = f"COPY {_quoted(table_name)} ({column_list}) FROM STDIN"
        with driver_connection.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
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


def bulk_insert_columns(
    connection: Connection, table_name: str, columns: Sequence[str], chunks: Iterable[Sequence[Any]]
) -> int:
    """Like :func:`bulk_insert`, with the rows given a chunk at a time, column-wise: each chunk holds one
    sequence per column (all of one length; a numpy integer array for whole numbers is the fastest), or a single
    ``str``/``int`` for a column that is the same on every row (``None``: NULL on every row). On PostgreSQL each
    chunk becomes COPY text in a few C-level joins, instead of a Python call per row (psycopg's ``write_row`` cost
    2 s of a million-row store)."""
    if connection.dialect.name == "postgresql" and connection.dialect.driver == "psycopg":
        column_list = ", ".join(_quoted(name) for name in columns)
        statement = f"COPY {_quoted(table_name)} ({column_list}) FROM STDIN"
        count = 0
        driver_connection = connection.connection.driver_connection
        from psycopg.copy import QueuedLibpqWriter  # the driver of this branch

        # A writer thread feeds the server while this one formats the next chunk: the two then work side by side
        # (on two cores) instead of in turn.
        with driver_connection.cursor() as cursor, cursor.copy(  # type: ignore[union-attr]
            statement, writer=QueuedLibpqWriter(cursor)
        ) as copy:
            for chunk in chunks:
                length = _chunk_length(chunk)
                fields = [_copy_field(values, length) for values in chunk]
                copy.write("\n".join(map("\t".join, zip(*fields, strict=True))) + "\n")
                count += length
        return count
    return bulk_insert(
        connection, table_name, columns,
        (row for chunk in chunks
         for row in zip(*(_expanded(values, _chunk_length(chunk)) for values in chunk), strict=True)),
    )


def _chunk_length(chunk: Sequence[Any]) -> int:
    lengths = {len(values) for values in chunk if not _is_constant(values)}
    if len(lengths) != 1:
        raise ValueError(f"a chunk's columns must have one length, not {sorted(lengths)}")
    return lengths.pop()


def _is_constant(values: Any) -> bool:
    return values is None or isinstance(values, str | int)


def _expanded(values: Sequence[Any] | str | int | None, length: int) -> Sequence[Any]:
    if isinstance(values, np.ndarray):
        return values.tolist()  # Python numbers: the sqlite3 module binds no numpy scalar
    return [values] * length if _is_constant(values) else values  # type: ignore[list-item,return-value]


# COPY's text format: backslash escapes, tab between fields, newline between rows, \N for NULL.
_COPY_NULL = "\\N"
_COPY_SPECIALS = ("\\", "\t", "\n", "\r")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(values: Sequence[Any] | str | int | None, length: int) -> Sequence[str]:
    """One column of a chunk as COPY text fields; the checks run over the whole column at C speed."""
    if _is_constant(values):
        return [_copy_value(values)] * length
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":  # integers: nothing to check or escape
        return list(map(str, values.tolist()))
    has_null = None in values
    present = [value for value in values if value is not None] if has_null else values
    try:
        joined = "".join(present)  # TypeError unless every value is a str
    except TypeError:
        if not all(isinstance(value, int | float) for value in present):
            return [_copy_value(value) for value in values]
        present = list(map(str, present))  # numbers (a bool's str, True/False, is valid boolean input)
        joined = ""
    if any(special in joined for special in _COPY_SPECIALS):  # str.__contains__: memchr speed
        return [_copy_value(value) for value in values]
    if not has_null:
        return present
    texts = iter(present)
    return [_COPY_NULL if value is None else next(texts) for value in values]


def _copy_value(value: Any) -> str:
    if value is None:
        return _COPY_NULL
    return str(value).translate(_COPY_ESCAPES)


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


_FIRST_INSTANT = np.datetime64("0001-01-01T00:00:00.000000", "us")
_LAST_INSTANT = np.datetime64("9999-12-31T23:59:59.999999", "us")


def timestamp_texts(connection: Connection, values: pd.Series) -> np.ndarray:
    """UTC timestamps (tz-aware, or naive UTC) as :func:`timestamp_format` text, ``None`` for NaT.

    Vectorised through numpy: ``Series.dt.strftime`` costs 1.4 µs a value, 1.4 s for a million-row file.
    """
    # to_numpy of a tz-aware series gives its UTC instants (a tz_convert/tz_localize pair costs 1.4 s a million).
    instants = values.to_numpy(dtype="datetime64[us]")
    missing = np.isnat(instants)
    formatted = np.full(len(instants), None, dtype=object)
    present = instants[~missing]
    if len(present) and (present.min() < _FIRST_INSTANT or present.max() > _LAST_INSTANT):
        # A year outside 0001-9999 does not fit the fixed-width layout below: the slow exact path.
        formatted[~missing] = np.array(values[~missing].dt.strftime(timestamp_format(connection)), dtype=object)
        return formatted
    # numpy sizes the strings for any year (<U45); every one here is 26 characters: 2019-03-01T10:00:00.000000
    text = np.datetime_as_string(present, unit="us").astype("<U26")
    suffix = "" if connection.dialect.name == "sqlite" else "+00:00"
    width = 26 + len(suffix)
    # Characters as code points, one row per date: copy the date, set the space between date and time (both
    # formats have one) and append the suffix, all in numpy (np.char.add would loop in Python).
    points = np.empty((len(text), width), dtype=np.uint32)
    points[:, :26] = text.view(np.uint32).reshape(-1, 26)
    points[:, 10] = ord(" ")
    points[:, 26:] = [ord(character) for character in suffix]
    formatted[~missing] = points.view(f"<U{width}").ravel()
    return formatted


def _locked_for_bulk(connection: Connection, target: Table, foreign_keys: Sequence[ForeignKeyConstraint]) -> bool:
    """Take the exclusive locks the bulk path needs, all at once; False (nothing held) if they are busy."""
    tables = [target.name, *sorted({constraint.referred_table.name for constraint in foreign_keys})]
    savepoint = connection.begin_nested()
    try:
        connection.execute(text(f"SET LOCAL lock_timeout = {int(BULK_LOCK_TIMEOUT_MS)}"))
        connection.execute(text(f"LOCK TABLE {', '.join(_quoted(name) for name in tables)} IN ACCESS EXCLUSIVE MODE"))
    except OperationalError as error:  # lock_not_available (55P03) or deadlock_detected (40P01)
        if getattr(error.orig, "sqlstate", None) not in ("55P03", "40P01"):
            raise
        savepoint.rollback()  # undoes the SET LOCAL too
        return False
    connection.execute(text("SET LOCAL lock_timeout = DEFAULT"))
    savepoint.commit()
    return True


def fetch_all(connection: Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of a read-only query through the driver's cursor: for result sets of a million rows, where
    SQLAlchemy's row objects double the time. ``sql`` uses ``?`` placeholders (rewritten for psycopg)."""
    if connection.dialect.name != "sqlite":
        sql = sql.replace("%", "%%").replace("?", "%s")
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, tuple(params))
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


@dataclass(frozen=True)
class BulkLoad:
    """How :func:`checked_in_bulk` loads: ``exclusive`` when the target is held alone until commit, with its keys
    and indexes set aside."""

    connection: Connection
    target: Table
    exclusive: bool

    def reserve_ids(self, count: int) -> int | None:
        """The first of ``count`` consecutive primary keys, taken from the target's sequence in one call, for rows
        that then carry their own id; None unless the target is held exclusively, and rows draw theirs from the
        column default, one call each (0.9 s of server time for a million rows).

        The nextval and setval below are two steps: safe only while nobody else can insert into the target.
        """
        if not self.exclusive or count <= 0:
            return None
        (key,) = self.target.primary_key.columns
        last = self.connection.scalar(
            text("SELECT setval(pg_get_serial_sequence(:table, :key), nextval(pg_get_serial_sequence(:table, :key))"
                 " + :count - 1)"),
            {"table": self.target.name, "key": key.name, "count": count},
        )
        return int(last) - count + 1


@contextmanager
def checked_in_bulk(connection: Connection, target: Table, *, rows: int) -> Iterator[BulkLoad]:
    """Load ``rows`` rows into ``target`` with its foreign keys, unique constraints and indexes built and checked
    once for all at the end, not once per row.

    PostgreSQL's own advice for bulk loads ("Populating a Database"): drop foreign keys and indexes, load, add
    them back. A foreign key checks each row with a trigger query (about 7 µs); adding it back checks the whole
    table in one join. An index built by one sort costs about half its row-by-row upkeep. Everything happens in
    the caller's transaction, so nobody else ever sees the table without them, and a row that breaks a key or a
    unique constraint makes the ADD fail and the whole transaction roll back. The price is an exclusive lock on
    ``target`` and the tables it refers to until commit, taken all at once up front (waiting at most
    BULK_LOCK_TIMEOUT_MS: readers keep the tables busy -> the usual path), so that the load never waits again and
    cannot deadlock. Small loads, loads into a much bigger table (the rebuild would cost more than it saves) and
    other databases keep the usual per-row checks.

    SQLite can drop neither a key nor a unique constraint, only plain indexes: those are rebuilt once, in the same
    transaction (SQLite's writer holds the database alone anyway).
    """
    foreign_keys = sorted(target.foreign_key_constraints, key=lambda constraint: str(constraint.name))
    uniques = sorted((c for c in target.constraints if isinstance(c, UniqueConstraint)), key=lambda c: str(c.name))
    indexes = sorted(target.indexes, key=lambda index: str(index.name))
    if connection.dialect.name == "sqlite" and rows >= BULK_LOAD_ROWS and indexes:
        with _indexes_rebuilt_on_sqlite(connection, target, indexes, rows=rows):
            yield BulkLoad(connection, target, exclusive=False)
        return
    if connection.dialect.name != "postgresql" or rows < BULK_LOAD_ROWS:
        yield BulkLoad(connection, target, exclusive=False)
        return
    # reltuples: the planner's row estimate, free to read (-1 before the first ANALYZE).
    existing = connection.scalar(text("SELECT reltuples FROM pg_class WHERE oid = CAST(:name AS regclass)"),
                                 {"name": target.name}) or 0
    if existing > 4 * rows or not _locked_for_bulk(connection, target, foreign_keys):
        yield BulkLoad(connection, target, exclusive=False)
        return
    for constraint in [*foreign_keys, *uniques]:
        connection.execute(DropConstraint(constraint))
    for index in indexes:
        connection.execute(DropIndex(index))
    yield BulkLoad(connection, target, exclusive=True)
    connection.execute(text(f"SET LOCAL maintenance_work_mem = '{BULK_MAINTENANCE_WORK_MEM}'"))
    for index in indexes:
        connection.execute(CreateIndex(index))
    for constraint in [*uniques, *foreign_keys]:
        connection.execute(AddConstraint(constraint))
    # "Run ANALYZE afterwards": the planner's statistics now describe the table it will read (a sample, 0.1 s).
    connection.execute(text(f"ANALYZE {_quoted(target.name)}"))


@contextmanager
def _indexes_rebuilt_on_sqlite(connection: Connection, target: Table, indexes: Sequence[Any], *, rows: int
                               ) -> Iterator[None]:
    """SQLite: drop ``indexes`` for the load and create them again after it (a million-row load: 2 s less)."""
    # The largest rowid: the table's size, about, read from the key's b-tree in one step (count(*) scans).
    existing = connection.scalar(text(f"SELECT max(rowid) FROM {_quoted(target.name)}")) or 0
    if existing > 4 * rows:
        yield
        return
    driver_connection = connection.connection.driver_connection
    if not driver_connection.in_transaction:  # type: ignore[union-attr]
        # The sqlite3 module opens a transaction only before a DML statement: the DROP must not commit on its own.
        driver_connection.execute("BEGIN")  # type: ignore[union-attr]
    for index in indexes:
        connection.execute(DropIndex(index))
    yield  # a failure rolls the DROPs back with everything else
    for index in indexes:
        connection.execute(CreateIndex(index))
