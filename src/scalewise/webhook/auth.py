"""Caller authentication: bearer tokens and HMAC-SHA256 request signatures, with a replay window.

Signature: ``X-Scalewise-Signature: sha256=<hex of HMAC-SHA256(secret, timestamp + "." + body)>`` with
``X-Scalewise-Timestamp: <unix seconds>``. A timestamp further than the replay window from now (either
way) is refused, and so is a signature already accepted within the window. Every comparison uses
:func:`hmac.compare_digest`, and every caller is checked (no early exit that would time who matched).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

from scalewise.webhook.config import Caller, Credentials

TIMESTAMP_HEADER = "x-scalewise-timestamp"
SIGNATURE_HEADER = "x-scalewise-signature"
SIGNATURE_PREFIX = "sha256="


class AuthError(Exception):
    """Authentication failed; ``field`` names the header at fault (the message never holds a secret)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def sign(secret: str, timestamp: str | int, body: bytes) -> str:
    """The ``X-Scalewise-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def signed_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {"X-Scalewise-Timestamp": ts, "X-Scalewise-Signature": sign(secret, ts, body)}


@dataclass
class Authenticated:
    caller: Caller
    #: The accepted signature (to be marked as seen), or None for bearer-only callers.
    signature: str | None
    timestamp: float | None


class ReplayGuard:
    """Signatures accepted within the replay window (each kept until its timestamp leaves the window)."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self.clock = clock
        self._seen: dict[str, float] = {}

    def _prune(self, now: float) -> None:
        if len(self._seen) > 1024:
            for sig in [s for s, until in self._seen.items() if until < now]:
                del self._seen[sig]

    def seen(self, signature: str) -> bool:
        now = self.clock()
        until = self._seen.get(signature)
        return until is not None and until >= now

    def mark(self, signature: str, timestamp: float) -> None:
        now = self.clock()
        self._prune(now)
        self._seen[signature] = timestamp + self.window_s + 1.0

    def forget(self, signature: str) -> None:
        """Let the exact request be retried (it was refused before it was acted upon, e.g. 429/503)."""
        self._seen.pop(signature, None)

    def __len__(self) -> int:
        return len(self._seen)


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Authenticator:
    def __init__(
        self,
        callers: list[Caller],
        credentials: dict[str, Credentials],
        window_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.callers = callers
        self.credentials = credentials
        self.window_s = window_s
        self.clock = clock
        self.replay = ReplayGuard(window_s, clock)

    def authenticate(self, headers: dict[str, str], body: bytes) -> Authenticated:
        """The caller whose every configured credential verifies; raises :class:`AuthError`."""
        token = _bearer(headers.get("authorization"))
        raw_sig = headers.get(SIGNATURE_HEADER)
        raw_ts = headers.get(TIMESTAMP_HEADER)
        if token is None and raw_sig is None:
            if headers.get("authorization"):
                raise AuthError("the Authorization header must be 'Bearer <token>'", "Authorization")
            raise AuthError("missing credentials: send a bearer token or a signature", "Authorization")
        timestamp: float | None = None
        if raw_sig is not None:
            if not raw_ts:
                raise AuthError("a signed request needs X-Scalewise-Timestamp", "X-Scalewise-Timestamp")
            try:
                timestamp = float(int(raw_ts.strip()))
            except ValueError:
                raise AuthError(
                    "X-Scalewise-Timestamp must be unix seconds", "X-Scalewise-Timestamp"
                ) from None
            if abs(self.clock() - timestamp) > self.window_s:
                raise AuthError("timestamp outside the replay window", "X-Scalewise-Timestamp")
            if not raw_sig.startswith(SIGNATURE_PREFIX):
                raise AuthError("X-Scalewise-Signature must be 'sha256=<hex>'", "X-Scalewise-Signature")
        matched: Caller | None = None
        for caller in self.callers:
            creds = self.credentials[caller.name]
            ok = True
            if creds.token is not None:
                ok &= token is not None and hmac.compare_digest(
                    token.encode(), creds.token.get_secret_value().encode()
                )
            if creds.hmac_secret is not None:
                ok &= raw_sig is not None and hmac.compare_digest(
                    raw_sig.strip().lower().encode(),
                    sign(creds.hmac_secret.get_secret_value(), raw_ts or "", body).encode(),
                )
            if ok and matched is None:
                matched = caller
        if matched is None:
            field = "X-Scalewise-Signature" if raw_sig is not None and token is None else "Authorization"
            raise AuthError("invalid credentials", field)
        signature = (
            raw_sig.strip().lower()
            if raw_sig is not None and self.credentials[matched.name].hmac_secret
            else None
        )
        if signature is not None and self.replay.seen(signature):
            raise AuthError("replayed request: this signature was already used", "X-Scalewise-Signature")
        return Authenticated(matched, signature, timestamp)
