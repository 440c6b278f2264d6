"""Sending one batch end to end: claim its rows, hand it to the mailer, record the answer.

Plain functions, called by the Prefect tasks in ``tasks/mail.py`` (and directly by tests and the benchmark).
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import Engine

from consult.contacts import message_problem
from consult.errors import ConsultError
from consult.mail.mailer import Mailer
from consult.mail.message import BatchResult, TransientMailError
from consult.mail.outbox import BatchOutcome, ClaimedBatch, MessageProgress, claim, record
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
    """Hand a claimed batch to the mailer and record the answer (whatever kind of message it holds).

    A recipient whose message cannot be built safely (a name or address stored before the import checks, holding
    an encoded CR/LF, say) is ``failed`` with the reason and left out; the rest of the batch goes on."""
    unbuildable = {
        recipient.outbox_id: problem for recipient in claimed.batch.recipients
        if (problem := message_problem(recipient.name, recipient.email)) is not None
    }
    batch = claimed.batch
    if unbuildable:
        batch = dataclasses.replace(batch, recipients=[
            recipient for recipient in batch.recipients if recipient.outbox_id not in unbuildable])
    # Mailers that hand messages over one at a time record each one as they go (see MessageProgress).
    progress = MessageProgress(engine, claimed.claimed_ids)
    if batch.recipients and not getattr(mailer, "per_message", False):
        progress.whole_batch(batch.batch_key)
    try:
        result = mailer.send(batch, progress=progress) if batch.recipients else BatchResult()
    except TransientMailError as error:
        # A 429's reset time is honoured by the mailer itself before its next request (the retry's).
        progress.flush()
        error.partial.rejected.update(unbuildable)
        record(engine, claimed, error.partial, ambiguous=error.ambiguous, reason=str(error))
        raise
    except ConsultError as error:
        # The provider refused the request as a whole (key, sender, shape): nothing was accepted, so the rows go
        # back to pending for the run after the fix.
        progress.flush()
        record(engine, claimed, BatchResult(rejected=dict(unbuildable)), reason=str(error))
        raise
    progress.flush()
    result.rejected.update(unbuildable)
    return record(engine, claimed, result)
