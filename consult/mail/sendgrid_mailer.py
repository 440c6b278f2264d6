"""SendGrid backend: the official ``sendgrid`` client, v3 Mail Send, one request per batch of up to 1,000.

Each recipient is one personalization carrying its substitutions and the outbox id in ``custom_args`` (so that
webhook events and the activity feed lead back to the outbox row); ``categories`` carry the round and the kind.
SendGrid answers one ``X-Message-Id`` per request, stored on every row of the batch: webhook events carry it as
the prefix of their ``sg_message_id``.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import threading
import time
import urllib.error
from typing import Any

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from consult.errors import ConsultError
from consult.mail.message import BatchResult, OutgoingBatch, Recipient, TransientMailError, single_line

# python_http_client logs request headers (the API key) and payloads (response links) at DEBUG level: keep that
# logger above DEBUG whatever the root level, so that no secret reaches a log.
logging.getLogger("python_http_client").setLevel(logging.INFO)

MAX_PERSONALIZATIONS = 1000
_PERSONALIZATION_FIELD = re.compile(r"^personalizations\.(\d+)\b")
# A name SendGrid puts in a To header: no line breaks (single_line) and none of the separators ";" and ","
# that its API refuses in a name.
_NAME_SEPARATORS = re.compile(r"[;,]")


class _RateGate:
    """After a 429, no request to that host leaves this process before the reset time SendGrid gave: the
    limit is per account, so the other batches sending in parallel must wait too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._not_before: dict[str, float] = {}

    def wait(self, host: str) -> None:
        with self._lock:
            until = self._not_before.get(host, 0.0)
        delay = until - time.time()
        if delay > 0:
            time.sleep(min(delay, MAX_RATE_LIMIT_WAIT))

    def close_until(self, host: str, until: float) -> None:
        with self._lock:
            self._not_before[host] = max(until, self._not_before.get(host, 0.0))


_GATE = _RateGate()
# A provider asking us to wait longer than this is having a bad day: this attempt gives up and the task's
# retries (or the next run) carry on.
MAX_RATE_LIMIT_WAIT = 120.0


