"""The schema, owned here and changed only through Alembic migrations (db/migrations).

Every table a step writes has a natural unique key, so that re-running any step is an upsert, never a duplicate.
Works on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names so that migrations read the same on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Partnership(Base):
    """A member of the panel."""

    __tablename__ = "partnerships"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    # Every panel column other than the required ones and the contact data (acronym, country, sector, ...),
    # kept as given, in the panel file's column order (plain JSON keeps it; JSONB would sort the keys).
    attributes: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    language: Mapped[str] = mapped_column(String(8), default="en")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    contacts: Mapped[list[Contact]] = relationship(back_populates="partnership", order_by="Contact.id")


class Contact(Base):
    """A person who receives a partnership's invitations. ``status`` records bounces and unsubscribes."""

    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("partnership_id", "email"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    partnership_id: Mapped[int] = mapped_column(ForeignKey("partnerships.id", ondelete="CASCADE"), index=True)
    first_name: Mapped[str] = mapped_column(String(200), default="")
    last_name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str] = mapped_column(String(320), index=True)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | bounced | unsubscribed | dropped
    status_reason: Mapped[str | None] = mapped_column(Text)
    status_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    partnership: Mapped[Partnership] = relationship(back_populates="contacts")


class QuestionnaireVersion(Base):
    __tablename__ = "questionnaire_versions"
    __table_args__ = (UniqueConstraint("code", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64))
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Round(Base):
    """One yearly consultation."""

    __tablename__ = "rounds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    year: Mapped[int] = mapped_column(Integer, unique=True)
    questionnaire_version_id: Mapped[int] = mapped_column(ForeignKey("questionnaire_versions.id"))
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | closed | published
    opened_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    closes_on: Mapped[dt.date] = mapped_column(Date)
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    reminder_days: Mapped[list[int]] = mapped_column(JSONType, default=list)
    # New rounds: letters and digits; rounds opened before migration 0006 keep URL-safe base64 (consult/tokens.py).
    token_scheme: Mapped[str] = mapped_column(String(16), default="alnum", server_default="b64url")
    token_fingerprint: Mapped[str | None] = mapped_column(String(64))  # HMAC of a fixed label, never the secret

    questionnaire_version: Mapped[QuestionnaireVersion] = relationship()


