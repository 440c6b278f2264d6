"""Contacts: the checks every name and address passes before it is stored, and the operator's edits of one contact.

A name reaches a mail header (``To: First Last <address>``) and a spreadsheet cell (the participants export), so it
is checked as those will read it:

- RFC 2047 encoded words (``=?utf-8?q?...?=``) are decoded first: a mail library decodes them when it parses a
  header, so an encoded CR/LF is a real CR/LF by the time the message is built;
- control characters (Unicode category Cc: CR, LF, TAB, NUL...), the line and paragraph separators U+2028/U+2029
  and the invisible format characters that reorder or hide text (category Cf: bidi overrides, zero-width space,
  BOM) are refused. Zero-width joiner/non-joiner and the soft hyphen stay allowed: real names in Persian, Indic
  scripts and emoji sequences need them;
- an address must not start with a character a spreadsheet reads as a formula (``= + - @``, TAB, CR), since the
  participants export would otherwise have to alter it (``'=cmd|...``) and the survey tool would get another address.
"""

from __future__ import annotations

import re
import unicodedata
from email.errors import HeaderParseError
from email.header import decode_header, make_header

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from consult.errors import ConsultError
from db.models import Contact, OutboxMessage, Partnership, utcnow

# Deliberately strict: one @, a dotted domain, no spaces, quotes, angle brackets or line breaks, so that an
# address can be put in a mail header as it is.
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")
_ALLOWED_FORMAT = {"\u200c", "\u200d", "\u00ad"}  # ZWNJ, ZWJ, soft hyphen
_NAMED = {"\r": "a line break (CR)", "\n": "a line break (LF)", "\t": "a tab", "\x00": "a NUL character",
          "\u2028": "a line separator (U+2028)", "\u2029": "a paragraph separator (U+2029)",
          "\x85": "a next-line character (U+0085)"}


def forbidden_character(value: str) -> str | None:
    """The first character of ``value`` that must not be in a name or address, or None."""
    if value.isascii() and value.isprintable():  # the usual case, and a fast test
        return None
    for char in value:
        category = unicodedata.category(char)
        if category in ("Cc", "Zl", "Zp") or (category == "Cf" and char not in _ALLOWED_FORMAT):
            return char
    return None


def describe(char: str) -> str:
    return _NAMED.get(char, f"the control character U+{ord(char):04X}")


