"""What a mailer is handed: one batch of recipients sharing one rendered message, and what it hands back.

A batch's subject, text and HTML are rendered once and hold placeholders (``%%partnership.name%%``); each
recipient carries the values for them. SendGrid applies them itself (personalization ``substitutions``); the
SMTP and mailbox backends apply them locally with :func:`personalise`. Values are stripped of control
characters before they get here, so no name can smuggle a CR/LF into a header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr, parseaddr

from consult.errors import ConsultError

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]+")
_SPACES = re.compile(r"\s+")


def single_line(value: str) -> str:
    """The value with every control character (CR, LF, TAB, NUL...) turned into one space: safe in a header."""
    if value.isprintable():  # the usual case, and a fast test: no control character (nor line separator) at all
        return value.strip() if "  " not in value else _SPACES.sub(" ", value).strip()
    return _SPACES.sub(" ", _CONTROL.sub(" ", value)).strip()


@dataclass(frozen=True, slots=True)
class Address:
    email: str
    name: str = ""

    @classmethod
    def parse(cls, value: str, *, setting: str = "CONSULT_MAIL_FROM") -> Address:
        name, email = parseaddr(single_line(value))
        if "@" not in email:
            raise ConsultError(f"{setting}: {value!r} is not an email address (expected 'Name <user@domain>')")
        return cls(email=email, name=name)

    def formatted(self) -> str:
        return formataddr((single_line(self.name), self.email)) if self.name else self.email


@dataclass(frozen=True, slots=True)
class Content:
    """One rendered message with placeholders: the subject is one line, ``text`` and ``html`` are bodies."""

    subject: str
    text: str
    html: str


@dataclass(frozen=True, slots=True)
class Recipient:
    outbox_id: int
    email: str
    name: str
    substitutions: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file sent with every message of a batch (the published summary)."""

    filename: str
    content_type: str  # "text/html"
    data: bytes


@dataclass(frozen=True, slots=True)
class OutgoingBatch:
    """Up to 1,000 messages of one kind, one language, one content."""

    batch_key: str
    kind: str
    sender: Address
    content: Content
    categories: tuple[str, ...]
    recipients: list[Recipient]
    attachments: tuple[Attachment, ...] = ()


@dataclass(slots=True)
class BatchResult:
    """``accepted`` maps outbox ids to the provider's message id (or None when the provider gives none);
    ``rejected`` maps outbox ids the provider refused for good to the reason it gave."""

    accepted: dict[int, str | None] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)


class TransientMailError(Exception):
    """The provider did not take (all of) the batch, for a reason that may go away: rate limit, outage,
    connection refused, time-out.

    ``partial`` holds what was settled before the failure. ``ambiguous`` names messages the provider may or may
    not have accepted (the request went out, no answer came back): they must not be sent again blindly.
    Everything else in the batch was certainly not accepted and may be sent again. ``retry_after`` is how long
    the provider asked us to wait, in seconds, when it said so.
    """

    def __init__(
        self,
        message: str,
        *,
        partial: BatchResult | None = None,
        ambiguous: frozenset[int] = frozenset(),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.partial = partial or BatchResult()
        self.ambiguous = ambiguous
        self.retry_after = retry_after


def personalise(template: str, substitutions: Mapping[str, str]) -> str:
    """Replace each placeholder by its value, in one pass (a value is never itself re-substituted)."""
    if not substitutions:
        return template
    pattern = re.compile("|".join(re.escape(key) for key in sorted(substitutions, key=len, reverse=True)))
    return pattern.sub(lambda match: substitutions[match.group(0)], template)


def build_email(batch: OutgoingBatch, recipient: Recipient, *, message_id_domain: str | None = None) -> EmailMessage:
    """One standard MIME message (text + HTML alternative) for a recipient of the batch.

    The stdlib's default policy refuses CR/LF in any header value, a second guard behind :func:`single_line`.
    """
    message = EmailMessage()
    message["Subject"] = single_line(personalise(batch.content.subject, recipient.substitutions))
    message["From"] = batch.sender.formatted()
    message["To"] = Address(recipient.email, recipient.name).formatted()
    message["X-Consult-Outbox-Id"] = str(recipient.outbox_id)
    message["X-Consult-Categories"] = ", ".join(batch.categories)
    if message_id_domain:
        from email.utils import make_msgid

        message["Message-ID"] = make_msgid(idstring=f"outbox-{recipient.outbox_id}", domain=message_id_domain)
    message.set_content(personalise(batch.content.text, recipient.substitutions))
    message.add_alternative(personalise(batch.content.html, recipient.substitutions), subtype="html")
    for attachment in batch.attachments:  # the message becomes multipart/mixed: the bodies, then the files
        maintype, _, subtype = attachment.content_type.partition("/")
        message.add_attachment(attachment.data, maintype=maintype, subtype=subtype or "octet-stream",
                               filename=single_line(attachment.filename))
    return message
