"""The console's session: a signed cookie (HMAC-SHA256 with a key derived from the service's
secret key) holding who signed in, until when, and the session's CSRF token.

Nothing secret is in the cookie; it cannot be forged or extended without the key.  Every form
that changes something carries the CSRF token, checked against the cookie's (the cookie is
``SameSite=Lax`` and ``HttpOnly``, and ``Secure`` when the console is served over HTTPS).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "cloudrec_console"
SESSION_S = 12 * 3600


@dataclass(frozen=True)
class Session:
    app_id: int | None  # None: the operator (every app)
    csrf: str
    expires: int

    @property
    def operator(self) -> bool:
        return self.app_id is None


class Sessions:
    def __init__(self, key: bytes, now: Callable[[], float] = time.time) -> None:
        self._key = hashlib.sha256(b"cloudrec console session\0" + key).digest()
        self._now = now

    def new(self, app_id: int | None) -> tuple[Session, str]:
        session = Session(app_id, secrets.token_urlsafe(18), int(self._now()) + SESSION_S)
        return session, self._encode(session)

    def _encode(self, s: Session) -> str:
        payload = json.dumps({"a": s.app_id, "c": s.csrf, "e": s.expires}, separators=(",", ":"))
        body = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
        return f"{body}.{self._sign(body)}"

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def read(self, cookie: str | None) -> Session | None:
        """The session of a cookie, or None when it is missing, forged or expired."""
        if not cookie or len(cookie) > 512 or "." not in cookie:
            return None
        body, sig = cookie.rsplit(".", 1)
        if not hmac.compare_digest(sig, self._sign(body)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            session = Session(data["a"], str(data["c"]), int(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.app_id is not None and not isinstance(session.app_id, int):
            return None
        return session if session.expires > self._now() else None