def decode_encoded_words(value: str) -> str:
    """``value`` with its RFC 2047 encoded words decoded (what a mail client will show and parse)."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"an encoded word that cannot be decoded ({error})") from None


def clean_name(value: str, *, where: str, column: str) -> str:
    """A name as it will be stored: encoded words decoded, surrounding spaces trimmed; a name holding a forbidden
    character is refused with one line naming ``where`` (file and row, or the command) and the column."""
    try:
        decoded = decode_encoded_words(value)
    except ValueError as error:
        raise ConsultError(f"{where}: {column} {value!r} holds {error}") from None
    bad = forbidden_character(decoded)
    if bad is not None:
        shown = " (after decoding its encoded words)" if decoded != value else ""
        raise ConsultError(f"{where}: {column} contains {describe(bad)}{shown}: {value!r}; remove it")
    return decoded.strip()


def is_valid_email(address: str) -> bool:
    return len(address) <= 320 and _EMAIL.fullmatch(address) is not None


def clean_email(value: str, *, where: str, column: str = "contact_email") -> str:
    """An address as it will be stored, or one line naming ``where``: a forbidden character, a formula lead
    character, or not an address."""
    bad = forbidden_character(value)
    if bad is not None:
        raise ConsultError(f"{where}: {column} contains {describe(bad)}: {value!r}; remove it")
    address = value.strip()
    if address.startswith(FORMULA_LEADS):
        raise ConsultError(
            f"{where}: {column} {address!r} starts with {address[0]!r}, which a spreadsheet reads as a formula; "
            "an address must start with a letter or digit"
        )
    if not is_valid_email(address):
        raise ConsultError(f"{where}: invalid email address {address!r}")
    return address


def message_problem(name: str, email: str) -> str | None:
    """Why a message to ``name <email>`` cannot be built (a contact stored before these checks), or None.

    Raw control characters in a name are not a problem here: the message builder turns them into spaces
    (consult.mail.message.single_line). What it cannot mend is an encoded word that a mail library decodes into
    a line break, or an address that is not one."""
    if "=?" in name:
        try:
            decoded = decode_encoded_words(name)
        except ValueError as error:
            return f"recipient name {name!r} holds {error}"
        bad = forbidden_character(decoded)
        if bad is not None:
            return (f"recipient name {name!r} contains {describe(bad)} once decoded; fix it with "
                    "`consult panel contact update`")
    if email.startswith(FORMULA_LEADS) or not is_valid_email(email):
        return f"recipient address {email!r} is not a safe email address; fix it with `consult panel contact update`"
    return None


# -- the operator's edits (`consult panel contact show|update|deactivate|remove`) ---------------------------------

def find_contact(session: Session, email: str, *, partnership: str | None = None) -> Contact:
    """The one contact with this address (in ``partnership`` when given); one line when none or several."""
    query = (select(Contact).join(Partnership, Partnership.id == Contact.partnership_id)
             .where(func.lower(Contact.email) == email.strip().lower()))
    if partnership is not None:
        query = query.where(Partnership.code == partnership)
    found = list(session.scalars(query))
    where = f" in partnership {partnership}" if partnership is not None else ""
    if not found:
        raise ConsultError(f"no contact {email!r}{where}: `consult panel import` adds contacts")
    if len(found) > 1:
        codes = ", ".join(sorted(session.get(Partnership, c.partnership_id).code for c in found))
        raise ConsultError(f"{email!r} is a contact of several partnerships ({codes}): name one with --partnership")
    return found[0]


def describe_contact(session: Session, contact: Contact) -> dict[str, str]:
    partnership = session.get(Partnership, contact.partnership_id)
    messages = session.scalar(select(func.count()).select_from(OutboxMessage)
                              .where(OutboxMessage.contact_id == contact.id)) or 0
    return {
        "partnership": partnership.code if partnership else "", "first_name": contact.first_name,
        "last_name": contact.last_name, "email": contact.email, "status": contact.status,
        "status_reason": contact.status_reason or "", "messages": str(messages),
    }


def update_contact(session: Session, contact: Contact, *, first_name: str | None = None,
                   last_name: str | None = None, email: str | None = None) -> list[str]:
    """Change the given fields (checked as at import); messages not sent yet go to the new address. Returns the
    names of the fields that changed."""
    where = "consult panel contact update"
    changed: list[str] = []
    if first_name is not None:
        value = clean_name(first_name, where=where, column="--first-name")
        if value != contact.first_name:
            contact.first_name, changed = value, [*changed, "first_name"]
    if last_name is not None:
        value = clean_name(last_name, where=where, column="--last-name")
        if value != contact.last_name:
            contact.last_name, changed = value, [*changed, "last_name"]
    if email is not None:
        value = clean_email(email, where=where, column="--email")
        if value != contact.email:
            taken = session.scalar(select(Contact.id).where(
                Contact.partnership_id == contact.partnership_id, func.lower(Contact.email) == value.lower(),
                Contact.id != contact.id))
            if taken is not None:
                raise ConsultError(f"{where}: {value!r} is already a contact of the same partnership")
            contact.email, changed = value, [*changed, "email"]
            session.execute(update(OutboxMessage).where(
                OutboxMessage.contact_id == contact.id, OutboxMessage.state == "pending").values(recipient=value))
    session.flush()
    return changed


def deactivate_contact(session: Session, contact: Contact, *, reason: str = "deactivated by the operator") -> None:
    """No more messages to this contact: planned ones are skipped when their batch is claimed."""
    contact.status, contact.status_reason, contact.status_at = "inactive", reason, utcnow()
    session.flush()


def remove_contact(session: Session, contact: Contact) -> int:
    """Delete the contact. Its messages not sent yet are deleted; the record of those already handed to the
    provider stays in the outbox (address and state), detached from the contact. Returns how many were kept."""
    session.execute(delete(OutboxMessage).where(OutboxMessage.contact_id == contact.id,
                                                OutboxMessage.state == "pending"))
    kept = session.execute(update(OutboxMessage).where(OutboxMessage.contact_id == contact.id)
                           .values(contact_id=None, recipient_name=f"{contact.first_name} {contact.last_name}".strip()
                                   or None)).rowcount
    session.delete(contact)
    session.flush()
    return kept
