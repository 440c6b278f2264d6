"""No working token in the database: kept export files are encrypted under the token secret's key, quarantined
rows and `consult files show` hold each token as its SHA-256; `files export` gives the file back as received."""

from __future__ import annotations

import hashlib
import zlib

from sqlalchemy import select, text
from typer.testing import CliRunner

from consult import settings as settings_module
from consult.cli import app
from consult.ingest import pipeline
from consult.tokens import derive_token
from db.engine import session_scope
from db.models import IngestedFile, QuarantinedRow

runner = CliRunner()
HEADER = ("id,submitdate,token,markets[US],sme_involvement[business_contacts],cooperation_agreements,"
          "business_missions_planned,sme_members,success_story")


def _ingest(settings, path):
    files = pipeline.read_files(settings, 2019, [str(path)])
    return pipeline.store_files(settings, 2019, pipeline.validate_files(
        settings, 2019, pipeline.match_files(settings, 2019, files)))


def _every_stored_value(engine) -> list[object]:
    """Every cell of every table, decompressed where it is zlib data."""
    values: list[object] = []
    with engine.connect() as connection:
        tables = [name for (name,) in connection.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'table'" if engine.dialect.name == "sqlite" else
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))]
        for table in tables:
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                for value in row:
                    values.append(value)
                    if isinstance(value, (bytes, memoryview)):
                        try:
                            values.append(zlib.decompress(bytes(value)))
                        except zlib.error:
                            pass
    return values


def test_no_working_token_is_stored_and_files_show_and_export_say_how_it_is_kept(engine, settings, round_2019,
                                                                                  tmp_path, monkeypatch):
    """After ingesting a LimeSurvey export with a valid token and an unknown one (quarantined), neither token
    appears in any table; the quarantined row holds the unknown token's SHA-256; `files list` says the file is
    kept encrypted, `files show` prints token cells as their SHA-256, `files export` writes the file as received
    (its SHA-256 matches); the same file again is skipped by its SHA-256."""
    secret = settings.resolved_token_secret()
    good = derive_token(secret, 2019, "ESCP4I-07")
    unknown = "Zz" + good[2:]
    path = tmp_path / "results-survey1.csv"
    path.write_text(f"{HEADER}\n1,2019-04-01 10:00:00,{good},Y,Y,1,Y,5,\n2,2019-04-02 10:00:00,{unknown},Y,Y,1,Y,5,\n",
                    encoding="utf-8")
    summary = _ingest(settings, path)
    assert (summary.files[0].accepted, summary.files[0].quarantined) == (1, 1)

    for value in _every_stored_value(engine):
        blob = value.encode() if isinstance(value, str) else bytes(value) if isinstance(value, (bytes, memoryview)) \
            else str(value).encode()
        assert good.encode() not in blob and unknown.encode() not in blob
    with session_scope(engine) as session:
        (quarantined,) = session.scalars(select(QuarantinedRow)).all()
        assert quarantined.raw["token"] == "sha256:" + hashlib.sha256(unknown.encode()).hexdigest()
        file_id = session.scalar(select(IngestedFile.id))

    listed = runner.invoke(app, ["files", "list", "2019"])
    assert "kept encrypted: no token in the clear" in listed.output
    shown = runner.invoke(app, ["files", "show", "2019", str(file_id), "2"])
    assert shown.exit_code == 0, shown.output
    assert f'token: "sha256:{hashlib.sha256(good.encode()).hexdigest()}"' in shown.output
    assert good not in shown.output and "shown as their SHA-256" in shown.output
    exported = runner.invoke(app, ["files", "export", "2019", str(file_id), "--to", str(tmp_path / "out")])
    assert exported.exit_code == 0, exported.output
    assert "decrypted with the token secret's key" in exported.output
    assert (tmp_path / "out" / path.name).read_bytes() == path.read_bytes()

    assert _ingest(settings, path).files[0].skipped_as_duplicate_file

    monkeypatch.setenv("CONSULT_TOKEN_SECRET", "another-secret-" + "9" * 40)
    settings_module.get_settings.cache_clear()
    refused = runner.invoke(app, ["files", "export", "2019", str(file_id), "--to", str(tmp_path / "again")])
    assert refused.exit_code != 0
    assert "cannot be decrypted with this token secret" in str(refused.exception or refused.output)
