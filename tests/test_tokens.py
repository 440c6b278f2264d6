"""Response tokens and their secret: unguessable, letters and digits only, and never served with another secret.

Expected tokens are computed here (HMAC-SHA256 of "year:code", its 32 lowest base-62 digits) with the standard
library, not with consult.tokens."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import io
import os
import stat
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import select, update

from consult.errors import ConsultError
from consult.panel import import_panel
from consult.rounds import open_round, participants_table
from consult.settings import Settings, load_or_create_secret
from db.engine import session_scope
from db.models import OutboxMessage, Partnership, Round, RoundParticipant
from tests.conftest import BASE62, EXAMPLES, REPO_ROOT, TEST_TOKEN_SECRET, alnum_token
from tests.warm_consult import run_consult

SECRET = TEST_TOKEN_SECRET.encode()


def expected_token(year: int, code: str, secret: bytes = SECRET) -> str:
    return alnum_token(hmac.new(secret, f"{year}:{code}".encode(), hashlib.sha256).digest())


# -- the secret ---------------------------------------------------------------------------------------------------

def test_the_secret_file_is_created_private_with_32_random_bytes(tmp_path):
    """The first use creates data/token-secret readable by its owner only, holding 32 random bytes (64 hex
    digits); later uses read the same secret."""
    path = tmp_path / "data" / "token-secret"
    first = load_or_create_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 64 and bytes.fromhex(first.decode())
    assert load_or_create_secret(path) == first
    assert load_or_create_secret(tmp_path / "other" / "token-secret") != first
    assert [p.name for p in path.parent.iterdir()] == ["token-secret"]  # no temporary file left behind


@pytest.mark.slow
def test_concurrent_first_runs_agree_on_one_secret(tmp_path):
    """Six processes creating the secret at the same moment all end up with the same one, 8 times over.

    One interpreter imports consult.settings once and forks the six processes of each trial (48 separate
    processes in all, without 48 imports): each waits for the go file, then creates or reads the secret."""
    script = textwrap.dedent("""
        import os, sys, time
        from pathlib import Path
        from consult.settings import load_or_create_secret
        path, go = Path(sys.argv[1]), sys.argv[2]
        ready_read, ready_write = os.pipe()
        secrets_read, secrets_write = os.pipe()
        for _ in range(6):
            if os.fork() == 0:
                os.close(ready_read)
                os.close(secrets_read)
                os.write(ready_write, b"r")
                while not os.path.exists(go):  # all six go at once, once all six are ready
                    time.sleep(0.0005)
                os.write(secrets_write, load_or_create_secret(path) + b"\\n")
                os._exit(0)
        os.close(ready_write)
        os.close(secrets_write)
        ready = b""
        while len(ready) < 6:
            ready += os.read(ready_read, 6 - len(ready))
        print("ready", flush=True)
        statuses = [os.wait()[1] for _ in range(6)]
        with os.fdopen(secrets_read, "rb") as answers:
            print(answers.read().decode(), end="")
        print("exit statuses", statuses)
    """)
    for trial in range(8):
        path = tmp_path / f"trial-{trial}" / "token-secret"
        go = tmp_path / f"go-{trial}"
        run = subprocess.Popen([sys.executable, "-c", script, str(path), str(go)], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, text=True)
        assert run.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
        go.touch()
        lines = run.communicate(timeout=60)[0].splitlines()
        assert run.returncode == 0 and lines[-1] == "exit statuses [0, 0, 0, 0, 0, 0]", lines
        secrets_seen = lines[:-1]
        assert len(secrets_seen) == 6 and len(set(secrets_seen)) == 1 and len(secrets_seen[0]) == 64
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(("environment", "file_content", "message"), [
    ({"CONSULT_TOKEN_SECRET": ""}, None, "CONSULT_TOKEN_SECRET: the token secret is empty"),
    ({"CONSULT_TOKEN_SECRET": "=a"}, None, "CONSULT_TOKEN_SECRET: the token secret is 2 bytes; at least 32"),
    ({}, b"", "token-secret: the token secret is empty"),
    ({}, b"0123456789abcdef", "token-secret: the token secret is 16 bytes; at least 32"),
])
@pytest.mark.slow
def test_an_empty_or_short_secret_is_refused_with_one_line(tmp_path, monkeypatch, environment, file_content, message):
    """An empty (what a crash between creating and writing the file used to leave) or short secret would make
    tokens computable: the command stops with one line and exit status 1."""
    data = tmp_path / "data"
    data.mkdir()
    if file_content is not None:
        (data / "token-secret").write_bytes(file_content)
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONSULT_")}
    env |= {"CONSULT_DATA_DIR": str(data), "CONSULT_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"} | environment
    upgraded = run_consult(["db", "upgrade"], cwd=tmp_path, env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    done = run_consult(["round", "participants", "2019"], cwd=tmp_path, env=env)
    assert done.returncode == 1
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    with pytest.raises(ConsultError, match=message.split(": ", 1)[1]):
        monkeypatch.chdir(tmp_path)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        if "CONSULT_TOKEN_SECRET" not in environment:
            monkeypatch.delenv("CONSULT_TOKEN_SECRET", raising=False)
        Settings().resolved_token_secret()


@pytest.mark.slow
def test_a_round_refuses_a_secret_other_than_the_one_it_was_opened_with(engine, settings, round_2019, monkeypatch):
    """The round records its secret's fingerprint (not the secret); exporting tokens, opening it again or sending
    its invitations with another secret stops with one line, and no invitation leaves."""
    from flows.mailing import send_invitations

    with session_scope(engine) as session:
        recorded = session.scalar(select(Round.token_fingerprint).where(Round.year == 2019))
    assert recorded == hmac.new(SECRET, b"consult token-secret fingerprint v1", hashlib.sha256).hexdigest()
    assert TEST_TOKEN_SECRET not in recorded

    other = ("another-secret-" + "1" * 40).encode()
    with pytest.raises(ConsultError, match="round 2019 was opened with another token secret"), \
            session_scope(engine) as session:
        participants_table(session, year=2019, token_secret=other, url_template="{token}", export_format="csv")
    with pytest.raises(ConsultError, match="round 2019 was opened with another token secret"), \
            session_scope(engine) as session:
        open_round(session, year=2019, questionnaire_path=EXAMPLES / "questionnaire-2019.yaml", token_secret=other)

    monkeypatch.setenv("CONSULT_TOKEN_SECRET", other.decode())
    from consult import settings as settings_module
    settings_module.get_settings.cache_clear()
    with pytest.raises(Exception, match="round 2019 was opened with another token secret"):
        send_invitations(2019)
    assert not settings.resolved_mailbox_dir.exists() or not any((settings.resolved_mailbox_dir / "new").iterdir())
    with session_scope(engine) as session:
        states = set(session.scalars(select(OutboxMessage.state)))
    assert states <= {"pending"}


# -- the tokens ---------------------------------------------------------------------------------------------------

def _codes_covering_every_first_character(year: int) -> list[str]:
    """Partnership codes whose tokens start with each of the 62 letters and digits."""
    by_first: dict[str, str] = {}
    number = 0
    while len(by_first) < len(BASE62):
        code = f"P{number:04d}"
        by_first.setdefault(expected_token(year, code)[0], code)
        number += 1
    return sorted(by_first.values())


def test_limesurvey_participants_round_trip_for_tokens_of_every_first_character(engine, settings, tmp_path):
    """Tokens of all 62 possible first characters go out in the LimeSurvey participants file exactly as derived
    (no formula guard needed, so none added), and a LimeSurvey response export carrying them back matches every
    partnership by token."""
    from consult.ingest import pipeline

    codes = _codes_covering_every_first_character(2019)
    panel = tmp_path / "panel.csv"
    with panel.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["partnership_id", "name", "strand", "country", "contact_first_name", "contact_last_name",
                         "contact_email"])
        for code in codes:
            writer.writerow([code, f"Partnership {code}", "1", "BE", "Ann", "Lee", f"{code.lower()}@x.example"])
    with session_scope(engine) as session:
        import_panel(session, panel)
        open_round(session, year=2019, questionnaire_path=EXAMPLES / "questionnaire-2019.yaml",
                   token_secret=settings.resolved_token_secret(), closes_on=dt.date(2019, 6, 30),
                   today=dt.date(2019, 2, 1))
        exported = participants_table(session, year=2019, token_secret=settings.resolved_token_secret(),
                                      url_template="{token}", export_format="limesurvey")
    rows = list(csv.DictReader(io.StringIO(exported)))
    tokens = {row["attribute_1"]: row["token"] for row in rows}
    assert tokens == {code: expected_token(2019, code) for code in codes}
    assert {token[0] for token in tokens.values()} == set(BASE62)
    assert all(row["email"] == f"{row['attribute_1'].lower()}@x.example" for row in rows)

    answers = tmp_path / "results-survey123.csv"
    with answers.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "submitdate", "token", "markets[US]", "sme_involvement[business_contacts]",
                         "cooperation_agreements", "business_missions_planned", "sme_members", "success_story"])
        for number, row in enumerate(rows, start=1):
            writer.writerow([number, "2019-04-01 10:00:00", row["token"], "Y", "Y", "1", "Y", "5", ""])
    files = pipeline.read_files(settings, 2019, [str(answers)])
    summary = pipeline.store_files(settings, 2019, pipeline.validate_files(
        settings, 2019, pipeline.match_files(settings, 2019, files)))
    assert (summary.files[0].accepted, summary.files[0].quarantined) == (len(codes), 0)


@pytest.mark.slow
def test_tokens_already_mailed_for_a_round_opened_before_still_match(engine, settings, round_2019, tmp_path):
    """A round opened before the letters-and-digits scheme (token_scheme b64url, as migration 0006 marks it) keeps
    its URL-safe base64 tokens: its invitations carry them and its answers match by them."""
    import base64
    import mailbox

    from consult.ingest import pipeline
    from flows.mailing import send_invitations

    def old_token(code: str) -> str:
        digest = hmac.new(SECRET, f"2019:{code}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    with session_scope(engine) as session:  # the round as a version before 0006 left it
        session.execute(update(Round).values(token_scheme="b64url", token_fingerprint=None))
        for participant, code in session.execute(
                select(RoundParticipant, Partnership.code).join(Partnership)).all():
            participant.token_hash = hashlib.sha256(old_token(code).encode()).hexdigest()
    send_invitations(2019)
    texts = [m.as_string() for m in mailbox.Maildir(settings.resolved_mailbox_dir, create=False)]
    assert any(old_token("ESCP4I-01") in text for text in texts)
    answers = tmp_path / "results.csv"
    answers.write_text(
        "id,submitdate,token,markets[US],sme_involvement[business_contacts],cooperation_agreements,"
        f"business_missions_planned,sme_members,success_story\n1,2019-04-01 10:00:00,{old_token('ESCP4I-01')},"
        "Y,Y,1,Y,5,\n", encoding="utf-8")
    files = pipeline.read_files(settings, 2019, [str(answers)])
    summary = pipeline.store_files(settings, 2019, pipeline.validate_files(
        settings, 2019, pipeline.match_files(settings, 2019, files)))
    assert summary.files[0].accepted == 1
