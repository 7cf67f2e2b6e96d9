"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with a key from settings.

The key is ``settings.secret_key`` (``CLOUDREC_SECRET_KEY``), or else the file
``<data_dir>/secret.key``, created with mode 0600 the first time.  Lose the key and the stored
secrets cannot be read back; back it up with the database.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from cloudrec.core.errors import CloudrecError


class FernetSecretBox:
    def __init__(self, key: str | bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise CloudrecError.invalid_argument(
                "secret_key is not a Fernet key (32 url-safe base64-encoded bytes)"
            ) from exc

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise CloudrecError.internal(
                "a stored secret cannot be decrypted: wrong secret_key for this database"
            ) from exc


def load_key(configured: str, data_dir: Path) -> str:
    """The configured key, or the data dir's key file (made on first use)."""
    if configured:
        return configured
    path = data_dir / "secret.key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key
