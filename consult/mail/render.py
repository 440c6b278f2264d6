"""Email rendering: one function, one context builder per kind of message, templates as data.

A template is rendered once per batch. Per-recipient values (the contact's and the partnership's names, the
response link) render as placeholders; :func:`recipient_substitutions` gives each recipient its values, in a
plain variant (subject and text, stripped of line breaks) and an HTML-escaped variant (HTML body).
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape
from markupsafe import Markup

from consult.errors import ConsultError
from consult.mail.message import Content, single_line
from consult.settings import TEMPLATES_DIR

EMAIL_TEMPLATES_DIR = TEMPLATES_DIR / "email"
KINDS = ("invitation", "reminder", "thank_you")

# The per-recipient fields a template may use; each renders as a placeholder.
RECIPIENT_FIELDS = {
    "contact": ("first_name", "last_name", "name", "email"),
    "partnership": ("name", "acronym", "code"),
}
LINK_FIELD = "link"


def placeholder(field: str, *, html_variant: bool) -> str:
    return f"%%{field}:html%%" if html_variant else f"%%{field}%%"


class _Placeholders:
    """Stands for a contact or a partnership in a template: ``contact.first_name`` renders ``%%contact.first_name%%``."""

    def __init__(self, prefix: str, fields: tuple[str, ...], *, html_variant: bool) -> None:
        for name in fields:
            value = placeholder(f"{prefix}.{name}", html_variant=html_variant)
            # Markup: the placeholder itself must not be escaped; the value replacing it is escaped already.
            setattr(self, name, Markup(value) if html_variant else value)


@lru_cache(maxsize=4)
def _environment(directory: Path) -> Environment:
    return Environment(
        loader=FileSystemLoader(str(directory)),
        # HTML templates autoescape every value; plain-text ones must not (a "&" stays a "&").
        autoescape=select_autoescape(enabled_extensions=("html.j2", "html"), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def template_names(kind: str, language: str) -> tuple[str, str]:
    """The (text, html) template names for ``kind`` in ``language``, falling back to English."""
    if kind not in KINDS:
        raise ConsultError(f"unknown kind of message {kind!r}: expected one of {', '.join(KINDS)}")
    names = (f"{kind}.txt.j2", f"{kind}.html.j2")
    if language and language != "en":
        localised = tuple(f"{language}/{name}" for name in names)
        if all((EMAIL_TEMPLATES_DIR / name).is_file() for name in localised):
            return localised  # type: ignore[return-value]
    return names


_MONTHS = {
    "en": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"),
    "fr": ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
           "novembre", "décembre"),
}


def format_date(day: dt.date, language: str) -> str:
    """``30 June 2019`` in English, ``30 juin 2019`` in French; ISO 8601 for a language without month names here."""
    months = _MONTHS.get(language)
    if months is None:
        return day.isoformat()
    return f"{day.day} {months[day.month - 1]} {day.year}"


@dataclass(frozen=True, slots=True)
class BatchContext:
    """What is the same for every recipient of a batch."""

    year: int
    deadline: dt.date
    consultation_title: str
    sender_name: str
    language: str = "en"


def titled_with_year(title: str, year: int) -> str:
    """The consultation's name with its year, once: a questionnaire titled "ESCP-4i yearly consultation 2019"
    stays as it is, one titled "Panel survey" becomes "Panel survey 2019"."""
    return title if re.search(rf"(?<!\d){year}(?!\d)", title) else f"{title} {year}"


def render_content(kind: str, context: BatchContext, *, directory: Path = EMAIL_TEMPLATES_DIR) -> Content:
    """Render ``kind``'s templates once, with placeholders for per-recipient values."""
    text_name, html_name = template_names(kind, context.language) if directory == EMAIL_TEMPLATES_DIR else (
        f"{kind}.txt.j2", f"{kind}.html.j2")
    environment = _environment(directory)
    # The language actually used: a partnership whose language has no templates reads English throughout.
    language = text_name.split("/")[0] if "/" in text_name else "en"
    values = {
        "year": context.year,
        "deadline": format_date(context.deadline, language),
        "consultation_title": titled_with_year(single_line(context.consultation_title), context.year),
        "sender_name": single_line(context.sender_name),
        "language": language,
    }
    try:
        text_template = environment.get_template(text_name)
        html_template = environment.get_template(html_name)
    except TemplateNotFound as missing:
        raise ConsultError(f"email template {directory / str(missing)} is missing") from None

    def recipient_values(html_variant: bool) -> dict[str, object]:
        return {
            prefix: _Placeholders(prefix, fields, html_variant=html_variant)
            for prefix, fields in RECIPIENT_FIELDS.items()
        } | {LINK_FIELD: Markup(placeholder(LINK_FIELD, html_variant=True)) if html_variant
             else placeholder(LINK_FIELD, html_variant=False)}

    text_module = text_template.make_module(values | recipient_values(False))
    subject = single_line(str(getattr(text_module, "subject", "")))
    if not subject:
        raise ConsultError(f"email template {directory / text_name} sets no subject ({{% set subject %}}...)")
    html_body = html_template.render(values | recipient_values(True))
    return Content(subject=subject, text=str(text_module), html=html_body)


@dataclass(frozen=True, slots=True)
class RecipientValues:
    first_name: str
    last_name: str
    email: str
    partnership_name: str
    partnership_acronym: str
    partnership_code: str
    link: str


def recipient_substitutions(content: Content, values: RecipientValues) -> dict[str, str]:
    """The placeholder -> value map for one recipient, limited to the placeholders ``content`` uses (it keeps
    each SendGrid personalization small)."""
    result: dict[str, str] = {}
    for field, text_key, html_key in _used_fields(content):
        clean = single_line(_FIELD_VALUE[field](values))
        if text_key:
            result[text_key] = clean
        if html_key:
            result[html_key] = html.escape(clean, quote=True)
    return result


_FIELD_VALUE = {
    "contact.first_name": lambda v: v.first_name,
    "contact.last_name": lambda v: v.last_name,
    "contact.name": lambda v: f"{v.first_name} {v.last_name}",
    "contact.email": lambda v: v.email,
    "partnership.name": lambda v: v.partnership_name,
    "partnership.acronym": lambda v: v.partnership_acronym,
    "partnership.code": lambda v: v.partnership_code,
    LINK_FIELD: lambda v: v.link,
}


@lru_cache(maxsize=64)
def _used_fields(content: Content) -> tuple[tuple[str, str | None, str | None], ...]:
    """(field, its text placeholder if used, its HTML placeholder if used) for each field ``content`` uses."""
    whole = content.subject + content.text + content.html
    used = []
    for field in _FIELD_VALUE:
        text_key, html_key = placeholder(field, html_variant=False), placeholder(field, html_variant=True)
        found = (text_key if text_key in whole else None, html_key if html_key in whole else None)
        if any(found):
            used.append((field, *found))
    return tuple(used)


def preview(kind: str, context: BatchContext, values: RecipientValues) -> Mapping[str, str]:
    """One recipient's message as they would read it (for the CLI and for tests)."""
    from consult.mail.message import personalise

    content = render_content(kind, context)
    substitutions = recipient_substitutions(content, values)
    return {
        "subject": personalise(content.subject, substitutions),
        "text": personalise(content.text, substitutions),
        "html": personalise(content.html, substitutions),
    }
