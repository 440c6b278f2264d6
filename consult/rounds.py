"""Rounds: open (with one token per partnership), look up, close, and export the participant list."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from consult.errors import ConsultError
from consult.tokens import (
    CURRENT_SCHEME,
    check_round_fingerprint,
    derive_token,
    hash_token,
    response_link,
    secret_fingerprint,
)
from db.models import Contact, Partnership, QuestionnaireVersion, Round, RoundParticipant, utcnow

if TYPE_CHECKING:
    from consult.questionnaire import Questionnaire


@dataclass(frozen=True)
class RoundInfo:
    year: int
    status: str
    closes_on: dt.date
    consulted: int
    questionnaire_version: int
    created: bool


def get_round(session: Session, year: int) -> Round:
    found = session.scalar(select(Round).where(Round.year == year))
    if found is None:
        raise ConsultError(f"round {year} does not exist: open it with `consult round open {year} --questionnaire FILE`")
    return found


def previous_round(session: Session, year: int) -> Round | None:
    """The latest round before ``year`` (rounds need not be consecutive years)."""
    return session.scalar(select(Round).where(Round.year < year).order_by(Round.year.desc()).limit(1))


def round_questionnaire(round_: Round) -> Questionnaire:
    # Imported here: `round participants` and `round close` need no questionnaire (YAML, pycountry, pydantic).
    from consult.questionnaire import parse_questionnaire

    version = round_.questionnaire_version
    return parse_questionnaire(version.definition, source=f"questionnaire {version.code} v{version.version}")


_PRESENTATION = ("breakdown_by", "respondent", "indicators", "title")


def _questions_part(definition: dict[str, object]) -> dict[str, object]:
    """What a stored answer depends on: everything but how the summary is computed and worded."""
    return {key: value for key, value in definition.items() if key not in _PRESENTATION}


def store_questionnaire(session: Session, questionnaire: Questionnaire) -> QuestionnaireVersion:
    """Store a questionnaire version once; the same code and version with other content is refused."""
    existing = session.scalar(
        select(QuestionnaireVersion).where(
            QuestionnaireVersion.code == questionnaire.code, QuestionnaireVersion.version == questionnaire.version
        )
    )
    if existing is not None:
        if existing.sha256 != questionnaire.sha256 and _questions_part(existing.definition) == _questions_part(
                questionnaire.definition()):
            # Only how the summary is computed and worded changed (breakdown_by, respondent, indicators): the
            # stored answers stay valid, so the version takes the new presentation.
            existing.definition = questionnaire.definition()
            existing.sha256 = questionnaire.sha256
            existing.title = questionnaire.title
        if existing.sha256 != questionnaire.sha256:
            raise ConsultError(
                f"questionnaire {questionnaire.code} version {questionnaire.version} is already stored with other "
                "content: give the changed questionnaire a new version number"
            )
        return existing
    version = QuestionnaireVersion(
        code=questionnaire.code,
        version=questionnaire.version,
        title=questionnaire.title,
        sha256=questionnaire.sha256,
        definition=questionnaire.definition(),
    )
    session.add(version)
    session.flush()
    return version


def open_round(
    session: Session,
    *,
    year: int,
    questionnaire_path: Path,
    token_secret: bytes,
    closes_on: dt.date | None = None,
    reminder_days: list[int] | None = None,
    duration_days: int = 42,
    today: dt.date | None = None,
) -> RoundInfo:
    """Open the round for ``year`` and enrol every active partnership. Opening it again changes nothing,
    except that partnerships added to the panel since are enrolled too."""
    from consult.questionnaire import load_questionnaire

    questionnaire = load_questionnaire(questionnaire_path)
    partnerships = session.scalars(select(Partnership).where(Partnership.active.is_(True))).all()
    if not partnerships:
        raise ConsultError("the panel is empty: import it first with `consult panel import FILE`")
    version = store_questionnaire(session, questionnaire)
    round_ = session.scalar(select(Round).where(Round.year == year))
    created = round_ is None
    if round_ is None:
        start = today or dt.date.today()
        round_ = Round(
            year=year,
            questionnaire_version_id=version.id,
            closes_on=closes_on or start + dt.timedelta(days=duration_days),
            reminder_days=sorted(reminder_days or [14, 3], reverse=True),
            status="open",
            token_scheme=CURRENT_SCHEME,
            token_fingerprint=secret_fingerprint(token_secret),
        )
        session.add(round_)
        session.flush()
    elif round_.questionnaire_version_id != version.id:
        raise ConsultError(
            f"round {year} is already open with questionnaire {round_.questionnaire_version.code} "
            f"v{round_.questionnaire_version.version}, not {questionnaire.code} v{questionnaire.version}"
        )
    check_round_fingerprint(year, round_.token_fingerprint, token_secret)
    if round_.token_fingerprint is None:  # opened before migration 0006: the secret it is used with from now on
        round_.token_fingerprint = secret_fingerprint(token_secret)
    enrolled = set(session.scalars(select(RoundParticipant.partnership_id).where(RoundParticipant.round_id == round_.id)))
    session.add_all(
        RoundParticipant(
            round_id=round_.id,
            partnership_id=partnership.id,
            attributes=dict(partnership.attributes or {}),
            token_hash=hash_token(derive_token(token_secret, year, partnership.code, round_.token_scheme)),
        )
        for partnership in partnerships
        if partnership.id not in enrolled
    )
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        # Fresh statistics for the planner: matching joins the round's participants with the panel, and with
        # stale ones PostgreSQL picks a nested loop (1.1 s for a million participants instead of 0.3 s).
        session.execute(text("ANALYZE round_participants"))
    return RoundInfo(
        year=year,
        status=round_.status,
        closes_on=round_.closes_on,
        consulted=len(enrolled | {p.id for p in partnerships}),
        questionnaire_version=questionnaire.version,
        created=created,
    )


def close_round(session: Session, year: int) -> Round:
    round_ = get_round(session, year)
    if round_.status == "open":
        round_.status = "closed"
        round_.closed_at = utcnow()
    return round_


ParticipantFormat = Literal["limesurvey", "csv"]


def participants_table(
    session: Session, *, year: int, token_secret: bytes, url_template: str, export_format: ParticipantFormat
) -> str:
    """The participant list with tokens, in LimeSurvey's participant import layout or as plain CSV.

    Tokens are re-derived from the secret: the database never held them.
    """
    round_ = get_round(session, year)
    check_round_fingerprint(year, round_.token_fingerprint, token_secret)
    rows = session.execute(
        select(Partnership, Contact, RoundParticipant.attributes)
        .join(RoundParticipant, RoundParticipant.partnership_id == Partnership.id)
        .join(Contact, Contact.partnership_id == Partnership.id)
        .where(RoundParticipant.round_id == round_.id, Contact.status == "active")
        .order_by(Partnership.code, Contact.id)
    ).all()
    # The attributes the round took when it opened, in the panel's column order.
    names = list(dict.fromkeys(name for _, _, attributes in rows for name in (attributes or {})))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if export_format == "limesurvey":
        # LimeSurvey's "Import participants from CSV": these header names, extra columns as attribute_N
        # (attribute_1 the partnership id, attribute_2 its name, then the panel's attributes in order).
        writer.writerow(["firstname", "lastname", "email", "token", "language",
                         *[f"attribute_{n}" for n in range(1, len(names) + 3)]])
    else:
        writer.writerow(["partnership_id", "partnership", *names, "first_name", "last_name", "email", "token", "link"])
    for partnership, contact, attributes in rows:
        token = derive_token(token_secret, year, partnership.code, round_.token_scheme)
        values = [(attributes or {}).get(name, "") for name in names]
        if export_format == "limesurvey":
            cells = [contact.first_name, contact.last_name, contact.email, token, partnership.language,
                     partnership.code, partnership.name, *values]
        else:
            cells = [partnership.code, partnership.name, *values, contact.first_name,
                     contact.last_name, contact.email, token, response_link(url_template, token)]
        writer.writerow([neutralise_cell(cell) for cell in cells])
    return buffer.getvalue()


_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: str) -> str:
    """Prefix a cell that a spreadsheet would run as a formula with an apostrophe (OWASP CSV injection)."""
    if value and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value
