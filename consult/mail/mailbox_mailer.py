"""The embedded default backend: every message becomes a file in a Maildir that any mail client can open
(``mutt -f data/mailbox``, Thunderbird's "Maildir" account, or Python's ``mailbox.Maildir``).

Each message's file name is fixed by its outbox row: ``consult-<outbox id>-<hash of its batch key>`` (the batch
key holds a random run token, so a new database writing into an old Maildir never collides with old files).
Writing is therefore idempotent and checkable:

- a message is written to ``tmp/`` then hard-linked into ``new/`` (whole or absent; linking fails if it is there
  already), so handing the same row over twice leaves one file;
- after a crash, :meth:`MailboxMailer.written` says for certain which rows' messages are in the Maildir (in
  ``new/``, or in ``cur/`` where a mail client moves what it has seen, with its ``:2,`` flags appended), and the
  file's ``X-Consult-Outbox-Id`` header is checked against the row.
"""

from __future__ import annotations

import email
import email.errors
import email.parser
import email.policy
import hashlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from consult.mail.message import BatchResult, OutgoingBatch, build_email
from consult.mail.outbox import MessageProgress


def message_file_name(outbox_id: int, batch_key: str) -> str:
    return f"consult-{outbox_id}-{hashlib.sha256(batch_key.encode()).hexdigest()[:16]}"


class MailboxMailer:
    name = "mailbox"
    per_message = True  # reports each message to MessageProgress

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _folders(self) -> None:
        # Batches are sent in parallel: create the Maildir's folders idempotently, since
        # mailbox.Maildir(create=True) fails when another batch creates them at the same moment.
        for sub in ("tmp", "new", "cur"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)

    def _present(self) -> dict[str, Path]:
        """File names (without a mail client's ``:2,flags``) of the messages in ``new/`` and ``cur/``."""
        present: dict[str, Path] = {}
        for sub in ("cur", "new"):
            folder = self.directory / sub
            if folder.is_dir():
                with os.scandir(folder) as entries:
                    for entry in entries:
                        present[entry.name.split(":", 1)[0]] = Path(entry.path)
        return present

    def send(self, batch: OutgoingBatch, progress: MessageProgress | None = None) -> BatchResult:
        self._folders()
        present = self._present() if batch.recipients else {}
        result = BatchResult()
        for recipient in batch.recipients:
            name = message_file_name(recipient.outbox_id, batch.batch_key)
            if name in present:  # written by an earlier attempt that died before recording it
                result.accepted[recipient.outbox_id] = name
                if progress is not None:
                    progress.accepted(recipient.outbox_id, name)
                continue
            try:
                message = build_email(batch, recipient, message_id_domain="consult.local")
            except (ValueError, TypeError, email.errors.MessageError) as error:  # one bad message fails alone
                result.rejected[recipient.outbox_id] = f"message cannot be built: {error}"
                continue
            if progress is not None:
                progress.handing_over(recipient.outbox_id, name)
            # As mailbox.Maildir.add writes it: LF line ends, headers not re-folded.
            self._write(name, message.as_bytes(policy=message.policy.clone(linesep="\n", max_line_length=0)))
            result.accepted[recipient.outbox_id] = name
            if progress is not None:
                progress.accepted(recipient.outbox_id, name)
        return result

    def _write(self, name: str, data: bytes) -> None:
        temporary = self.directory / "tmp" / f"{name}.{os.getpid()}.{secrets.token_hex(4)}"
        with open(temporary, "wb") as handle:
            handle.write(data)
        try:
            os.link(temporary, self.directory / "new" / name)
        except FileExistsError:
            pass  # another run wrote the same message first: one file all the same
        finally:
            os.unlink(temporary)

    def written(self, rows: Sequence[tuple[int, str]]) -> dict[int, str]:
        """Of these (outbox id, batch key) pairs, those whose message is in the Maildir, with its file name."""
        present = self._present()
        found: dict[int, str] = {}
        for outbox_id, batch_key in rows:
            path = present.get(message_file_name(outbox_id, batch_key))
            if path is not None and _outbox_id_of(path) == outbox_id:
                found[outbox_id] = path.name
        return found


def _outbox_id_of(path: Path) -> int | None:
    """The ``X-Consult-Outbox-Id`` header of a message file (its headers only are read)."""
    try:
        with open(path, "rb") as handle:
            headers = email.parser.BytesHeaderParser(policy=email.policy.default).parse(handle)
    except OSError:
        return None
    value = str(headers.get("X-Consult-Outbox-Id", "")).strip()
    return int(value) if value.isdigit() else None
