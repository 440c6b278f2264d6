"""The embedded default backend: every message becomes a file in a Maildir that any mail client can open
(``mutt -f data/mailbox``, Thunderbird's "Maildir" account, or Python's ``mailbox.Maildir``)."""

from __future__ import annotations

import mailbox
from pathlib import Path

from consult.mail.message import BatchResult, OutgoingBatch, build_email


class MailboxMailer:
    name = "mailbox"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def send(self, batch: OutgoingBatch) -> BatchResult:
        # Batches are sent in parallel: create the Maildir's folders idempotently, since
        # mailbox.Maildir(create=True) fails when another batch creates them at the same moment.
        for sub in ("tmp", "new", "cur"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        box = mailbox.Maildir(self.directory, create=False)
        result = BatchResult()
        for recipient in batch.recipients:
            # Maildir delivery writes to tmp/ then renames into new/: a message is either whole or absent.
            key = box.add(mailbox.MaildirMessage(build_email(batch, recipient, message_id_domain="consult.local")))
            result.accepted[recipient.outbox_id] = key
        return result
