"""A ZEGO Cloud Recording client as an app's server writes it: base URL + AppId + secret."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx

from cloudrec.api.zego.auth import signature


@dataclass
class Zego:
    base: str
    app_id: int
    secret: str

    def signed(
        self, action: str, ts: int | None = None, nonce: str | None = None, **extra: str
    ) -> dict[str, str]:
        ts = int(time.time()) if ts is None else ts
        nonce = nonce or secrets.token_hex(8)
        return {
            "Action": action,
            "AppId": str(self.app_id),
            "SignatureNonce": nonce,
            "Timestamp": str(ts),
            "SignatureVersion": "2.0",
            "Signature": signature(self.app_id, nonce, self.secret, ts),
            **extra,
        }

    def call(
        self,
        action: str,
        body: dict[str, Any] | None = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str | None = "application/json",
        method: str = "POST",
    ) -> dict[str, Any]:
        import json

        headers = {"Content-Type": content_type} if content_type else {}
        r = httpx.request(
            method,
            self.base + "/",
            params=params or self.signed(action),
            content=json.dumps(body or {}).encode(),
            headers=headers,
            timeout=15,
        )
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer
