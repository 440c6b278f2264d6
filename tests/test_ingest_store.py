"""Ingesting response files into a round: every row accounted for, every bad value explained.

Run on SQLite and PostgreSQL (``db_url``). Expected outcomes are computed from the files the tests write, or from
the reference CSV through tests/factories.py (standard library only), never from the code under test."""

from __future__ import annotations

import datetime as dt
import hashlib
import zlib
from pathlib import Path

import pytest
from sqlalchemy import func, select

from consult.errors import ConsultError
from consult.ingest import pipeline
from consult.ingest.store import IngestSummary, list_quarantine, raw_cells, reject_quarantined
from consult.questionnaire import load_questionnaire
from consult.rounds import open_round
from consult.tokens import derive_token
from db.engine import session_scope
from db.models import IngestedFile, Partnership, QuarantinedRow, Response
from tests.factories import EXAMPLES, accepted_reference_rows, reference_rows, typed_answers

HEADER = ("partnership_id,submitted_at,markets,sme_involvement,cooperation_agreements,business_missions_planned,"
          "sme_members,success_story")
GOOD = "2019-04-01T10:00:00,US;JP,business_contacts,2,yes,20,"


def ingest(settings, year: int, *paths: Path | str) -> IngestSummary:
    """The ingest stages as the flow composes them, without Prefect."""
    files = pipeline.read_files(settings, year, [str(path) for path in paths])
    return pipeline.store_files(settings, year, pipeline.validate_files(settings, year, pipeline.match_files(settings, year, files)))


def write_csv(tmp_path: Path, name: str, *rows: str, header: str = HEADER) -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def decrypt_kept(settings, record: IngestedFile) -> bytes:
    """The kept bytes decrypted as consult/ingest/keep.py documents: AES-256-GCM, key HMAC-SHA256(secret,
    "consult kept-file key v1"), stored as b"CKF1" + 12-byte nonce + ciphertext, the SHA-256 as associated data."""
    import hmac

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    assert record.token_storage == "encrypted" and record.content[:4] == b"CKF1"
    key = hmac.new(settings.resolved_token_secret(), b"consult kept-file key v1", hashlib.sha256).digest()
    return AESGCM(key).decrypt(record.content[4:16], record.content[16:], record.sha256.encode())


def responses_by_code(engine, status: str | None = None) -> dict[str, list[Response]]:
    with session_scope(engine) as session:
        query = select(Response, Partnership.code).join(Partnership, Partnership.id == Response.partnership_id)
        if status:
            query = query.where(Response.status == status)
        found: dict[str, list[Response]] = {}
        for response, code in session.execute(query.order_by(Response.id)).all():
            found.setdefault(code, []).append(response)
        return found


def quarantined(engine) -> list[QuarantinedRow]:
    with session_scope(engine) as session:
        return list(session.scalars(select(QuarantinedRow).order_by(QuarantinedRow.row_number)))


def reasons_of(row: QuarantinedRow) -> list[tuple[str, str]]:
    return [(reason["rule"], reason["value"]) for reason in row.reasons]


def test_reference_2019_file_gives_19_accepted_1_superseded_1_quarantined_1_partial(engine, settings, round_2019):
    """The reference export ends with the README's figures, and each accepted answer is the partnership's latest
    complete submission, typed as the indicators read it."""
    summary = ingest(settings, 2019, EXAMPLES / "responses-2019.csv")
    counts = summary.files[0]
    assert (counts.rows, counts.accepted, counts.superseded, counts.quarantined, counts.partial) == (22, 19, 1, 1, 1)

    questionnaire = load_questionnaire(EXAMPLES / "questionnaire-2019.yaml")
    expected = {code: typed_answers(row, questionnaire) for code, row in accepted_reference_rows(2019).items()}
    accepted = responses_by_code(engine, "accepted")
    assert {code: rows[0].answers for code, rows in accepted.items()} == expected
    assert list(responses_by_code(engine, "superseded")) == ["ESCP4I-03"]
    assert list(responses_by_code(engine, "partial")) == ["ESCP4I-12"]
    [unknown] = quarantined(engine)
    assert reasons_of(unknown) == [("match", "ESCP4I-99")]
    assert unknown.raw["partnership_id"] == "ESCP4I-99" and unknown.raw["markets"] == "US;CN"


