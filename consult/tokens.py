"""Response tokens: unguessable, one per partnership and round, stored only as a hash.

A token is HMAC-SHA256(secret, "round_year:partnership_code"), 32 bytes, URL-safe. Deriving it (rather than
drawing it at random and forgetting it) lets a reminder carry the same link as the invitation while the database
keeps only ``sha256(token)``: a stolen database yields no working link, and without the secret no token can be
guessed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def derive_token(secret: bytes, round_year: int, partnership_code: str) -> str:
    digest = hmac.new(secret, f"{round_year}:{partnership_code}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


def response_link(url_template: str, token: str) -> str:
    return url_template.format(token=token)
