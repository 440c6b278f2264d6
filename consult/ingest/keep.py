"""Kept response files without a working token in the database.

A survey tool's export carries each partnership's response token, which is a working login to its answers. The
engine keeps every file (to show any row as exported and give the file back byte for byte), so:

- the kept bytes are encrypted (AES-256-GCM) under a key derived from the token secret (HMAC-SHA256 of a fixed
  label), with the file's SHA-256 as associated data: a copy of the database alone yields no token, and whoever
  holds the secret can compute every token anyway. ``ingested_files.token_storage`` says ``encrypted``;
- quarantined rows, which keep their cells as JSON, hold the SHA-256 of each token cell (``sha256:...``), the
  form the round's participants are stored in, so a reviewer can still match a row to its participant;
- ``consult files show`` prints token cells the same way; ``consult files export`` decrypts and says so.

The SHA-256 of the file as received stays its identity (the same file again is skipped).
"""

from __future__ import annotations

import hashlib
import hmac
import os

import pandas as pd
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consult.errors import ConsultError

ENCRYPTED = "encrypted"
_MAGIC = b"CKF1"
_KEY_LABEL = b"consult kept-file key v1"
TOKEN_HEADERS = {"token", "accesstoken", "accesscode", "invitationtoken"}  # as consult.ingest.readers spells them


def _key(secret: bytes) -> bytes:
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()


def seal(content: bytes, *, secret: bytes, sha256: str) -> bytes:
    """``content`` (the compressed file) encrypted under the secret's key, bound to the file's SHA-256."""
    nonce = os.urandom(12)
    return _MAGIC + nonce + AESGCM(_key(secret)).encrypt(nonce, content, sha256.encode())


def unseal(sealed: bytes, *, secret: bytes, sha256: str, name: str) -> bytes:
    if not sealed.startswith(_MAGIC):
        raise ConsultError(f"{name}: the kept bytes are not in the encrypted form their record says")
    nonce, body = sealed[len(_MAGIC):len(_MAGIC) + 12], sealed[len(_MAGIC) + 12:]
    try:
        return AESGCM(_key(secret)).decrypt(nonce, body, sha256.encode())
    except InvalidTag:
        raise ConsultError(f"{name}: the kept bytes cannot be decrypted with this token secret (another secret, "
                           "or altered bytes)") from None


def is_token_column(column: object) -> bool:
    return "".join(ch for ch in str(column).lower() if ch.isalnum()) in TOKEN_HEADERS


def token_digest(value: object) -> str:
    text = "" if value is None else str(value).strip()
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}" if text else ""


def hash_token_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every token cell replaced by its ``sha256:`` digest (a copy; other cells unchanged)."""
    columns = [column for column in frame.columns if is_token_column(column)]
    if not columns:
        return frame
    frame = frame.copy()
    for column in columns:
        frame[column] = frame[column].map(token_digest)
    return frame
