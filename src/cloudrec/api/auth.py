"""HTTP Basic authentication of an app: user = app id, password = server secret."""

from __future__ import annotations

import base64
import binascii

from cloudrec.core.apps import App
from cloudrec.core.errors import CloudrecError
from cloudrec.core.service import AppService


def parse_basic(value: str | None) -> tuple[str, str]:
    """``Basic base64(user:password)`` (the ``Basic `` prefix optional) → (user, password)."""
    if not value:
        raise CloudrecError.unauthenticated("no credentials: send HTTP Basic app id:server secret")
    text = value.strip()
    if text[:6].lower() == "basic ":
        text = text[6:].strip()
    try:
        decoded = base64.b64decode(text, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise CloudrecError.unauthenticated("credentials are not base64 of 'appid:secret'") from exc
    user, sep, password = decoded.partition(":")
    if not sep:
        raise CloudrecError.unauthenticated("credentials are not base64 of 'appid:secret'")
    return user, password


def authenticate_basic(apps: AppService, header: str | None, app_id: int) -> App:
    """The app ``app_id`` if ``header`` carries its credentials; raise otherwise."""
    user, password = parse_basic(header)
    if user != str(app_id):
        raise CloudrecError.permission_denied(
            f"credentials are for app {user!r}, not for app {app_id}"
        )
    return apps.authenticate(app_id, password)
