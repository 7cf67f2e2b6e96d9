"""A ZEGO Cloud Recording client as an app's server writes it: base URL + AppId + secret."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
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

    def wait_status(self, task_id: str, status: int, timeout_s: float = 40) -> dict[str, Any]:
        """DescribeRecordStatus until ``Status`` is ``status`` (3: and every file delivered);
        its ``Data``."""
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self.call("DescribeRecordStatus", {"TaskId": task_id})
            data: dict[str, Any] = answer.get("Data", {})
            files = data.get("RecordFiles", [])
            delivered = all(f["Status"] in (3, 4, 5) for f in files)
            if data.get("Status") == status and (status != 3 or delivered):
                return data
            assert time.monotonic() < deadline, answer
            time.sleep(0.3)

    def record(
        self, body: dict[str, Any], seconds: float, during: Callable[[], None] | None = None
    ) -> str:
        """StartRecord, ``seconds`` of recording (``during`` runs meanwhile), StopRecord;
        the TaskId."""
        answer = self.call("StartRecord", body)
        assert answer["Code"] == 0, answer
        task_id: str = answer["Data"]["TaskId"]
        self.wait_status(task_id, 2, timeout_s=20)
        started = time.monotonic()
        if during is not None:
            during()
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        assert self.call("StopRecord", {"TaskId": task_id})["Code"] == 0
        return task_id
