"""Apps: the tenants of cloudrec, each with its own credentials."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from cloudrec.core.errors import CloudrecError

# ZEGO AppIDs are unsigned 32-bit numbers; JoCloud appids fit too.
MAX_APP_ID = 2**32 - 1
SECRET_KINDS = ("server", "callback", "publish")


def check_app_id(app_id: int) -> int:
    if not 1 <= app_id <= MAX_APP_ID:
        raise CloudrecError.invalid_argument(f"app id {app_id} is not in 1..{MAX_APP_ID}")
    return app_id


def new_secret() -> str:
    """A 32-character lower-case hex secret, the shape of a ZEGO ServerSecret."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class App:
    """An app and its secrets, in clear (they are encrypted only at rest).

    ``server_secret`` signs ZEGO requests and is the JoCloud Basic-auth password (user = app id);
    ``callback_secret`` signs callbacks to the app; ``publish_secret`` keys publish tokens.
    """

    app_id: int
    server_secret: str
    callback_secret: str
    publish_secret: str
    created_at: datetime

    @classmethod
    def create(cls, app_id: int, now: datetime) -> App:
        return cls(
            app_id=check_app_id(app_id),
            server_secret=new_secret(),
            callback_secret=new_secret(),
            publish_secret=new_secret(),
            created_at=now,
        )

    def public_view(self) -> dict[str, object]:
        return {"app_id": self.app_id, "created_at": self.created_at.isoformat()}

    def credentials(self) -> dict[str, object]:
        return {
            "app_id": self.app_id,
            "server_secret": self.server_secret,
            "callback_secret": self.callback_secret,
            "publish_secret": self.publish_secret,
        }
