"""ZEGO request signatures: ``md5(AppId + SignatureNonce + ServerSecret + Timestamp)``,
lower-case hex, SignatureVersion 2.0, timestamps at most 10 minutes off, and every nonce
accepted once inside that window (a second use is a replay).

A signed request stays fresh while its Timestamp is within ``SKEW_S`` of the server's clock,
that is for at most ``2 * SKEW_S`` (20 minutes) after the server first sees it (a client clock
10 minutes ahead).  So a nonce is remembered for ``NONCE_WINDOW_S`` = 20 minutes from its first
use: inside that window a replay is refused as ``signature_replayed``, after it the request's
Timestamp has expired (``signature_expired``), and the same nonce with a new Timestamp and
signature is a new request.  Where nonces are kept (the database, or a shared ``limits``
storage such as Redis) is a :class:`NonceStore`, so that a restart or a second API process
does not forget them (issue 11, #8).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Protocol

from limits import RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from cloudrec.core.errors import CloudrecError

SKEW_S = 600
NONCE_WINDOW_S = 2 * SKEW_S  # a nonce is remembered this long after its first use
MAX_NONCE_CHARS = 128


class NonceStore(Protocol):
    """Where nonces are remembered for ``NONCE_WINDOW_S``; shared by every API process."""

    def first_use(self, app_id: int, nonce: str) -> bool:
        """Record ``nonce``; False when it was already used inside the window (a replay)."""


class LimitsNonceStore:
    """``NonceStore`` over a ``limits`` storage URI (``redis://HOST:PORT``): one use per nonce
    per window, counted (and timed) by the storage itself."""

    def __init__(self, storage_uri: str, window_s: int = NONCE_WINDOW_S) -> None:
        self._limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))
        self._item = RateLimitItemPerSecond(1, window_s)

    def first_use(self, app_id: int, nonce: str) -> bool:
        return self._limiter.hit(self._item, "zego-nonce", str(app_id), nonce)


def signature(app_id: int, nonce: str, secret: str, timestamp: int) -> str:
    text = f"{app_id}{nonce}{secret}{timestamp}"
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _need(query: Mapping[str, str], name: str) -> str:
    value = query.get(name)
    if not value:
        raise CloudrecError.invalid_argument(f"missing common parameter {name}")
    return value


def verify(
    query: Mapping[str, str],
    secret_of: Callable[[int], str | None],
    now: float,
    nonces: NonceStore,
) -> int:
    """The app id of a correctly signed, fresh, first-seen request; raise otherwise.

    ``now`` is the server's clock (Unix seconds); the nonce is recorded only once the signature
    is right, so a forged request cannot use up a nonce."""
    app_s = _need(query, "AppId")
    if not app_s.isdigit():
        raise CloudrecError.invalid_argument(f"AppId {app_s!r} is not a number")
    app_id = int(app_s)
    nonce = _need(query, "SignatureNonce")
    if len(nonce) > MAX_NONCE_CHARS:
        raise CloudrecError.invalid_argument(
            f"SignatureNonce is longer than {MAX_NONCE_CHARS} characters"
        )
    ts_s = _need(query, "Timestamp")
    given = _need(query, "Signature")
    version = _need(query, "SignatureVersion")
    if version != "2.0":
        raise CloudrecError.invalid_argument(f"SignatureVersion {version!r} is not 2.0")
    if not ts_s.lstrip("-").isdigit():
        raise CloudrecError.invalid_argument(f"Timestamp {ts_s!r} is not a number")
    timestamp = int(ts_s)
    if abs(now - timestamp) > SKEW_S:
        raise CloudrecError.unauthenticated(
            f"Timestamp {timestamp} is {int(now - timestamp)} s from the server's clock "
            f"(at most {SKEW_S} s allowed)",
            reason="signature_expired",
        )
    secret = secret_of(app_id)
    if secret is None:
        raise CloudrecError.unauthenticated(
            f"AppId {app_id} is not activated here", reason="app_unknown"
        )
    if not hmac.compare_digest(signature(app_id, nonce, secret, timestamp), given.lower()):
        raise CloudrecError.unauthenticated("Signature does not match", reason="signature_invalid")
    if not nonces.first_use(app_id, nonce):
        raise CloudrecError.unauthenticated(
            f"SignatureNonce {nonce!r} was already used: a replayed request",
            reason="signature_replayed",
        )
    return app_id
