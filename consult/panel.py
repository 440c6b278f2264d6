"""The panel: partnerships and their contacts, imported from a CSV file (one row per contact)."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pycountry
from sqlalchemy import select
from sqlalchemy.orm import Session

from consult.contacts import clean_email, clean_name
from consult.errors import ConsultError
from db.models import Contact, Partnership

REQUIRED_COLUMNS = ("partnership_id", "name", "strand", "country", "contact_email")
OPTIONAL_COLUMNS = ("acronym", "contact_first_name", "contact_last_name", "language")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class PanelImportReport:
    partnerships_added: int
    partnerships_updated: int
    contacts_added: int
    partnerships_total: int
    contacts_updated: int = 0


@dataclass(frozen=True)
class _Row:
    code: str
    name: str
    acronym: str | None
    strand: int
    country: str
    language: str
    first_name: str
    last_name: str
    email: str


def read_panel_file(path: Path) -> list[_Row]:
    """Parse and check every row first, so that a bad row stops the import before anything is stored."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConsultError(f"{path}: panel file not found") from None
    except UnicodeDecodeError:
        raise ConsultError(f"{path}: not UTF-8 text; save the panel as CSV UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or [])]
    if missing:
        raise ConsultError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}")
    rows: list[_Row] = []
    seen_emails: dict[tuple[str, str], int] = {}
    for line, record in enumerate(reader, start=2):
        rows.append(_parse_row(path, line, record))
        key = (rows[-1].code, rows[-1].email.lower())
        if key in seen_emails:
            raise ConsultError(f"{path}, row {line}: contact {rows[-1].email} repeats row {seen_emails[key]}")
        seen_emails[key] = line
    if not rows:
        raise ConsultError(f"{path}: the panel file has a header but no rows")
    return rows


def _parse_row(path: Path, line: int, record: dict[str, str | None]) -> _Row:
    def cell(column: str) -> str:
        value = (record.get(column) or "").strip()
        if _CONTROL.search(value):
            raise ConsultError(f"{path}, row {line}: {column} contains a line break or control character")
        return value

    where = f"{path}, row {line}"
    code, name = cell("partnership_id"), clean_name(record.get("name") or "", where=where, column="name")
    # Names and addresses: encoded words decoded, control/format characters and formula leads refused.
    email = clean_email(record.get("contact_email") or "", where=where)
    if not code or not name:
        raise ConsultError(f"{where}: partnership_id and name are required")
    strand = cell("strand")
    if strand not in ("1", "2"):
        raise ConsultError(f"{where}: strand must be 1 or 2, got {strand!r}")
    country = cell("country").upper()
    if pycountry.countries.get(alpha_2=country) is None:
        raise ConsultError(f"{where}: country {country!r} is not an ISO 3166-1 alpha-2 code")
    return _Row(
        code=code,
        name=name,
        acronym=cell("acronym") or None,
        strand=int(strand),
        country=country,
        language=cell("language") or "en",
        first_name=clean_name(record.get("contact_first_name") or "", where=where, column="contact_first_name"),
        last_name=clean_name(record.get("contact_last_name") or "", where=where, column="contact_last_name"),
        email=email,
    )


def import_panel(session: Session, path: Path) -> PanelImportReport:
    """Insert or update partnerships and contacts; importing the same file twice changes nothing."""
    rows = read_panel_file(path)
    existing = {p.code: p for p in session.scalars(select(Partnership))}
    contacts = {(c.partnership_id, c.email.lower()): c for c in session.scalars(select(Contact))}
    added = updated = contacts_added = contacts_updated = 0
    touched: set[str] = set()
    for row in rows:
        partnership = existing.get(row.code)
        if partnership is None:
            partnership = Partnership(code=row.code, name=row.name, acronym=row.acronym, strand=row.strand,
                                      country=row.country, language=row.language, active=True)
            session.add(partnership)
            session.flush()
            existing[row.code] = partnership
            added += 1
        elif row.code not in touched:
            changes = {"name": row.name, "acronym": row.acronym, "strand": row.strand, "country": row.country,
                       "language": row.language}
            if any(getattr(partnership, field) != value for field, value in changes.items()):
                for field, value in changes.items():
                    setattr(partnership, field, value)
                updated += 1
        touched.add(row.code)
        contact = contacts.get((partnership.id, row.email.lower()))
        if contact is None:
            contact = Contact(partnership_id=partnership.id, first_name=row.first_name,
                              last_name=row.last_name, email=row.email)
            session.add(contact)
            contacts[(partnership.id, row.email.lower())] = contact
            contacts_added += 1
        elif (contact.first_name, contact.last_name, contact.email) != (row.first_name, row.last_name, row.email):
            # A corrected name (or the address's case) replaces the stored one.
            contact.first_name, contact.last_name, contact.email = row.first_name, row.last_name, row.email
            contacts_updated += 1
    session.flush()
    return PanelImportReport(added, updated, contacts_added, len(existing), contacts_updated)
