"""Match each response row to a partnership of the round: token first, else partnership id or contact e-mail;
in an anonymous round (``match_by: [response_id]``) to no partnership, by the survey tool's response id.

A token is compared through its hash (the database never holds tokens). A row that carries a token must match by
it: a wrong token never falls back to a partnership id typed next to it, since anybody can type an id. The
partnership id and the e-mail are used only where the questionnaire's ``match_by`` allows them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.bulk import fetch_all
from db.models import Contact, Partnership, Round, RoundParticipant

AMBIGUOUS = -1
MISSING = -2


class KeyIndex(Mapping[str, int]):
    """A read-only ``{key: partnership id}`` that also looks up a million keys at once, in C (a pandas hash
    index) rather than with a million dict lookups in Python."""

    def __init__(self, keys: list[str], ids: np.ndarray) -> None:
        self._index = pd.Index(keys, dtype=object)
        self._ids = ids
        if not self._index.is_unique:  # the last one wins, as in a dict
            keep = ~self._index.duplicated(keep="last")
            self._index, self._ids = self._index[keep], ids[keep]

    @classmethod
    def of(cls, mapping: Mapping[str, int]) -> KeyIndex:
        return mapping if isinstance(mapping, KeyIndex) else cls(list(mapping), np.array(list(mapping.values()),
                                                                                         dtype=np.int64))

    def ids_of(self, keys: list[str]) -> np.ndarray:
        """The id of each key, MISSING where there is none."""
        positions = self._index.get_indexer(pd.Index(keys, dtype=object))
        return np.where(positions >= 0, self._ids.take(positions), MISSING) if len(self._ids) else \
            np.full(len(keys), MISSING, dtype=np.int64)

    def __getitem__(self, key: str) -> int:
        found = self.ids_of([key])[0]
        if found == MISSING:
            raise KeyError(key)
        return int(found)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


@dataclass(frozen=True)
class Directory:
    """What matching needs to know about a round, read once per ingest."""

    round_id: int
    year: int
    token_hashes: Mapping[str, int]
    other_round_tokens: dict[str, int]
    codes: Mapping[str, int]
    emails: Mapping[str, int]
    not_consulted: frozenset[str]  # panel members left out of this round (to say so, not "unknown")


def load_directory(
    session: Session, round_: Round, *, with_tokens: bool = True, with_emails: bool = True
) -> Directory:
    """Everything matching needs, read once; the participants through the driver, since a panel may hold a
    million rows. ``with_tokens=False`` / ``with_emails=False`` skip the token hashes / contact e-mails when no
    file of the batch carries any."""
    connection = session.connection()
    # A round usually enrols the whole panel, which two counts tell at once (participants are distinct members
    # of the panel): then the panel is the directory, read without joining a million participants to it.
    panel_size = connection.scalar(select(func.count()).select_from(Partnership))
    enrolled = connection.scalar(
        select(func.count()).select_from(RoundParticipant).where(RoundParticipant.round_id == round_.id)
    )
    if enrolled == panel_size and not with_tokens:
        participants = fetch_all(connection, "SELECT '', id, code FROM partnerships")
    else:
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
    contacts = connection.execute(
        select(Contact.email, Contact.partnership_id)
        .join(RoundParticipant, RoundParticipant.partnership_id == Contact.partnership_id)
        .where(RoundParticipant.round_id == round_.id)
    ) if with_emails else []
    for email, partnership_id in contacts:
        key = email.strip().lower()
        emails[key] = partnership_id if emails.get(key, partnership_id) == partnership_id else AMBIGUOUS
    ids = np.fromiter((row[1] for row in participants), dtype=np.int64, count=len(participants))
    codes = KeyIndex([row[2].upper() for row in participants], ids)
    token_hashes = KeyIndex([row[0] for row in participants], ids) if with_tokens else KeyIndex([], ids[:0])
    # Panel members not consulted in this round (few): to tell "not consulted" from "unknown".
    not_enrolled = connection.execute(
        select(Partnership.code).where(
            ~select(RoundParticipant.id)
            .where(RoundParticipant.round_id == round_.id, RoundParticipant.partnership_id == Partnership.id)
            .exists()
        )
    ).scalars().all() if panel_size != enrolled else []
    return Directory(
        round_id=round_.id,
        year=round_.year,
        token_hashes=token_hashes,
        other_round_tokens=dict(other_tokens),
        codes=codes,
        emails=emails,
        not_consulted=frozenset(code.upper() for code in not_enrolled),
    )


def _lookup(keys: list[str], table: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(found mask, partnership ids) of ``keys`` in ``table``."""
    ids = KeyIndex.of(table).ids_of(keys)
    return ids != MISSING, ids