class RoundParticipant(Base):
    """A partnership consulted in a round, with the hash of its response token (never the token itself)."""

    __tablename__ = "round_participants"
    __table_args__ = (UniqueConstraint("round_id", "partnership_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    partnership_id: Mapped[int] = mapped_column(ForeignKey("partnerships.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The partnership's attributes as they were when the round opened: a later panel change leaves the round alone.
    attributes: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OutboxMessage(Base):
    """One message to one contact. The unique key makes "send once" a database fact, not a hope."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("round_id", "partnership_id", "contact_id", "kind", "sequence"),
        Index("ix_outbox_round_state", "round_id", "state"),
        # Stakeholders (the published summary) are no panel contacts: no partnership, no contact, and NULLs never
        # collide in the key above, so their "send once" is this key on the address instead.
        Index("ux_outbox_stakeholder", "round_id", "kind", "sequence", "recipient", unique=True,
              sqlite_where=text("partnership_id IS NULL"), postgresql_where=text("partnership_id IS NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"))
    partnership_id: Mapped[int | None] = mapped_column(ForeignKey("partnerships.id"))  # NULL: a stakeholder
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))  # NULL: a stakeholder
    kind: Mapped[str] = mapped_column(String(16))  # invitation | reminder | thank_you | summary
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending|sending|sent|failed|unknown|skipped
    recipient: Mapped[str] = mapped_column(String(320))
    recipient_name: Mapped[str | None] = mapped_column(String(300))  # a stakeholder's name (contacts have theirs)
    batch_key: Mapped[str | None] = mapped_column(String(64), index=True)
    provider_message_id: Mapped[str | None] = mapped_column(String(200), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class DeliveryEvent(Base):
    """An event from the provider's webhook (delivered, bounce, dropped, unsubscribe...), de-duplicated."""

    __tablename__ = "delivery_events"
    __table_args__ = (UniqueConstraint("provider_message_id", "event", "timestamp"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider_message_id: Mapped[str] = mapped_column(String(200))
    event: Mapped[str] = mapped_column(String(32))
    timestamp: Mapped[int] = mapped_column(BigInteger)
    email: Mapped[str | None] = mapped_column(String(320))
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"))
    reason: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IngestedFile(Base):
    """A response file as received: ingesting the same bytes again for the same round changes nothing."""

    __tablename__ = "ingested_files"
    # (id, round_id) is the target of responses' foreign key: one check per response row ties it to its file
    # and to that file's round.
    __table_args__ = (UniqueConstraint("round_id", "sha256"), UniqueConstraint("id", "round_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(500))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    row_count: Mapped[int] = mapped_column(Integer)
    layout: Mapped[str] = mapped_column(String(32))  # plain | limesurvey | eusurvey
    encoding: Mapped[str | None] = mapped_column(String(32))
    delimiter: Mapped[str | None] = mapped_column(String(4))
    report: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # The file exactly as received, zlib-compressed: every row's raw cells, byte for byte, in a fifth of the
    # space a per-row copy takes (see consult.ingest.store.raw_cells). NULL for files stored before 0002.
    content: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    token_storage: Mapped[str | None] = mapped_column(String(16))  # hashed | NULL: as received (consult/ingest/keep)
    ingested_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Response(Base):
    """One submitted row: ``answers`` holds the typed values keyed by question code (lists for multi-select).
    Status: accepted | superseded | partial. The cells as exported are row ``row_number`` of the stored file
    (``IngestedFile.content``); ``raw`` holds them only for rows stored before files were kept (0001)."""

    __tablename__ = "responses"
    __table_args__ = (
        UniqueConstraint("file_id", "row_number"),
        # Every reader asks for a round's accepted responses, by partnership: one index serves them all
        # (three indexes per row cost a million-row store about 2 s more than two).
        Index("ix_responses_round_status_partnership", "round_id", "status", "partnership_id"),
        # The file by (id, round_id) rather than by id alone: a foreign-key check costs a lookup per inserted
        # row (a million on a big file), so this one check both ties the row to its file and guarantees that
        # the response's round is its file's round.
        ForeignKeyConstraint(
            ["file_id", "round_id"], ["ingested_files.id", "ingested_files.round_id"], ondelete="CASCADE"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # No foreign key of its own: the (file_id, round_id) key above checks it, and on PostgreSQL a second
    # check per row on the same rounds row cost 8 s of a million-row store. Join rounds explicitly.
    round_id: Mapped[int] = mapped_column(Integer)
    file_id: Mapped[int] = mapped_column(Integer)
    row_number: Mapped[int] = mapped_column(Integer)
    # NULL in an anonymous round (match_by: response_id), whose responses belong to no partnership (0008).
    partnership_id: Mapped[int | None] = mapped_column(ForeignKey("partnerships.id"))
    # The survey tool's response id, by which an anonymous round tells responses apart (NULL otherwise).
    response_key: Mapped[str | None] = mapped_column(String(200))
    matched_by: Mapped[str] = mapped_column(String(16))
    submitted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Codes, compared bytewise: its index builds a third faster than with the linguistic collation (0004).
    status: Mapped[str] = mapped_column(String(16).with_variant(String(16, collation="C"), "postgresql"))
    # Plain JSON (text, validated on input), not JSONB: a million-row ingest COPYs these columns, and
    # JSONB's decomposition costs more there than it ever saves, since nothing queries inside them in SQL.
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    answers: Mapped[dict[str, Any]] = mapped_column(JSON)
    warnings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # The database's clock as well as ours: bulk loads leave it to the server (see consult.ingest.store).
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, server_default=func.now())


class QuarantinedRow(Base):
    """A row that failed an error-severity expectation, kept with the reasons for an analyst to review."""

    __tablename__ = "quarantined_rows"
    __table_args__ = (UniqueConstraint("file_id", "row_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("ingested_files.id", ondelete="CASCADE"))
    row_number: Mapped[int] = mapped_column(Integer)
    partnership_id: Mapped[int | None] = mapped_column(ForeignKey("partnerships.id"))
    raw: Mapped[dict[str, Any]] = mapped_column(JSONType)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | accepted | rejected
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    review_note: Mapped[str | None] = mapped_column(Text)
    response_id: Mapped[int | None] = mapped_column(ForeignKey("responses.id"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IndicatorValue(Base):
    __tablename__ = "indicator_values"
    __table_args__ = (UniqueConstraint("round_id", "indicator", "dimension"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"))
    indicator: Mapped[str] = mapped_column(String(100))
    dimension: Mapped[str] = mapped_column(String(100), default="")
    value: Mapped[float | None] = mapped_column(Float)
    denominator: Mapped[float | None] = mapped_column(Float)
    rank: Mapped[int | None] = mapped_column(Integer)
    previous_value: Mapped[float | None] = mapped_column(Float)
    previous_rank: Mapped[int | None] = mapped_column(Integer)
    change: Mapped[float | None] = mapped_column(Float)
    comparison: Mapped[str] = mapped_column(String(16), default="comparable")  # comparable | new | added | dropped | first_round
    computed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Publication(Base):
    """What was published for a round, when, by which flow run, with the hash of each file."""

    __tablename__ = "publications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    published_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    output_dir: Mapped[str] = mapped_column(Text)
    files: Mapped[dict[str, str]] = mapped_column(JSONType)
    content_sha256: Mapped[str] = mapped_column(String(64))
    flow_run_id: Mapped[str | None] = mapped_column(String(64))


__all__ = [
    "Base",
    "Contact",
    "DeliveryEvent",
    "IndicatorValue",
    "IngestedFile",
    "OutboxMessage",
    "Partnership",
    "Publication",
    "QuarantinedRow",
    "QuestionnaireVersion",
    "Response",
    "Round",
    "RoundParticipant",
]
