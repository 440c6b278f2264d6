"""SMTP backend (standard library): one connection per batch, one message per recipient."""

from __future__ import annotations

import smtplib
import ssl
from email.errors import MessageError

from pydantic import SecretStr

from consult.errors import ConsultError
from consult.mail.message import BatchResult, OutgoingBatch, TransientMailError, build_email
from consult.mail.outbox import MessageProgress


class SmtpMailer:
    name = "smtp"
    per_message = True  # reports each message to MessageProgress

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str | None = None,
        password: SecretStr | None = None,
        starttls: bool = False,
        timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.starttls = starttls
        self.timeout = timeout

    def _connect(self) -> smtplib.SMTP:
        try:
            connection = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        except (OSError, smtplib.SMTPException) as error:
            raise TransientMailError(f"cannot connect to SMTP server {self.host}:{self.port}: {error}") from error
        try:
            if self.starttls:
                connection.starttls(context=ssl.create_default_context())
            if self.username:
                connection.login(self.username, self.password.get_secret_value() if self.password else "")
        except smtplib.SMTPAuthenticationError as error:
            connection.close()
            raise ConsultError(
                f"SMTP server {self.host}:{self.port} refused the login of {self.username!r}: {error.smtp_code}"
            ) from None
        except (OSError, smtplib.SMTPException) as error:
            connection.close()
            raise TransientMailError(f"SMTP server {self.host}:{self.port}: {error}") from error
        return connection

    def send(self, batch: OutgoingBatch, progress: MessageProgress | None = None) -> BatchResult:
        result = BatchResult()
        connection = self._connect()
        try:
            for recipient in batch.recipients:
                try:
                    message = build_email(batch, recipient, message_id_domain=batch.sender.email.rpartition("@")[2])
                except (ValueError, TypeError, MessageError) as error:  # one unbuildable message fails alone
                    result.rejected[recipient.outbox_id] = f"message cannot be built: {error}"
                    continue
                if progress is not None:
                    progress.handing_over(recipient.outbox_id, message["Message-ID"])
                try:
                    refused = connection.send_message(message)
                except smtplib.SMTPRecipientsRefused as error:
                    code, reason = error.recipients.get(recipient.email, (0, b"refused"))
                    if 400 <= code < 500:  # a 4xx is "try again later", not a verdict on the address
                        raise TransientMailError(
                            f"SMTP server deferred {recipient.email}: {code}", partial=result
                        ) from error
                    result.rejected[recipient.outbox_id] = f"SMTP {code}: {_text(reason)}"
                    continue
                except smtplib.SMTPSenderRefused as error:
                    raise ConsultError(
                        f"SMTP server {self.host}:{self.port} refuses the sender {batch.sender.email} "
                        f"(CONSULT_MAIL_FROM): {error.smtp_code} {_text(error.smtp_error)}"
                    ) from None
                except smtplib.SMTPDataError as error:
                    if 400 <= error.smtp_code < 500:
                        raise TransientMailError(
                            f"SMTP server deferred a message: {error.smtp_code}", partial=result
                        ) from error
                    result.rejected[recipient.outbox_id] = f"SMTP {error.smtp_code}: {_text(error.smtp_error)}"
                    continue
                except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as error:
                    # The message may have been taken just before the connection dropped: never resend it blindly.
                    raise TransientMailError(
                        f"SMTP connection to {self.host}:{self.port} lost: {error}",
                        partial=result,
                        ambiguous=frozenset({recipient.outbox_id}),
                    ) from error
                if refused:
                    result.rejected[recipient.outbox_id] = f"SMTP refused: {refused}"
                else:
                    result.accepted[recipient.outbox_id] = message["Message-ID"]
                    if progress is not None:
                        progress.accepted(recipient.outbox_id, message["Message-ID"])
        finally:
            try:
                connection.quit()
            except (OSError, smtplib.SMTPException):
                connection.close()
        return result


def _text(reason: bytes | str) -> str:
    return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
