"""Apps: the tenants of cloudrec, each with its own credentials."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import datetime
from urllib.parse import urlsplit

from cloudrec.core.errors import CloudrecError

# ZEGO AppIDs are unsigned 32-bit numbers; JoCloud appids fit too.
MAX_APP_ID = 2**32 - 1
SECRET_KINDS = ("server", "callback", "publish")
MAX_CALLBACK_URL_CHARS = 1024


def check_app_id(app_id: int) -> int:
    if not 1 <= app_id <= MAX_APP_ID:
        raise CloudrecError.invalid_argument(f"app id {app_id} is not in 1..{MAX_APP_ID}")
    return app_id


def check_callback_url(url: str) -> str:
    """An app's callback URL: http(s), at most MAX_CALLBACK_URL_CHARS characters."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("http", "https") or not rest or any(c.isspace() for c in url):
        raise CloudrecError.invalid_argument(f"callback URL {url!r} is not an http(s) URL")
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # a port out of 0..65535 raises
    except ValueError as exc:
        raise CloudrecError.invalid_argument(f"callback URL {url!r}: {exc}") from exc
    if not host:
        raise CloudrecError.invalid_argument(f"callback URL {url!r} names no host")
    if len(url) > MAX_CALLBACK_URL_CHARS:
        raise CloudrecError.invalid_argument(
            f"callback URL is longer than {MAX_CALLBACK_URL_CHARS} characters"
        )
    return url


def new_secret() -> str:
    """A 32-character lower-case hex secret, the shape of a ZEGO ServerSecret."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class App:
    """An app and its secrets, in clear (they are encrypted only at rest).

    ``server_secret`` signs ZEGO requests and is the JoCloud Basic-auth password (user = app id);
    ``callback_secret`` signs callbacks to the app; ``publish_secret`` keys publish tokens.
    ``callback_url``: where the callbacks of tasks go whose dialect's requests name no URL
    (the vendor configures it per project instead), None when the app has none.
    """

    app_id: int
    server_secret: str
    callback_secret: str
    publish_secret: str
    created_at: datetime
    callback_url: str | None = None

    @classmethod
    def create(cls, app_id: int, now: datetime) -> App:
        return cls(
            app_id=check_app_id(app_id),
            server_secret=new_secret(),
            callback_secret=new_secret(),
            publish_secret=new_secret(),
            created_at=now,
        )

    def with_callback_url(self, url: str | None) -> App:
        """This app with ``url`` as its callback URL, checked (None or "": none)."""
        return replace(self, callback_url=check_callback_url(url) if url else None)

    def public_view(self) -> dict[str, object]:
        return {
            "app_id": self.app_id,
            "created_at": self.created_at.isoformat(),
            "callback_url": self.callback_url,
        }

    def credentials(self) -> dict[str, object]:
        return {
            "app_id": self.app_id,
            "server_secret": self.server_secret,
            "callback_secret": self.callback_secret,
            "publish_secret": self.publish_secret,
        }
