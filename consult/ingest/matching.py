"""Match each response row to a partnership of the round: token first, else partnership id or contact e-mail.

A token is compared through its hash (the database never holds tokens). A row that carries a token must match by
it: a wrong token never falls back to a partnership id typed next to it, since anybody can type an id. The
partnership id and the e-mail are used only where the questionnaire's ``match_by`` allows them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.bulk import fetch_all
from db.models import Contact, Partnership, Round, RoundParticipant

AMBIGUOUS = -1


@dataclass(frozen=True)
class Directory:
    """What matching needs to know about a round, read once per ingest."""

    round_id: int
    year: int
    token_hashes: dict[str, int]
    other_round_tokens: dict[str, int]
    codes: dict[str, int]
    emails: dict[str, int]
    panel_codes: frozenset[str]


def load_directory(session: Session, round_: Round, *, with_tokens: bool = True) -> Directory:
    """Everything matching needs, read once; the participants through the driver, since a panel may hold a
    million rows. ``with_tokens=False`` skips the token hashes when no file of the batch carries a token."""
    connection = session.connection()
    hash_column = "rp.token_hash" if with_tokens else "''"
    participants = fetch_all(
        connection,
        f"SELECT {hash_column}, rp.partnership_id, p.code FROM round_participants rp "
        "JOIN partnerships p ON p.id = rp.partnership_id WHERE rp.round_id = ?",
        (round_.id,),
    )
    other_tokens = fetch_all(
        connection,
        "SELECT rp.token_hash, r.year FROM round_participants rp JOIN rounds r ON r.id = rp.round_id "
        "WHERE rp.round_id <> ?",
        (round_.id,),
    ) if with_tokens else []
    emails: dict[str, int] = {}
    for email, partnership_id in connection.execute(
        select(Contact.email, Contact.partnership_id)
        .join(RoundParticipant, RoundParticipant.partnership_id == Contact.partnership_id)
        .where(RoundParticipant.round_id == round_.id)
    ):
        key = email.strip().lower()
        emails[key] = partnership_id if emails.get(key, partnership_id) == partnership_id else AMBIGUOUS
    token_hashes: dict[str, int] = {}
    codes: dict[str, int] = {}
    for token_hash, partnership_id, code in participants:
        codes[code.upper()] = partnership_id
        if with_tokens:
            token_hashes[token_hash] = partnership_id
    # Panel members not consulted in this round (few): to tell "not consulted" from "unknown".
    not_enrolled = connection.execute(
        select(Partnership.code).where(
            ~select(RoundParticipant.id)
            .where(RoundParticipant.round_id == round_.id, RoundParticipant.partnership_id == Partnership.id)
            .exists()
        )
    ).scalars().all()
    return Directory(
        round_id=round_.id,
        year=round_.year,
        token_hashes=token_hashes,
        other_round_tokens=dict(other_tokens),
        codes=codes,
        emails=emails,
        panel_codes=frozenset(codes).union(code.upper() for code in not_enrolled),
    )


def _hash_tokens(tokens: pd.Series) -> pd.Series:
    return pd.Series(
        [hashlib.sha256(token.encode()).hexdigest() if token else "" for token in tokens.tolist()],
        index=tokens.index,
        dtype=object,
    )


def match_partnerships(cells: pd.DataFrame, directory: Directory, match_by: list[str]) -> pd.DataFrame:
    """One row per input row: ``partnership`` (nullable int), ``matched_by`` and ``match_error`` ("" if matched).

    ``cells`` is the canonical table of :mod:`consult.ingest.readers` (``token``, ``partnership_id``, ``email``).
    """
    index = cells.index
    partnership = pd.Series(pd.NA, index=index, dtype="Int64")
    matched_by = pd.Series("", index=index, dtype=object)
    error = pd.Series("", index=index, dtype=object)
    pending = pd.Series(True, index=index)

    # The readers strip identity cells already.
    tokens = cells["token"].astype(str)
    has_token = tokens != ""
    if has_token.any():
        hashes = _hash_tokens(tokens[has_token])
        found = hashes.map(directory.token_hashes)
        ok = found.notna()
        partnership[ok[ok].index] = found[ok].astype("int64")
        matched_by[ok[ok].index] = "token"
        other_year = hashes[~ok].map(directory.other_round_tokens)
        error[other_year.index] = [
            f"token belongs to round {int(year)}, not {directory.year}" if pd.notna(year) else "unknown token"
            for year in other_year.tolist()
        ]
        if "token" not in match_by:
            # The questionnaire does not match by token: tokens are ignored, other keys decide.
            partnership[has_token] = pd.NA
            matched_by[has_token] = ""
            error[has_token] = ""
        else:
            pending &= ~has_token

    written = cells["partnership_id"].astype(str)
    codes = pd.Series([code.upper() for code in written.tolist()], index=index, dtype=object)
    use_code = pending & (codes != "")
    if use_code.any():
        if "partnership_id" in match_by:
            found = codes[use_code].map(directory.codes)
            ok = found.notna()
            partnership[ok[ok].index] = found[ok].astype("int64")
            matched_by[ok[ok].index] = "partnership_id"
            missing = codes[use_code][~ok]
            error[missing.index] = [
                f"partnership {shown} is not consulted in round {directory.year}"
                if code in directory.panel_codes
                else f"unknown partnership {shown}"
                for code, shown in zip(missing.tolist(), written[missing.index].tolist(), strict=True)
            ]
        else:
            error[use_code] = "this questionnaire matches by token only: a partnership id is not enough"
        pending &= ~use_code

    emails = pd.Series([email.lower() for email in cells["email"].astype(str).tolist()], index=index, dtype=object)
    use_email = pending & (emails != "")
    if use_email.any():
        if "email" in match_by:
            found = emails[use_email].map(directory.emails)
            ok = found.notna() & (found != AMBIGUOUS)
            partnership[ok[ok].index] = found[ok].astype("int64")
            matched_by[ok[ok].index] = "email"
            bad = emails[use_email][~ok]
            error[bad.index] = [
                f"e-mail {email} belongs to more than one partnership"
                if directory.emails.get(email) == AMBIGUOUS
                else f"unknown e-mail {email}"
                for email in bad.tolist()
            ]
        else:
            error[use_email] = "this questionnaire does not match responses by e-mail"
        pending &= ~use_email

    error[pending & (error == "")] = "no token, partnership id or e-mail to identify the partnership"
    return pd.DataFrame({"partnership": partnership, "matched_by": matched_by, "match_error": error}, index=index)
