"""Mail: invitations, reminders and thank-yous that reach each partnership exactly once.

- ``message``: what a mailer is handed (one rendered batch with per-recipient substitutions) and hands back;
- ``render``: templates/email/*.j2 rendered once per batch, placeholders for per-recipient values;
- ``mailer``: the ``Mailer`` interface and the backend chosen by the settings (``mailbox_mailer``,
  ``smtp_mailer``, ``sendgrid_mailer``);
- ``outbox``: planning, atomic claiming, recording and reconciliation of one row per message;
- ``sending``: one batch end to end (claim -> send -> record), called by the Prefect tasks in tasks/mail.py.
"""