def test_ingested_file_is_recorded_with_its_identity_and_raw_cells_are_kept(engine, settings, round_2019):
    """The file's sha256, name, size, row count, layout, encoding and delimiter are stored, and the file itself,
    byte for byte: each response's cells come back exactly as exported."""
    path = EXAMPLES / "responses-2019.csv"
    ingest(settings, 2019, path)
    with session_scope(engine) as session:
        [record] = session.scalars(select(IngestedFile)).all()
        stored = {r.row_number: raw_cells(session, r) for r in session.scalars(select(Response))}
        kept = zlib.decompress(decrypt_kept(settings, record))
    assert kept == path.read_bytes()
    assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (record.name, record.size_bytes, record.row_count) == ("responses-2019.csv", path.stat().st_size, 22)
    assert (record.layout, record.encoding, record.delimiter) == ("plain", "utf-8", ",")
    assert stored[9] == reference_rows(2019)[7]  # ESCP4I-09, with its two-line success story


def test_ingesting_the_same_file_again_changes_nothing(engine, settings, round_2019, tmp_path):
    """The same bytes, even under another name, are recognised by their sha256 and skipped."""
    ingest(settings, 2019, EXAMPLES / "responses-2019.csv")
    copy = tmp_path / "again.csv"
    copy.write_bytes((EXAMPLES / "responses-2019.csv").read_bytes())
    summary = ingest(settings, 2019, copy)
    assert summary.files[0].skipped_as_duplicate_file is True
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Response)) == 21
        assert session.scalar(select(func.count()).select_from(IngestedFile)) == 1
        assert session.scalar(select(func.count()).select_from(QuarantinedRow)) == 1


def test_later_submission_in_a_later_file_supersedes_the_earlier_one(engine, settings, round_2019, tmp_path):
    """A partnership answering again later: the new answer is accepted, the old one kept as superseded."""
    ingest(settings, 2019, write_csv(tmp_path, "first.csv", "ESCP4I-05,2019-03-06T15:48:00,CA,other,1,yes,64,"))
    summary = ingest(settings, 2019, write_csv(tmp_path, "second.csv", "ESCP4I-05,2019-04-02T09:00:00,US,other,3,no,70,"))
    assert summary.files[0].replaced_earlier == 1
    rows = responses_by_code(engine)["ESCP4I-05"]
    assert [(r.status, r.answers["cooperation_agreements"]) for r in rows] == [("superseded", 1), ("accepted", 3)]


def test_older_submission_in_a_later_file_does_not_replace_the_latest(engine, settings, round_2019, tmp_path):
    """Files may arrive out of order: the submission with the latest date wins, not the latest file."""
    ingest(settings, 2019, write_csv(tmp_path, "new.csv", "ESCP4I-05,2019-04-02T09:00:00,US,other,3,no,70,"))
    ingest(settings, 2019, write_csv(tmp_path, "old.csv", "ESCP4I-05,2019-03-06T15:48:00,CA,other,1,yes,64,"))
    rows = responses_by_code(engine)["ESCP4I-05"]
    assert [(r.status, r.answers["cooperation_agreements"]) for r in rows] == [("accepted", 3), ("superseded", 1)]


@pytest.mark.parametrize(
    ("value", "rules"),
    [("-3", [("range", "-3")]), ("abc", [("integer", "abc")]), ("1e9", [("integer", "1e9"), ("range", "1e9")])],
)
@pytest.mark.slow
def test_bad_integer_is_quarantined_with_the_expectation_and_the_value(engine, settings, round_2019, tmp_path, value, rules):
    """-3 (below the minimum), abc (not a number), 1e9 (not a whole number as written, and out of range)."""
    path = write_csv(tmp_path, "bad.csv", f"ESCP4I-01,2019-04-01T10:00:00,US,other,{value},yes,20,", f"ESCP4I-02,{GOOD}")
    summary = ingest(settings, 2019, path)
    assert (summary.files[0].accepted, summary.files[0].quarantined) == (1, 1)
    [row] = quarantined(engine)
    assert row.row_number == 2
    assert reasons_of(row) == rules
    assert all(reason["column"] == "cooperation_agreements" for reason in row.reasons)
    assert {reason["expectation"] for reason in row.reasons} <= {
        "expect_column_values_to_be_in_set", "expect_column_values_to_be_between"}


