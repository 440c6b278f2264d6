"""The panel import and the round lifecycle: idempotent, strict about bad rows, tokens never stored."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from pathlib import Path

import pytest
from sqlalchemy import func, select

from consult.errors import ConsultError
from consult.panel import import_panel
from consult.rounds import close_round, open_round, participants_table
from consult.tokens import derive_token
from db.engine import session_scope
from db.models import Contact, Partnership, QuestionnaireVersion, Round, RoundParticipant
from tests.conftest import EXAMPLES

PANEL_HEADER = "partnership_id,name,acronym,strand,country,contact_first_name,contact_last_name,contact_email,language\n"


def _example_panel_rows() -> list[dict[str, str]]:
    with open(EXAMPLES / "panel.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _count(session, model) -> int:  # type: ignore[no-untyped-def]
    return session.scalar(select(func.count()).select_from(model))


def test_panel_import_stores_every_partnership_and_contact(engine, panel):
    """The reference panel has 23 partnerships, and one contact per row of the file."""
    rows = _example_panel_rows()
    with session_scope(engine) as session:
        assert _count(session, Partnership) == len({row["partnership_id"] for row in rows}) == 23
        assert _count(session, Contact) == len(rows)
        attributes = dict(session.execute(select(Partnership.code, Partnership.attributes)).all())
    assert {code: value["strand"] for code, value in attributes.items()} == {
        row["partnership_id"]: row["strand"] for row in rows}
    assert {code: list(value)[:3] for code, value in attributes.items() if "acronym" in value} == {
        row["partnership_id"]: ["acronym", "strand", "country"] for row in rows if row["acronym"]}


def test_importing_the_same_panel_twice_changes_nothing(engine, panel):
    """A second import adds no partnership and no contact."""
    with session_scope(engine) as session:
        report = import_panel(session, EXAMPLES / "panel.csv")
        assert (report.partnerships_added, report.partnerships_updated, report.contacts_added) == (0, 0, 0)
        assert _count(session, Partnership) == 23


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("P1,Alpha,,1,FR,Ann,Lee,not-an-email,en", "row 2: invalid email address 'not-an-email'"),
        ("P1,Alpha,,1,XX,Ann,Lee,ann@a.example,en", "row 2: country 'XX' is not an ISO 3166-1 alpha-2 code"),
        ('P1,"Alpha\r\nBcc: x@evil.example",,1,FR,Ann,Lee,ann@a.example,en', "row 2: name contains a line break"),
    ],
)
def test_a_bad_panel_row_is_refused_with_its_row_and_nothing_is_stored(engine, settings, tmp_path, row, message):
    """An invalid row stops the import with one line naming the file and the row; the panel stays empty."""
    path = tmp_path / "panel.csv"
    path.write_text(PANEL_HEADER + "P0,Zero,,1,BE,Bo,Ng,bo@zero.example,en\n" + row + "\n", encoding="utf-8")
    with pytest.raises(ConsultError) as raised, session_scope(engine) as session:
        import_panel(session, path)
    assert str(raised.value).startswith(str(path))
    assert message.replace("row 2", "row 3") in str(raised.value)
    with session_scope(engine) as session:
        assert _count(session, Partnership) == 0


def test_a_panel_without_required_columns_names_them(engine, settings, tmp_path):
    path = tmp_path / "panel.csv"
    path.write_text("partnership_id,name\nP1,Alpha\n", encoding="utf-8")
    with pytest.raises(ConsultError, match="missing column.*contact_email"), session_scope(engine) as session:
            import_panel(session, path)


def test_opening_a_round_enrols_every_partnership_with_a_hashed_token(engine, settings, round_2019):
    """Each partnership gets one token; the database holds sha256(token), never the token itself."""
    secret = settings.resolved_token_secret()
    with session_scope(engine) as session:
        participants = session.execute(
            select(Partnership.code, RoundParticipant.token_hash).join(
                RoundParticipant, RoundParticipant.partnership_id == Partnership.id
            )
        ).all()
    assert len(participants) == 23
    for code, token_hash in participants:
        token = derive_token(secret, 2019, code)
        assert len(token) == 32 and token.isascii() and token.isalnum()  # base 62: about 190 bits
        assert token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token_hash != token
    assert len({token_hash for _, token_hash in participants}) == 23


def test_opening_a_round_twice_creates_nothing_new(engine, settings, round_2019):
    with session_scope(engine) as session:
        info = open_round(
            session,
            year=2019,
            questionnaire_path=EXAMPLES / "questionnaire-2019.yaml",
            token_secret=settings.resolved_token_secret(),
        )
        assert not info.created
        assert _count(session, Round) == 1
        assert _count(session, RoundParticipant) == 23
        assert _count(session, QuestionnaireVersion) == 1


def test_a_round_cannot_switch_questionnaire_once_open(engine, settings, round_2019):
    with pytest.raises(ConsultError, match="round 2019 is already open with questionnaire escp4i v2019"), session_scope(engine) as session:
            open_round(
                session,
                year=2019,
                questionnaire_path=EXAMPLES / "questionnaire-2020.yaml",
                token_secret=settings.resolved_token_secret(),
            )


def test_closing_an_unknown_round_says_how_to_open_it(engine, settings, panel):
    with pytest.raises(ConsultError, match=r"round 2030 does not exist: open it with `consult round open 2030"), session_scope(engine) as session:
            close_round(session, 2030)


def test_closing_a_round_records_when(engine, settings, round_2019):
    with session_scope(engine) as session:
        round_ = close_round(session, 2019)
        assert round_.status == "closed"
        assert round_.closed_at is not None
    assert round_.closes_on == dt.date(2019, 6, 30)


def test_participants_export_in_limesurvey_layout_carries_each_contacts_token(engine, settings, round_2019):
    """LimeSurvey's participant import: firstname, lastname, email, token, then attributes; one row per contact."""
    with session_scope(engine) as session:
        table = participants_table(session, year=2019, token_secret=settings.resolved_token_secret(),
                                   url_template=settings.resolved_response_url_template, export_format="limesurvey")
    rows = list(csv.DictReader(io.StringIO(table)))
    assert list(rows[0])[:4] == ["firstname", "lastname", "email", "token"]
    expected = {row["contact_email"]: row["partnership_id"] for row in _example_panel_rows()}
    assert {row["email"] for row in rows} == set(expected)
    secret = settings.resolved_token_secret()
    for row in rows:
        assert row["token"] == derive_token(secret, 2019, expected[row["email"]])
        assert row["attribute_1"] == expected[row["email"]]


