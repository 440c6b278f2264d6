"""Sending one batch end to end: claim its rows, hand it to the mailer, record the answer.

Plain functions, called by the Prefect tasks in ``tasks/mail.py`` (and directly by tests and the benchmark).
"""

from __future__ import annotations

from sqlalchemy import Engine

from consult.errors import ConsultError
from consult.mail.mailer import Mailer
from consult.mail.message import BatchResult, TransientMailError
from consult.mail.outbox import BatchOutcome, ClaimedBatch, claim, record
from consult.settings import Settings


def send_batch(engine: Engine, settings: Settings, mailer: Mailer, batch_key: str) -> BatchOutcome:
    """Send the pending rows of ``batch_key``; raise :class:`TransientMailError` (after recording what is known)
    when the attempt should be retried, :class:`ConsultError` when retrying cannot help."""
    claimed = claim(
        engine, batch_key, mail_from=settings.mail_from, url_template=settings.resolved_response_url_template,
        token_secret=settings.resolved_token_secret(),
    )
    if claimed is None:
        return BatchOutcome(batch_key=batch_key, claimed=0, sent=0, failed=0, unknown=0, released=0)
    return send_claimed(engine, mailer, claimed)


def send_claimed(engine: Engine, mailer: Mailer, claimed: ClaimedBatch) -> BatchOutcome:
    """Hand a claimed batch to the mailer and record the answer (whatever kind of message it holds)."""
    try:
        result = mailer.send(claimed.batch)
    except TransientMailError as error:
        # A 429's reset time is honoured by the mailer itself before its next request (the retry's).
        record(engine, claimed, error.partial, ambiguous=error.ambiguous, reason=str(error))
        raise
    except ConsultError as error:
        # The provider refused the request as a whole (key, sender, shape): nothing was accepted, so the rows go
        # back to pending for the run after the fix.
        record(engine, claimed, BatchResult(), reason=str(error))
        raise
    return record(engine, claimed, result)