@pytest.mark.slow
def test_unknown_option_code_is_quarantined_naming_the_code(engine, settings, round_2019, tmp_path):
    """A market that is no ISO 3166 code and an SME option that does not exist are both reported."""
    path = write_csv(tmp_path, "options.csv", "ESCP4I-01,2019-04-01T10:00:00,US;XX,business_contacts;lobbying,2,yes,20,")
    ingest(settings, 2019, path)
    [row] = quarantined(engine)
    messages = [reason["message"] for reason in row.reasons]
    assert messages == ["markets: unknown option(s) 'XX'", "sme_involvement: unknown option(s) 'lobbying'"]


def test_lower_case_market_code_is_upper_cased_and_flagged(engine, settings, round_2019, tmp_path):
    """'us;jp' is accepted as US and JP, and the response carries a warning saying so."""
    ingest(settings, 2019, write_csv(tmp_path, "lower.csv", "ESCP4I-01,2019-04-01T10:00:00,us;Jp,other,2,yes,20,"))
    [response] = responses_by_code(engine, "accepted")["ESCP4I-01"]
    assert response.answers["markets"] == ["US", "JP"]
    assert [(w["rule"], w["value"]) for w in response.warnings] == [("upper_cased", "us;Jp")]


def test_free_text_with_html_and_formula_is_stored_unchanged_and_its_line_breaks_as_lf(engine, settings, round_2019,
                                                                                       tmp_path):
    """Free text is data, not markup: HTML and a spreadsheet formula are stored exactly as written; its CR/LF
    becomes LF in the answer (one kind of line break for whatever renders it), the raw cell keeps it as exported."""
    story = '=HYPERLINK("http://evil.example","x") <script>alert(1)</script>\r\nsecond line'
    quoted = '"' + story.replace('"', '""') + '"'
    path = tmp_path / "story.csv"
    path.write_bytes((HEADER + "\r\n" + f"ESCP4I-01,2019-04-01T10:00:00,US,other,2,yes,20,{quoted}\r\n").encode())
    ingest(settings, 2019, path)
    [response] = responses_by_code(engine, "accepted")["ESCP4I-01"]
    assert response.answers["success_story"] == story.replace("\r\n", "\n")
    with session_scope(engine) as session:
        assert raw_cells(session, response)["success_story"] == story


def test_unknown_token_and_token_of_another_round_are_quarantined(engine, settings, round_2019, tmp_path):
    """A token nobody was given, and a valid token of round 2020 used in 2019, are both refused."""
    with session_scope(engine) as session:
        open_round(session, year=2020, questionnaire_path=EXAMPLES / "questionnaire-2020.yaml",
                   token_secret=settings.resolved_token_secret(), closes_on=dt.date(2020, 6, 30))
    secret = settings.resolved_token_secret()
    header = "token," + HEADER.split(",", 1)[1]
    path = write_csv(
        tmp_path, "tokens.csv",
        f"{derive_token(secret, 2019, 'ESCP4I-01')},{GOOD}",
        f"not-a-real-token-at-all,{GOOD}",
        f"{derive_token(secret, 2020, 'ESCP4I-02')},{GOOD}",
        header=header,
    )
    summary = ingest(settings, 2019, path)
    assert (summary.files[0].accepted, summary.files[0].quarantined) == (1, 2)
    assert [r.matched_by for r in responses_by_code(engine)["ESCP4I-01"]] == ["token"]
    messages = [row.reasons[0]["message"] for row in quarantined(engine)]
    assert messages == ["unknown token", "token belongs to round 2020, not 2019"]
    # The token itself is not repeated in the reasons shown to analysts.
    assert "not-a-real-token-at-all" not in str([row.reasons for row in quarantined(engine)])


def test_limesurvey_export_matches_by_token_and_keeps_incomplete_answers_partial(engine, settings, round_2019, tmp_path):
    """A LimeSurvey export: options as Y columns, tokens matched through their hash, empty submitdate = partial."""
    secret = settings.resolved_token_secret()
    header = ("id,submitdate,token,markets[US],markets[CA],sme_involvement[business_contacts],"
              "sme_involvement[soft_landing],cooperation_agreements,business_missions_planned,sme_members,success_story")
    path = write_csv(
        tmp_path, "results-survey123.csv",
        f"1,2019-04-01 10:00:00,{derive_token(secret, 2019, 'ESCP4I-07')},Y,Y,,Y,4,Y,12,",
        f"2,,{derive_token(secret, 2019, 'ESCP4I-08')},,Y,,,,,,",
        header=header,
    )
    summary = ingest(settings, 2019, path)
    assert (summary.files[0].layout, summary.files[0].accepted, summary.files[0].partial) == ("limesurvey", 1, 1)
    [accepted] = responses_by_code(engine, "accepted")["ESCP4I-07"]
    assert accepted.answers == {"markets": ["US", "CA"], "sme_involvement": ["soft_landing"], "cooperation_agreements": 4,
                                "business_missions_planned": True, "sme_members": 12, "success_story": None}
    with session_scope(engine) as session:
        assert raw_cells(session, accepted)["markets[US]"] == "Y"
    assert [r.status for r in responses_by_code(engine)["ESCP4I-08"]] == ["partial"]


