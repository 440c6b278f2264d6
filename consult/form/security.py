"""The response form's defences: CSRF tokens, a limit on failed token lookups per client, security headers.

CSRF (double submit, signed): the browser holds a random cookie; each form carries
``nonce.issued.mac`` with ``mac = HMAC(key, token_hash | cookie | nonce | issued)``. A post is accepted only with
the cookie that the form was issued for, for the same response link, within ``CSRF_MAX_AGE``, and once: a used
nonce is remembered until it would have expired anyway, so a replayed post is refused. The key is derived from
the token secret, so it never needs configuring and never leaves the process.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque

CSRF_COOKIE = "consult_csrf"
CSRF_FIELD = "csrf_token"
CSRF_MAX_AGE = 4 * 3600  # seconds a form stays valid: long enough to write a success story

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # The response link carries the token in its path: never send it on as a referrer.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def csrf_key(token_secret: bytes) -> bytes:
    return hmac.new(token_secret, b"consult response form csrf", hashlib.sha256).digest()


def new_cookie_value() -> str:
    return secrets.token_urlsafe(32)


class CsrfTokens:
    """Issues and checks the forms' CSRF tokens; remembers used ones (one process: see deployments/README.md)."""

    def __init__(self, key: bytes, *, max_age: float = CSRF_MAX_AGE, clock=time.time) -> None:  # type: ignore[no-untyped-def]
        self._key = key
        self._max_age = max_age
        self._clock = clock
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def _mac(self, token_hash: str, cookie: str, nonce: str, issued: str) -> str:
        message = f"{token_hash}|{cookie}|{nonce}|{issued}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def issue(self, token_hash: str, cookie: str) -> str:
        nonce, issued = secrets.token_urlsafe(16), str(int(self._clock()))
        return f"{nonce}.{issued}.{self._mac(token_hash, cookie, nonce, issued)}"

    def consume(self, token_hash: str, cookie: str | None, value: str | None) -> bool:
        """True once for a valid token; False when missing, forged, for another link or cookie, stale or used."""
        if not cookie or not value or value.count(".") != 2:
            return False
        nonce, issued, mac = value.split(".")
        if not hmac.compare_digest(mac, self._mac(token_hash, cookie, nonce, issued)):
            return False
        now = self._clock()
        try:
            age = now - int(issued)
        except ValueError:
            return False
        if not 0 <= age <= self._max_age:
            return False
        with self._lock:
            for old, expires in list(self._used.items()):
                if expires < now:
                    del self._used[old]
            if nonce in self._used:
                return False
            self._used[nonce] = int(issued) + self._max_age
        return True


class FailedLookups:
    """A sliding window of failed token lookups per client: past ``limit`` in ``window`` seconds, the client is
    refused every lookup (valid tokens too) until its oldest failure leaves the window."""

    def __init__(self, limit: int, window: float, *, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.limit = limit
        self.window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def blocked(self, client: str) -> bool:
        with self._lock:
            now = self._clock()
            failures = self._recent(client, now)
            if not failures:
                self._failures.pop(client, None)
            return len(failures) >= self.limit

    def record(self, client: str) -> None:
        with self._lock:
            now = self._clock()
            self._recent(client, now).append(now)
            if len(self._failures) > 100_000:  # a flood of distinct addresses: forget the quietest
                for key in [key for key, value in self._failures.items() if len(value) <= 1][:50_000]:
                    del self._failures[key]