class SendGridMailer:
    name = "sendgrid"

    def __init__(self, *, api_key: str, host: str, timeout: float = 30.0) -> None:
        self._client = SendGridAPIClient(api_key=api_key, host=host.rstrip("/"))
        self.host = host
        self.timeout = timeout

    def __repr__(self) -> str:  # never show the key
        return f"SendGridMailer(host={self.host!r})"

    @staticmethod
    def request_body(batch: OutgoingBatch, recipients: list[Recipient]) -> dict[str, Any]:
        """The v3 Mail Send request for ``recipients`` (all of the same batch)."""
        if not 0 < len(recipients) <= MAX_PERSONALIZATIONS:
            raise ValueError(f"a SendGrid request holds 1 to {MAX_PERSONALIZATIONS} personalizations, not {len(recipients)}")
        sender: dict[str, str] = {"email": batch.sender.email}
        if batch.sender.name:
            sender["name"] = single_line(batch.sender.name)
        personalizations = []
        for recipient in recipients:
            to: dict[str, str] = {"email": recipient.email}
            name = _NAME_SEPARATORS.sub(" ", single_line(recipient.name)).strip()
            if name:
                to["name"] = name
            personalization: dict[str, Any] = {
                "to": [to],
                "custom_args": {"outbox_id": str(recipient.outbox_id), "batch": batch.batch_key},
            }
            if recipient.substitutions:
                personalization["substitutions"] = dict(recipient.substitutions)
            personalizations.append(personalization)
        body: dict[str, Any] = {
            "personalizations": personalizations,
            "from": sender,
            "subject": single_line(batch.content.subject),
            # text/plain must come first in SendGrid's content array.
            "content": [
                {"type": "text/plain", "value": batch.content.text},
                {"type": "text/html", "value": batch.content.html},
            ],
            "categories": list(batch.categories),
        }
        if batch.attachments:
            body["attachments"] = [
                {"content": base64.b64encode(attachment.data).decode("ascii"), "type": attachment.content_type,
                 "filename": single_line(attachment.filename), "disposition": "attachment"}
                for attachment in batch.attachments
            ]
        return body

    def post(self, body: dict[str, Any]) -> Any:
        """One Mail Send call with the sendgrid client (its http client; ``send()`` cannot take a timeout)."""
        _GATE.wait(self.host)
        return self._client.client.mail.send.post(request_body=body, timeout=self.timeout)

    def send(self, batch: OutgoingBatch, progress: object = None) -> BatchResult:
        # One request for the whole batch: per-message progress does not apply (its rows are settled together).
        result = BatchResult()
        remaining = list(batch.recipients)
        # SendGrid refuses the whole request when one address is bad and names it: take the named ones out and
        # send the rest again. Each round removes at least one recipient, so this ends.
        while remaining:
            try:
                response = self.post(self.request_body(batch, remaining))
            except HTTPError as error:
                bad = self._refused_recipients(error, remaining)
                if bad is None:
                    raise self._translate(error, result) from None
                result.rejected.update(bad)
                remaining = [recipient for recipient in remaining if recipient.outbox_id not in bad]
                continue
            except urllib.error.URLError as error:
                # urllib wraps every failure while connecting or writing the request: nothing was accepted.
                raise TransientMailError(f"SendGrid at {self.host} unreachable: {error.reason}", partial=result) from None
            except (TimeoutError, http.client.HTTPException, ConnectionError) as error:
                # The request went out and no answer came back: SendGrid may have queued it.
                raise TransientMailError(
                    f"SendGrid at {self.host} gave no answer ({type(error).__name__}: {error})",
                    partial=result,
                    ambiguous=frozenset(recipient.outbox_id for recipient in remaining),
                ) from None
            message_id = response.headers.get("X-Message-Id") if response.headers else None
            for recipient in remaining:
                result.accepted[recipient.outbox_id] = message_id
            break
        return result

    @staticmethod
    def _refused_recipients(error: HTTPError, recipients: list[Recipient]) -> dict[int, str] | None:
        """For a 400 that names personalizations (``personalizations.3.to.0.email``), the refused recipients and
        the reasons; None when the refusal is not about particular recipients."""
        if error.status_code != 400:
            return None
        try:
            errors = json.loads(error.body or b"{}").get("errors", [])
        except (ValueError, AttributeError):
            return None
        refused: dict[int, str] = {}
        for item in errors:
            match = _PERSONALIZATION_FIELD.match(str(item.get("field") or ""))
            if match is None or int(match.group(1)) >= len(recipients):
                return None  # one error is about the request itself: the whole request is wrong
            recipient = recipients[int(match.group(1))]
            reason = f"SendGrid 400 {item.get('field')}: {item.get('message', '')}".strip()
            refused[recipient.outbox_id] = f"{refused[recipient.outbox_id]}; {reason}" if recipient.outbox_id in refused else reason
        return refused or None

    def _translate(self, error: HTTPError, partial: BatchResult) -> Exception:
        status = error.status_code
        if status == 429:
            retry_after = _retry_after(error)
            _GATE.close_until(self.host, time.time() + (retry_after if retry_after is not None else 1.0))
            return TransientMailError(
                f"SendGrid rate limit (429) at {self.host}", partial=partial, retry_after=retry_after
            )
        if status >= 500:
            return TransientMailError(f"SendGrid at {self.host} answered {status}", partial=partial)
        if status in (401, 403):
            return ConsultError(
                f"SendGrid at {self.host} refused the API key ({status}): check CONSULT_SENDGRID_API_KEY or the "
                "Prefect Secret block 'sendgrid-api-key'"
            )
        detail = error.body.decode(errors="replace")[:500] if isinstance(error.body, bytes) else str(error.body)[:500]
        return ConsultError(f"SendGrid at {self.host} refused the request ({status}): {single_line(detail)}")


def _retry_after(error: HTTPError) -> float | None:
    """Seconds until ``X-RateLimit-Reset`` (a Unix time), else ``Retry-After`` (seconds), else None."""
    headers = error.headers
    if headers is None:
        return None
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            return max(0.0, float(reset) - time.time())
        except ValueError:
            pass
    retry_after = headers.get("Retry-After")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            pass
    return None