def test_missing_required_column_quarantines_rows_as_unanswered(engine, settings, round_2019, tmp_path):
    """Without a sme_members column every complete row lacks a required answer and goes to quarantine."""
    header = HEADER.replace(",sme_members", "")
    path = write_csv(tmp_path, "short.csv", "ESCP4I-01,2019-04-01T10:00:00,US,other,2,yes,", header=header)
    summary = ingest(settings, 2019, path)
    assert any("no column for question(s) sme_members" in note for note in summary.files[0].notes)
    [row] = quarantined(engine)
    assert [(r["rule"], r["column"]) for r in row.reasons] == [("required", "sme_members")]


def test_header_only_file_is_refused_and_not_recorded(engine, settings, round_2019, tmp_path):
    """A header without rows is an export gone wrong: refused, and not recorded as a file of 0 rows."""
    with pytest.raises(ConsultError, match="header row but no response row"):
        ingest(settings, 2019, write_csv(tmp_path, "header.csv"))
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(IngestedFile)) == 0
        assert session.scalar(select(func.count()).select_from(Response)) == 0


def test_unknown_round_stops_with_a_clear_error(engine, settings, round_2019):
    """Ingesting into a round that was never opened says so and stores nothing."""
    with pytest.raises(ConsultError, match="round 2031 does not exist"):
        ingest(settings, 2031, EXAMPLES / "responses-2019.csv")
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(IngestedFile)) == 0


def test_unreadable_file_in_a_batch_stores_nothing_at_all(engine, settings, round_2019, tmp_path):
    """A batch whose second file is empty stops naming it, before the first file is stored."""
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ConsultError, match=r"empty\.csv: the file is empty"):
        ingest(settings, 2019, EXAMPLES / "responses-2019.csv", empty)
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Response)) == 0


def test_answers_ten_times_last_year_are_stored_with_a_warning(engine, settings, round_2019, tmp_path):
    """Year over year: 2020's 31 agreements against 2019's 3 is implausible, stored but flagged."""
    ingest(settings, 2019, EXAMPLES / "responses-2019.csv")
    with session_scope(engine) as session:
        open_round(session, year=2020, questionnaire_path=EXAMPLES / "questionnaire-2020.yaml",
                   token_secret=settings.resolved_token_secret(), closes_on=dt.date(2020, 6, 30))
    header = HEADER + ",digital_tools"
    path = write_csv(tmp_path, "2020.csv", "ESCP4I-01,2020-03-02T09:05:00,US,other,31,yes,48,,yes",
                     "ESCP4I-02,2020-03-02T09:05:00,US,other,10,yes,18,,yes", header=header)
    summary = ingest(settings, 2020, path)
    assert (summary.files[0].accepted, summary.files[0].warnings) == (2, 1)
    flagged = responses_by_code(engine, "accepted")
    [first] = [r for r in flagged["ESCP4I-01"] if r.answers.get("digital_tools") is not None]
    assert [(w["rule"], w["column"], w["value"]) for w in first.warnings] == [
        ("year_over_year", "cooperation_agreements", "31")]
    assert "last year's answer (3)" in first.warnings[0]["message"]


@pytest.mark.slow
def test_quarantined_row_is_accepted_after_a_fix_and_counted(engine, settings, round_2019, tmp_path):
    """An analyst fixes the bad value; the row is re-validated and stored as the partnership's answer."""
    ingest(settings, 2019, write_csv(tmp_path, "bad.csv", "ESCP4I-01,2019-04-01T10:00:00,US,other,abc,yes,20,"))
    [row] = quarantined(engine)
    with pytest.raises(ConsultError, match=r"row 2 of bad\.csv is still invalid: cooperation_agreements: -1 is outside 0\.\.200"):
        pipeline.accept_quarantined(settings, 2019, row.id, fixes={"cooperation_agreements": "-1"})
    response = pipeline.accept_quarantined(settings, 2019, row.id, fixes={"cooperation_agreements": "2"})
    assert (response.status, response.answers["cooperation_agreements"]) == ("accepted", 2)
    with session_scope(engine) as session:
        assert raw_cells(session, response)["cooperation_agreements"] == "abc"  # raw stays as exported
    [after] = quarantined(engine)
    assert (after.status, after.response_id) == ("accepted", response.id)


