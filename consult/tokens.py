"""Response tokens: unguessable, one per partnership and round, stored only as a hash.

A token is derived from HMAC-SHA256(secret, "round_year:partnership_code") rather than drawn at random and
forgotten, so that a reminder carries the same link as the invitation while the database keeps only
``sha256(token)``: a stolen database yields no working link, and without the secret no token can be guessed.

How the digest is spelled is the round's ``token_scheme``:

- ``alnum`` (rounds opened since migration 0006): 32 letters and digits (base 62, about 190 bits), like
  LimeSurvey's own tokens: safe by construction in every survey tool, CSV file and spreadsheet (no formula lead
  character, nothing to escape in a URL), and within LimeSurvey's 35-character token column;
- ``b64url`` (rounds opened before): URL-safe base64 of the whole digest, 43 characters; kept so that tokens
  already mailed for a round still open keep matching.

The secret itself is checked here too: at least 32 bytes, and each round records a fingerprint of the secret it
was opened with (an HMAC of a fixed label, which reveals nothing of the secret) and refuses any other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import string

from consult.errors import ConsultError

TOKEN_SCHEMES = ("alnum", "b64url")
CURRENT_SCHEME = "alnum"
ALNUM_LENGTH = 32
MIN_SECRET_BYTES = 32
_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase  # 0-9A-Za-z
_FINGERPRINT_LABEL = b"consult token-secret fingerprint v1"


def derive_token(secret: bytes, round_year: int, partnership_code: str, scheme: str = CURRENT_SCHEME) -> str:
    digest = hmac.new(secret, f"{round_year}:{partnership_code}".encode(), hashlib.sha256).digest()
    if scheme == "alnum":
        number = int.from_bytes(digest, "big")
        chars = []
        for _ in range(ALNUM_LENGTH):
            number, index = divmod(number, 62)
            chars.append(_ALPHABET[index])
        return "".join(chars)
    if scheme == "b64url":
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    raise ConsultError(f"unknown token scheme {scheme!r} (expected one of {', '.join(TOKEN_SCHEMES)})")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


def response_link(url_template: str, token: str) -> str:
    return url_template.format(token=token)


def check_secret(secret: bytes, *, source: str) -> bytes:
    """``secret`` if it is long enough to make tokens unguessable; one line naming ``source`` otherwise."""
    if not secret.strip():
        raise ConsultError(f"{source}: the token secret is empty; tokens would be computable by anyone (set at "
                           f"least {MIN_SECRET_BYTES} random bytes, e.g. `python -c 'import secrets; "
                           "print(secrets.token_hex(32))'`)")
    if len(secret) < MIN_SECRET_BYTES:
        raise ConsultError(f"{source}: the token secret is {len(secret)} bytes; at least {MIN_SECRET_BYTES} are "
                           "needed for unguessable tokens")
    return secret


def secret_fingerprint(secret: bytes) -> str:
    """Identifies a secret without revealing it: HMAC-SHA256 of a fixed label under the secret."""
    return hmac.new(secret, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()


def check_round_fingerprint(year: int, recorded: str | None, secret: bytes) -> None:
    """Refuse to derive a round's tokens with a secret other than the one it was opened with."""
    if recorded is not None and not hmac.compare_digest(recorded, secret_fingerprint(secret)):
        raise ConsultError(
            f"round {year} was opened with another token secret (fingerprint {recorded[:12]}, this one "
            f"{secret_fingerprint(secret)[:12]}): its tokens would not match; restore CONSULT_TOKEN_SECRET or "
            "data/token-secret"
        )
