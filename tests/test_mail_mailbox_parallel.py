"""The Maildir backend under parallel batches, as the mail flow sends them (up to 8 at once)."""

from __future__ import annotations

import mailbox
from concurrent.futures import ThreadPoolExecutor

from consult.mail.mailbox_mailer import MailboxMailer
from consult.mail.message import OutgoingBatch


def test_parallel_batches_on_a_new_maildir_all_succeed(tmp_path):
    """Batches that start at once on a Maildir that does not exist yet all send, none fails creating it."""
    for attempt in range(20):
        directory = tmp_path / str(attempt) / "mailbox"
        mailer = MailboxMailer(directory)
        batch = OutgoingBatch(batch_key="b", kind="invitation", sender=None, content=None,  # type: ignore[arg-type]
                              categories=(), recipients=[])
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(mailer.send, [batch] * 8))
        assert len(results) == 8
        assert len(mailbox.Maildir(directory, create=False)) == 0