def test_unknown_partnership_can_be_assigned_or_rejected(engine, settings, round_2019):
    """ESCP4I-99 is assigned to ESCP4I-07 by an analyst, or rejected and kept out for good."""
    ingest(settings, 2019, EXAMPLES / "responses-2019.csv")
    [row] = quarantined(engine)
    with pytest.raises(ConsultError, match="unknown partnership ESCP4I-99"):
        pipeline.accept_quarantined(settings, 2019, row.id)
    with session_scope(engine) as session:
        reject_quarantined(session, 2019, row.id, note="not in the panel")
    with session_scope(engine) as session:
        assert [entry.status for entry in list_quarantine(session, 2019, status=None)] == ["rejected"]
    with pytest.raises(ConsultError, match="already rejected"):
        pipeline.accept_quarantined(settings, 2019, row.id, partnership_code="ESCP4I-07")
    assert "ESCP4I-07" not in responses_by_code(engine)


@pytest.mark.slow
def test_50_mb_file_is_ingested_in_one_transaction(engine, settings, round_2019, tmp_path):
    """A 50 MB export (about 400,000 rows over the 23 partnerships) is stored whole: one accepted answer per
    partnership, every other complete row superseded."""
    codes = [f"ESCP4I-{n:02d}" for n in range(1, 24)]
    path = tmp_path / "big.csv"
    story = "x" * 60
    with path.open("w", encoding="utf-8") as handle:
        handle.write(HEADER + "\n")
        row = 0
        while handle.tell() < 50 * 1024 * 1024:
            # One second apart: every submission has its own submit date.
            stamp = f"2019-03-{1 + row // 86400:02d}T{(row // 3600) % 24:02d}:{(row // 60) % 60:02d}:{row % 60:02d}"
            handle.write(f"{codes[row % 23]},{stamp},US;CA;JP,"
                         f"business_contacts;other,{row % 200},yes,{row % 5000},{story}{row}\n")
            row += 1
    summary = ingest(settings, 2019, path)
    counts = summary.files[0]
    assert counts.rows == row
    assert (counts.accepted, counts.superseded, counts.quarantined) == (23, row - 23, 0)


def test_file_without_submit_dates_counts_every_row_and_the_last_one_wins(engine, settings, round_2019, tmp_path):
    """A plain export with no submit-date column: every row is complete; for two rows of one partnership the
    later row in the file counts."""
    header = HEADER.replace("submitted_at,", "")
    path = write_csv(tmp_path, "nodates.csv", "ESCP4I-05,CA,other,1,yes,64,", "ESCP4I-05,US,other,3,no,70,",
                     header=header)
    summary = ingest(settings, 2019, path)
    assert any("no submit-date column" in note for note in summary.files[0].notes)
    rows = responses_by_code(engine)["ESCP4I-05"]
    assert [(r.status, r.answers["cooperation_agreements"], r.submitted_at) for r in rows] == [
        ("superseded", 1, None), ("accepted", 3, None)]


def test_a_panel_member_left_out_of_the_round_is_told_apart_from_an_unknown_one(engine, settings, round_2019,
                                                                                  tmp_path):
    """A partnership that joined the panel after the round opened was not consulted: its answer goes to
    quarantine saying so, while an id nobody knows is "unknown", and the consulted ones still match."""
    with session_scope(engine) as session:
        session.add(Partnership(code="ESCP4I-99", name="Joined later", attributes={"strand": "1", "country": "BE"}))
    path = write_csv(tmp_path, "late.csv", f"ESCP4I-99,{GOOD}", f"ESCP4I-98,{GOOD}", f"ESCP4I-01,{GOOD}")
    summary = ingest(settings, 2019, path).files[0]
    assert (summary.accepted, summary.quarantined) == (1, 2)
    messages = {row.row_number: row.reasons[0]["message"] for row in quarantined(engine)}
    assert sorted(messages.values()) == ["partnership ESCP4I-99 is not consulted in round 2019",
                                         "unknown partnership ESCP4I-98"]
    assert list(responses_by_code(engine, "accepted")) == ["ESCP4I-01"]
