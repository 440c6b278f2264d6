"""The panel: partnerships and their contacts, imported from a CSV file (one row per contact).

Required columns: ``partnership_id``, ``name``, ``contact_email``. Contact data: ``contact_first_name``,
``contact_last_name``, ``language``. Every other column (``acronym``, ``country``, ``sector``, ``size``, ...) is an
attribute of the partnership, kept as given (trimmed), in the file's column order; questionnaires break their
indicators down by them (``breakdown_by``). A ``country`` column must hold ISO 3166-1 alpha-2 codes.
"""

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

REQUIRED_COLUMNS = ("partnership_id", "name", "contact_email")
CONTACT_COLUMNS = ("contact_first_name", "contact_last_name", "language")
_ATTRIBUTE_NAME = re.compile(r"[a-z][a-z0-9_]*")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class PanelImportReport:
    partnerships_added: int
    partnerships_updated: int
    contacts_added: int
    partnerships_total: int
    attributes: tuple[str, ...] = ()
    contacts_updated: int = 0


@dataclass(frozen=True)
class _Row:
    code: str
    name: str
    attributes: dict[str, str]
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
    columns = [(name or "").strip() for name in reader.fieldnames or []]
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        raise ConsultError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}")
    reader.fieldnames = columns
    attribute_columns = attribute_names(path, columns)
    rows: list[_Row] = []
    seen_emails: dict[tuple[str, str], int] = {}
    for line, record in enumerate(reader, start=2):
        if None in record:
            raise ConsultError(f"{path}, row {line}: more cells than the header has columns")
        rows.append(_parse_row(path, line, record, attribute_columns))
        key = (rows[-1].code, rows[-1].email.lower())
        if key in seen_emails:
            raise ConsultError(f"{path}, row {line}: contact {rows[-1].email} repeats row {seen_emails[key]}")
        seen_emails[key] = line
    if not rows:
        raise ConsultError(f"{path}: the panel file has a header but no rows")
    return rows


def attribute_names(path: Path, columns: list[str]) -> list[str]:
    """The panel's attribute columns in file order; a heading that cannot name an attribute is refused."""
    names = [column for column in columns if column not in REQUIRED_COLUMNS and column not in CONTACT_COLUMNS]
    seen: set[str] = set()
    for name in names:
        if not _ATTRIBUTE_NAME.fullmatch(name):
            raise ConsultError(f"{path}: column {name!r} is not an attribute name (lower-case letters, digits, _)")
        if name in seen:
            raise ConsultError(f"{path}: column {name!r} appears twice")
        seen.add(name)
    return names


def _parse_row(path: Path, line: int, record: dict[str, str | None], attribute_columns: list[str]) -> _Row:
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
    attributes = {column: cell(column) for column in attribute_columns}
    if "country" in attributes:
        country = attributes["country"].upper()
        if pycountry.countries.get(alpha_2=country) is None:
            raise ConsultError(f"{where}: country {country!r} is not an ISO 3166-1 alpha-2 code")
        attributes["country"] = country
    return _Row(
        code=code,
        name=name,
        attributes={column: value for column, value in attributes.items() if value},
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
            partnership = Partnership(code=row.code, name=row.name, attributes=row.attributes,
                                      language=row.language, active=True)
            session.add(partnership)
            existing[row.code] = partnership
            added += 1
        elif row.code not in touched:
            changes = {"name": row.name, "attributes": row.attributes, "language": row.language}
            # Attribute order matters (the file's column order), so they compare as lists of pairs.
            if any(_comparable(getattr(partnership, field)) != _comparable(value) for field, value in changes.items()):
                for field, value in changes.items():
                    setattr(partnership, field, value)
                updated += 1
        touched.add(row.code)
    # One flush gives every new partnership its id (one multi-row INSERT, not one round trip per partnership).
    session.flush()
    for row in rows:
        partnership = existing[row.code]
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
    names = tuple(dict.fromkeys(name for row in rows for name in row.attributes))
    return PanelImportReport(added, updated, contacts_added, len(existing), names, contacts_updated)


def panel_listing(session: Session) -> tuple[list[str], list[list[str]]]:
    """The panel as a table: partnership_id, name, active contacts, then every attribute any partnership has
    (in the order they first appear)."""
    partnerships = session.scalars(select(Partnership).order_by(Partnership.code)).all()
    contacts: dict[int, int] = {}
    for partnership_id in session.scalars(select(Contact.partnership_id).where(Contact.status == "active")):
        contacts[partnership_id] = contacts.get(partnership_id, 0) + 1
    names = list(dict.fromkeys(name for p in partnerships for name in (p.attributes or {})))
    header = ["partnership_id", "name", "contacts", *names]
    rows = [[p.code, p.name, str(contacts.get(p.id, 0)), *[(p.attributes or {}).get(n, "") for n in names]]
            for p in partnerships]
    return header, rows


def _comparable(value: object) -> object:
    return list(value.items()) if isinstance(value, dict) else value
