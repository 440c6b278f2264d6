"""Any panel: partnership_id, name and contact_email are required; every other column is an attribute of the
partnership, kept as given, snapshotted by each round when it opens, listed and exported with participants;
existing databases move their strand, country and acronym into the attributes (Alembic 0005)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, select, text
from typer.testing import CliRunner

from consult.cli import app
from consult.errors import ConsultError
from consult.panel import import_panel
from consult.rounds import open_round, participants_table
from db.engine import alembic_config, get_engine, session_scope, upgrade
from db.models import Partnership, RoundParticipant

CLUSTERS = (
    "partnership_id,name,sector,country,size,contact_first_name,contact_last_name,contact_email,language\n"
    "C1,Water Cluster, water ,NL,large,Ann,Lee,ann@water.example,en\n"
    "C1,Water Cluster,water,NL,large,Bo,Ng,bo@water.example,en\n"
    "C2,Agri Cluster,agrifood,fr,,Cy,Do,cy@agri.example,fr\n"
)
QUESTIONNAIRE = ("code: clusters\nversion: 1\ntitle: Clusters\nbreakdown_by: [sector]\n"
                 "questions:\n  - {code: satisfied, kind: scale, label: Satisfied, min: 1, max: 5}\n")


@pytest.fixture
def clusters(engine, settings, tmp_path) -> Path:
    path = tmp_path / "clusters.csv"
    path.write_text(CLUSTERS, encoding="utf-8")
    with session_scope(engine) as session:
        report = import_panel(session, path)
    assert report.attributes == ("sector", "country", "size")
    return path


def test_a_panel_without_strand_keeps_every_other_column_as_attributes(engine, clusters):
    """Values are trimmed, a country code upper-cased, an empty cell left out; contact columns are no attributes."""
    with session_scope(engine) as session:
        stored = dict(session.execute(select(Partnership.code, Partnership.attributes)).all())
    assert stored == {"C1": {"sector": "water", "country": "NL", "size": "large"},
                      "C2": {"sector": "agrifood", "country": "FR"}}
    assert list(stored["C1"]) == ["sector", "country", "size"]


def test_a_round_keeps_the_attributes_it_opened_with(engine, settings, clusters, tmp_path):
    """A later panel change (C2 moves sector) shows in the panel, not in the round already open."""
    questionnaire = tmp_path / "q.yaml"
    questionnaire.write_text(QUESTIONNAIRE, encoding="utf-8")
    with session_scope(engine) as session:
        open_round(session, year=2030, questionnaire_path=questionnaire, token_secret=b"s" * 32)
    clusters.write_text(CLUSTERS.replace("agrifood,fr", "water,fr"), encoding="utf-8")
    with session_scope(engine) as session:
        report = import_panel(session, clusters)
        assert report.partnerships_updated == 1
        snapshot = dict(session.execute(
            select(Partnership.code, RoundParticipant.attributes).join(
                RoundParticipant, RoundParticipant.partnership_id == Partnership.id)).all())
        now = session.scalar(select(Partnership.attributes).where(Partnership.code == "C2"))
    assert snapshot["C2"]["sector"] == "agrifood"
    assert now["sector"] == "water"
    with session_scope(engine) as session:
        table = participants_table(session, year=2030, token_secret=b"s" * 32,
                                   url_template="https://s.example/{token}", export_format="csv")
    rows = list(csv.DictReader(io.StringIO(table)))
    assert list(rows[0])[:5] == ["partnership_id", "partnership", "sector", "country", "size"]
    assert [(r["partnership_id"], r["sector"], r["country"], r["size"]) for r in rows] == [
        ("C1", "water", "NL", "large"), ("C1", "water", "NL", "large"), ("C2", "agrifood", "FR", "")]
    with session_scope(engine) as session:
        table = participants_table(session, year=2030, token_secret=b"s" * 32,
                                   url_template="https://s.example/{token}", export_format="limesurvey")
    rows = list(csv.DictReader(io.StringIO(table)))
    assert [(r["attribute_1"], r["attribute_3"], r["attribute_4"], r["attribute_5"]) for r in rows][-1] == (
        "C2", "agrifood", "FR", "")


@pytest.mark.parametrize(
    ("header", "row", "message"),
    [
        ("partnership_id,name,contact_email,country", "P1,A,a@a.example,XX",
         "row 2: country 'XX' is not an ISO 3166-1 alpha-2 code"),
        ("partnership_id,name,contact_email,Sector Name", "P1,A,a@a.example,x",
         "column 'Sector Name' is not an attribute name"),
        ("partnership_id,name,contact_email,sector", 'P1,A,a@a.example,"x\ny"',
         "row 2: sector contains a line break"),
        ("partnership_id,name,contact_email", "P1,A,a@a.example,extra", "row 2: more cells than the header"),
        ("partnership_id,name,sector", "P1,A,x", "missing column(s) contact_email"),
    ],
)
def test_a_bad_panel_is_refused_in_one_line_and_nothing_is_stored(engine, settings, tmp_path, header, row, message):
    path = tmp_path / "panel.csv"
    path.write_text(f"{header}\n{row}\n", encoding="utf-8")
    with pytest.raises(ConsultError) as raised, session_scope(engine) as session:
        import_panel(session, path)
    assert str(raised.value).startswith(str(path)) and message in str(raised.value)
    assert "\n" not in str(raised.value)
    with session_scope(engine) as session:
        assert session.scalar(select(Partnership.id)) is None


def test_consult_panel_list_shows_every_attribute(engine, settings, clusters, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["panel", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["partnership_id", "name", "contacts", "sector", "country", "size"]
    assert lines[1].split() == ["C1", "Water", "Cluster", "2", "water", "NL", "large"]
    out = tmp_path / "panel-out.csv"
    assert runner.invoke(app, ["panel", "list", "--out", str(out)]).exit_code == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert rows[1] == {"partnership_id": "C2", "name": "Agri Cluster", "contacts": "1", "sector": "agrifood",
                       "country": "FR", "size": ""}


def test_migration_0005_moves_strand_country_and_acronym_into_attributes(db_url):
    """A database at 0004 with a partnership and a round keeps them: the partnership's attributes and the
    round's snapshot (with the strand it had when the round opened); downgrading brings the columns back."""
    config = alembic_config(db_url)
    command.downgrade(config, "0004")
    engine = create_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO partnerships (id, code, name, acronym, strand, country, language, active, created_at, "
            "updated_at) VALUES (1, 'P1', 'Alpha', 'ALP', 2, 'BE', 'en', true, '2019-01-01', '2019-01-01'), "
            "(2, 'P2', 'Beta', NULL, 1, 'FR', 'en', true, '2019-01-01', '2019-01-01')"))
        connection.execute(text(
            "INSERT INTO questionnaire_versions (id, code, version, title, sha256, definition, created_at) "
            "VALUES (1, 'q', 1, 'Q', 'x', '{}', '2019-01-01')"))
        connection.execute(text(
            "INSERT INTO rounds (id, year, questionnaire_version_id, status, closes_on, reminder_days, opened_at) "
            "VALUES (1, 2019, 1, 'open', '2019-06-30', '[]', '2019-01-01')"))
        connection.execute(text(
            "INSERT INTO round_participants (id, round_id, partnership_id, token_hash, strand, created_at) "
            "VALUES (1, 1, 1, 'h1', 1, '2019-01-01'), (2, 1, 2, 'h2', 1, '2019-01-01')"))
    engine.dispose()
    upgrade(db_url)
    with session_scope(get_engine(db_url)) as session:
        partnerships = dict(session.execute(select(Partnership.code, Partnership.attributes)).all())
        snapshot = dict(session.execute(select(RoundParticipant.partnership_id, RoundParticipant.attributes)).all())
    assert partnerships == {"P1": {"acronym": "ALP", "strand": "2", "country": "BE"},
                            "P2": {"strand": "1", "country": "FR"}}
    assert list(partnerships["P1"]) == ["acronym", "strand", "country"]
    assert snapshot == {1: {"acronym": "ALP", "strand": "1", "country": "BE"}, 2: {"strand": "1", "country": "FR"}}
    get_engine(db_url).dispose()
    command.downgrade(config, "0004")
    engine = create_engine(db_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT code, acronym, strand, country FROM partnerships ORDER BY code")).all()
        strands = connection.execute(text("SELECT id, strand FROM round_participants ORDER BY id")).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [("P1", "ALP", 2, "BE"), ("P2", None, 1, "FR")]
    assert [tuple(row) for row in strands] == [(1, 1), (2, 1)]
    upgrade(db_url)


def test_a_round_takes_a_new_breakdown_or_wording_but_not_changed_questions(engine, settings, clusters, tmp_path):
    """breakdown_by, respondent and indicators only change how the summary is computed and worded: the stored
    version takes them (a database from before them keeps working); a changed question needs a new version."""
    from consult.rounds import round_questionnaire
    from db.models import Round

    plain = QUESTIONNAIRE.replace("breakdown_by: [sector]\n", "")
    path = tmp_path / "q.yaml"
    path.write_text(plain, encoding="utf-8")
    with session_scope(engine) as session:
        open_round(session, year=2030, questionnaire_path=path, token_secret=b"s" * 32)
    path.write_text(QUESTIONNAIRE + "indicators: {labels: {satisfied_mean: Mean satisfaction}}\n", encoding="utf-8")
    with session_scope(engine) as session:
        open_round(session, year=2030, questionnaire_path=path, token_secret=b"s" * 32)
        stored = round_questionnaire(session.scalars(select(Round)).one())
    assert stored.breakdown_by == ["sector"] and stored.indicators.labels == {"satisfied_mean": "Mean satisfaction"}
    path.write_text(QUESTIONNAIRE.replace("max: 5", "max: 7"), encoding="utf-8")
    with pytest.raises(ConsultError, match="already stored with other content"), session_scope(engine) as session:
        open_round(session, year=2030, questionnaire_path=path, token_secret=b"s" * 32)
