"""A partnership answers in a real browser: Debian's headless Chromium driven by Playwright (no browser download),
against ``consult form serve``'s application on a real uvicorn server.

The path a person takes: the invitation in the mailbox -> its link -> every kind of question filled -> an invalid
number refused beside its field -> fixed -> saved for later -> the link opened again -> submitted. Then the
response is in the database, the indicators count it, and the next reminder skips that partnership. Screenshots
of the form, of the error page and of the confirmation go to ``test-output/`` for people to look at.
"""

from __future__ import annotations

import datetime as dt
import email
import mailbox
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from consult import settings as settings_module
from consult.settings import Settings
from db.engine import session_scope
from tests.conftest import EXAMPLES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EVERY_KIND = Path(__file__).parent / "data" / "form" / "every-kind.yaml"
PARTNERSHIP = "ESCP4I-02"

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def form_server(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The form on a real uvicorn server; the settings' public URL points at it, so emails link to it."""
    import uvicorn

    from consult.form.app import create_app

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("CONSULT_PUBLIC_URL", base)
    settings_module.get_settings.cache_clear()
    server = uvicorn.Server(uvicorn.Config(create_app(settings_module.get_settings()), host="127.0.0.1", port=port,
                                           access_log=False, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield base
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def round_2021(engine, settings: Settings) -> int:
    from consult.panel import import_panel
    from consult.rounds import open_round

    with session_scope(engine) as session:
        import_panel(session, EXAMPLES / "panel.csv")
        open_round(session, year=2021, questionnaire_path=EVERY_KIND, token_secret=settings.resolved_token_secret(),
                   closes_on=dt.date.today() + dt.timedelta(days=30))
    return 2021


def link_in_invitation(settings: Settings, base: str, code: str) -> str:
    """The response link of the invitation sent to the partnership's first contact, read from the Maildir."""
    import csv

    with (EXAMPLES / "panel.csv").open(encoding="utf-8", newline="") as handle:
        address = next(row["contact_email"] for row in csv.DictReader(handle) if row["partnership_id"] == code)
    for message in mailbox.Maildir(settings.resolved_mailbox_dir, create=False):
        if address in message["To"]:
            parsed = email.message_from_bytes(message.as_bytes())
            for part in parsed.walk():
                if part.get_content_type() == "text/plain":
                    found = re.search(re.escape(base) + r"/r/[A-Za-z0-9_-]+", part.get_payload(decode=True).decode())
                    if found:
                        return found.group(0)
    raise AssertionError(f"no invitation with a link to {base} for {address}")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_partnership_answers_from_its_invitation_in_a_real_browser(
    engine, settings, round_2021, form_server, test_output_dir
):
    from consult.indicators import compute_report
    from flows.mailing import send_invitations, send_reminders

    send_invitations(2021)
    link = link_in_invitation(settings, form_server, PARTNERSHIP)

    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        console: list[str] = []
        page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=1)
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.goto(link)
        assert page.locator("h1").inner_text() == "Every kind of question"
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "fits a phone's width"
        page.screenshot(path=str(test_output_dir / "form-phone.png"), full_page=False)

        # Every kind, through the labels a person clicks (labels bound to their inputs).
        page.get_by_label("United States of America", exact=True).check()
        page.get_by_label("Japan", exact=True).check()
        page.get_by_label("Knowledge sharing and information exchange").check()
        page.get_by_label("Southern Europe").check()
        page.get_by_label("Cooperation agreements signed with third-country partners this year").fill("twelve")
        page.get_by_label("Share of the budget spent on internationalisation (percent)").fill("12.5")
        page.locator("#field-business_missions_planned").get_by_label("Yes").check()
        page.locator("#field-helpdesk_satisfaction").get_by_label("4", exact=True).check()
        page.get_by_label("A success story").fill("<b>MoU</b> signed with a partner in Japan")
        page.set_viewport_size({"width": 1200, "height": 900})
        page.screenshot(path=str(test_output_dir / "form-filled.png"), full_page=True)
        page.click("#submit")

        # Refused beside the field, and in the summary at the top; everything typed is still there.
        error = page.locator("#field-cooperation_agreements .error")
        assert error.inner_text() == "Enter a whole number (for example 12)."
        assert page.locator("#error-summary a[href='#field-cooperation_agreements']").is_visible()
        assert page.get_by_label("Japan", exact=True).is_checked()
        assert page.get_by_label("A success story").input_value() == "<b>MoU</b> signed with a partner in Japan"
        page.screenshot(path=str(test_output_dir / "form-error.png"), full_page=True)
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT count(*) FROM responses")) == 0

        page.get_by_label("Cooperation agreements signed with third-country partners this year").fill("7")
        page.click("#save")
        assert "saved but not submitted" in page.locator("#notice").inner_text()
        with engine.connect() as connection:
            assert connection.execute(text("SELECT status FROM responses")).scalars().all() == ["partial"]

        # Back later from the same link: the draft is there.
        page.goto("about:blank")
        page.goto(link)
        assert page.get_by_label("Cooperation agreements signed with third-country partners this year").input_value() == "7"
        assert page.get_by_label("Southern Europe").is_checked()
        assert page.locator("#field-helpdesk_satisfaction").get_by_label("4", exact=True).is_checked()
        page.click("#submit")
        assert page.locator("#confirmation").is_visible()
        summary = page.locator("#summary").inner_text()
        assert "Japan, United States of America" in summary and "Southern Europe" in summary
        assert "<b>MoU</b> signed with a partner in Japan" in summary  # the markup shown as text
        page.screenshot(path=str(test_output_dir / "form-confirmation.png"), full_page=True)
        # The one expected console error: the refused submission's 422 status.
        assert [line for line in console if line.startswith("error") and "422" not in line] == [], console
        browser.close()

    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT r.status, r.matched_by, p.code FROM responses r JOIN partnerships p ON p.id = r.partnership_id "
            "ORDER BY r.id")).all()
    assert [tuple(row) for row in rows] == [("partial", "form", PARTNERSHIP), ("accepted", "form", PARTNERSHIP)]
    with session_scope(engine) as session:
        report = compute_report(session, 2021)
    assert report.value("responses") == 1
    assert report.value("cooperation_agreements_sum") == 7
    assert report.value("helpdesk_satisfaction_mean") == 4
    assert report.value("helpdesk_satisfaction", "option=4") == 1

    reminders = send_reminders(2021, force=True)
    assert reminders is not None
    with engine.connect() as connection:
        reminded = set(connection.execute(text(
            "SELECT p.code FROM outbox o JOIN partnerships p ON p.id = o.partnership_id "
            "WHERE o.kind = 'reminder' AND o.state = 'sent'")).scalars())
        consulted = set(connection.execute(text("SELECT p.code FROM round_participants rp JOIN partnerships p "
                                                "ON p.id = rp.partnership_id")).scalars())
    assert PARTNERSHIP not in reminded
    assert reminded == consulted - {PARTNERSHIP} - {
        code for code in consulted if _all_contacts_inactive(engine, code)}


def _all_contacts_inactive(engine, code: str) -> bool:
    with engine.connect() as connection:
        active = connection.scalar(text(
            "SELECT count(*) FROM contacts c JOIN partnerships p ON p.id = c.partnership_id "
            "WHERE p.code = :code AND c.status = 'active'"), {"code": code})
    return active == 0
