"""The one interface every mail backend implements, and the choice of backend from the settings."""

from __future__ import annotations

from typing import Protocol

from consult.errors import ConsultError
from consult.mail.message import BatchResult, OutgoingBatch
from consult.mail.outbox import MessageProgress
from consult.settings import Settings


class Mailer(Protocol):
    """Sends one batch. Returns what was accepted and what was refused for good; raises
    :class:`~consult.mail.message.TransientMailError` when (part of) the batch could not be handed over for a
    reason that may go away, and :class:`ConsultError` when nothing will work until someone fixes something
    (a wrong API key, a request the provider does not understand)."""

    name: str

    def send(self, batch: OutgoingBatch, progress: MessageProgress | None = None) -> BatchResult:
        """``progress``: a mailer that hands messages over one at a time reports each one to it
        (``handing_over`` just before, ``accepted`` just after), so a crash mid-batch loses track of one message
        at most; a mailer that sends the batch in one request ignores it."""
        ...


SENDGRID_SECRET_BLOCK = "sendgrid-api-key"


def sendgrid_api_key(settings: Settings) -> str:
    """The API key: from the settings, else from the Prefect Secret block ``sendgrid-api-key``."""
    if settings.sendgrid_api_key is not None:
        return settings.sendgrid_api_key.get_secret_value()
    from prefect.blocks.system import Secret

    try:
        secret = Secret.load(SENDGRID_SECRET_BLOCK)
    except (ValueError, RuntimeError) as missing:  # Prefect raises ValueError when the block does not exist
        raise ConsultError(
            "CONSULT_MAIL_BACKEND=sendgrid needs an API key: set CONSULT_SENDGRID_API_KEY or create the Prefect "
            f"Secret block {SENDGRID_SECRET_BLOCK!r} ({str(missing).splitlines()[0]})"
        ) from None
    return str(secret.get())


def get_mailer(settings: Settings) -> Mailer:
    """The backend named by ``settings.mail_backend``."""
    if settings.mail_backend == "mailbox":
        from consult.mail.mailbox_mailer import MailboxMailer

        return MailboxMailer(settings.resolved_mailbox_dir)
    if settings.mail_backend == "smtp":
        from consult.mail.smtp_mailer import SmtpMailer

        return SmtpMailer(
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
        )
    if settings.mail_backend == "sendgrid":
        from consult.mail.sendgrid_mailer import SendGridMailer

        return SendGridMailer(api_key=sendgrid_api_key(settings), host=settings.sendgrid_host)
    raise ConsultError(f"CONSULT_MAIL_BACKEND: unknown backend {settings.mail_backend!r}")


__all__ = ["BatchResult", "Mailer", "OutgoingBatch", "get_mailer", "sendgrid_api_key"]