def test_participants_export_as_csv_gives_the_response_link(engine, settings, round_2019):
    with session_scope(engine) as session:
        table = participants_table(session, year=2019, token_secret=settings.resolved_token_secret(),
                                   url_template="https://survey.example/r/{token}?lang=en", export_format="csv")
    rows = list(csv.DictReader(io.StringIO(table)))
    assert len(rows) == len(_example_panel_rows())
    assert all(row["link"] == f"https://survey.example/r/{row['token']}?lang=en" for row in rows)


def test_participants_export_neutralises_spreadsheet_formulas(engine, settings, tmp_path):
    """A partnership named like a formula is exported with a leading apostrophe, so Excel shows it as text."""
    path = tmp_path / "panel.csv"
    path.write_text(PANEL_HEADER + '"P1","=HYPERLINK(""http://evil.example"",""x"")",,1,FR,@Ann,Lee,ann@a.example,en\n')
    with session_scope(engine) as session:
        import_panel(session, path)
    q = EXAMPLES / "questionnaire-2019.yaml"
    with session_scope(engine) as session:
        open_round(session, year=2019, questionnaire_path=q, token_secret=b"s")
        table = participants_table(session, year=2019, token_secret=b"s", url_template="{token}", export_format="csv")
    row = next(csv.DictReader(io.StringIO(table)))
    assert row["partnership"] == "'=HYPERLINK(\"http://evil.example\",\"x\")"
    assert row["first_name"] == "'@Ann"


def test_opening_a_round_on_an_empty_panel_is_refused(engine, settings):
    with pytest.raises(ConsultError, match="the panel is empty: import it first"), session_scope(engine) as session:
            open_round(session, year=2019, questionnaire_path=EXAMPLES / "questionnaire-2019.yaml", token_secret=b"s")


def test_a_missing_questionnaire_file_is_named(engine, settings, panel, tmp_path: Path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConsultError, match=f"{missing}: questionnaire file not found"), session_scope(engine) as session:
            open_round(session, year=2019, questionnaire_path=missing, token_secret=b"s")
