"""Publish tokens: an HMAC-SHA256 over app, room, stream and an expiry, keyed with the app's
publish secret.

Token text: ``{expires_unix_s}.{hex digest}``.  The message signed is
``"{app_id}\\n{room_id}\\n{stream_id}\\n{expires}"``.
"""

from __future__ import annotations

import hashlib
import hmac

from cloudrec.core.errors import CloudrecError


def _digest(secret: str, app_id: int, room_id: str, stream_id: str, expires: int) -> str:
    message = f"{app_id}\n{room_id}\n{stream_id}\n{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def make_publish_token(secret: str, app_id: int, room_id: str, stream_id: str, expires: int) -> str:
    """A token valid until ``expires`` (Unix seconds) for exactly this app, room and stream."""
    return f"{expires}.{_digest(secret, app_id, room_id, stream_id, expires)}"


def verify_publish_token(
    secret: str, app_id: int, room_id: str, stream_id: str, token: str | None, now: float
) -> None:
    """Raise ``CloudrecError`` (reason ``token_missing``, ``token_invalid``, ``token_expired``)."""
    if not token:
        raise CloudrecError.unauthenticated("no token in the stream name", reason="token_missing")
    expires_s, _, digest = token.partition(".")
    if not expires_s.isdigit() or not digest:
        raise CloudrecError.unauthenticated(
            "token is not of the form '{expires}.{digest}'", reason="token_invalid"
        )
    expected = _digest(secret, app_id, room_id, stream_id, int(expires_s))
    if not hmac.compare_digest(expected, digest):
        raise CloudrecError.unauthenticated(
            "token does not match this app, room and stream", reason="token_invalid"
        )
    if int(expires_s) < now:
        raise CloudrecError.unauthenticated(
            f"token expired at {int(expires_s)} (now {int(now)})", reason="token_expired"
        )
