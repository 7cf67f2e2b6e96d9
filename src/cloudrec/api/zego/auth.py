"""ZEGO request signatures: ``md5(AppId + SignatureNonce + ServerSecret + Timestamp)``,
lower-case hex, SignatureVersion 2.0, timestamps at most 10 minutes off, and every nonce
accepted once inside that window (a second use is a replay)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping

from limits import RateLimitItemPerMinute
from limits.strategies import RateLimiter

from cloudrec.core.errors import CloudrecError

SKEW_S = 600
NONCE_WINDOW = RateLimitItemPerMinute(1, 2 * SKEW_S // 60)  # one use per nonce per 20 min


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
    nonces: RateLimiter,
) -> int:
    """The app id of a correctly signed, fresh, first-seen request; raise otherwise."""
    app_s = _need(query, "AppId")
    if not app_s.isdigit():
        raise CloudrecError.invalid_argument(f"AppId {app_s!r} is not a number")
    app_id = int(app_s)
    nonce = _need(query, "SignatureNonce")
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
    if not nonces.hit(NONCE_WINDOW, "zego-nonce", str(app_id), nonce):
        raise CloudrecError.unauthenticated(
            f"SignatureNonce {nonce!r} was already used: a replayed request",
            reason="signature_replayed",
        )
    return app_id