def match_partnerships(cells: pd.DataFrame, directory: Directory, match_by: list[str]) -> pd.DataFrame:
    """One row per input row: ``partnership`` (nullable int), ``matched_by`` and ``match_error`` ("" if matched).

    ``cells`` is the canonical table of :mod:`consult.ingest.readers` (``token``, ``partnership_id``, ``email``).
    Works on positions (numpy), not labels: label alignment would cost more than the lookups themselves.
    """
    count = len(cells)
    if "response_id" in match_by:
        return _match_anonymous(cells)
    partnership = np.full(count, MISSING, dtype=np.int64)
    matched_by = np.full(count, "", dtype=object)
    error = np.full(count, "", dtype=object)
    pending = np.ones(count, dtype=bool)

    # The readers strip identity cells already.
    tokens = cells["token"].to_numpy(dtype=object)
    has_token = tokens != ""
    if has_token.any():
        rows = np.flatnonzero(has_token)
        if "token" in match_by:
            hashes = [hashlib.sha256(str(token).encode()).hexdigest() for token in tokens[rows]]
            found, ids = _lookup(hashes, directory.token_hashes)
            partnership[rows[found]] = ids[found]
            matched_by[rows[found]] = "token"
            error[rows[~found]] = [
                f"token belongs to round {year}, not {directory.year}" if year is not None else "unknown token"
                for year in (directory.other_round_tokens.get(hashes[i]) for i in np.flatnonzero(~found))
            ]
            pending[rows] = False
        # else: the questionnaire does not match by token: tokens are ignored, other keys decide.

    written = cells["partnership_id"].to_numpy(dtype=object)
    use_code = pending & (written != "")
    if use_code.any():
        rows = np.flatnonzero(use_code)
        if "partnership_id" in match_by:
            codes = [str(code).upper() for code in written[rows]]
            found, ids = _lookup(codes, directory.codes)
            partnership[rows[found]] = ids[found]
            matched_by[rows[found]] = "partnership_id"
            error[rows[~found]] = [
                f"partnership {written[rows[i]]} is not consulted in round {directory.year}"
                if codes[i] in directory.not_consulted
                else f"unknown partnership {written[rows[i]]}"
                for i in np.flatnonzero(~found)
            ]
        else:
            error[rows] = "this questionnaire matches by token only: a partnership id is not enough"
        pending[rows] = False

    emails = cells["email"].to_numpy(dtype=object)
    use_email = pending & (emails != "")
    if use_email.any():
        rows = np.flatnonzero(use_email)
        if "email" in match_by:
            lowered = [str(email).lower() for email in emails[rows]]
            found, ids = _lookup(lowered, directory.emails)
            found &= ids != AMBIGUOUS
            partnership[rows[found]] = ids[found]
            matched_by[rows[found]] = "email"
            error[rows[~found]] = [
                f"e-mail {lowered[i]} belongs to more than one partnership"
                if directory.emails.get(lowered[i]) == AMBIGUOUS
                else f"unknown e-mail {lowered[i]}"
                for i in np.flatnonzero(~found)
            ]
        else:
            error[rows] = "this questionnaire does not match responses by e-mail"
        pending[rows] = False

    error[pending & (error == "")] = "no token, partnership id or e-mail to identify the partnership"
    matched = partnership != MISSING
    return pd.DataFrame(
        {
            "partnership": pd.arrays.IntegerArray(np.where(matched, partnership, 0), ~matched),
            "matched_by": matched_by,
            "match_error": error,
        },
        index=cells.index,
    )


def _match_anonymous(cells: pd.DataFrame) -> pd.DataFrame:
    """An anonymous round: no partnership; each response is known by the tool's response id (which it needs)."""
    count = len(cells)
    ids = cells["response_id"].to_numpy(dtype=object) if "response_id" in cells.columns else np.full(count, "")
    has_id = ids != ""
    return pd.DataFrame(
        {
            "partnership": pd.arrays.IntegerArray(np.zeros(count, dtype=np.int64), np.ones(count, dtype=bool)),
            "matched_by": np.where(has_id, "response_id", ""),
            "match_error": np.where(has_id, "", "no response id to tell this anonymous response from the others"),
        },
        index=cells.index,
    )
