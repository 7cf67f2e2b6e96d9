"""A JoCloud recordoss client, as an app's server would write it: base URL + credentials."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

import httpx

# The document's limit is 10 requests per second per AppID; tests pace themselves below it.
PACE_S = 0.11


@dataclass
class JoCloud:
    base: str
    app_id: int
    secret: str
    last: float = 0.0

    def headers(self, **extra: str) -> dict[str, str]:
        token = base64.b64encode(f"{self.app_id}:{self.secret}".encode()).decode()
        return {
            "AppID": str(self.app_id),
            "Token": f"Basic {token}",
            "Content-Type": "application/json;charset=UTF-8",
            **extra,
        }

    def _pace(self) -> None:
        wait = self.last + PACE_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self.last = time.monotonic()

    def request(
        self,
        method: str,
        uri: str,
        body: Any = None,
        *,
        trace: str = "trace-1",
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        app_path: int | str | None = None,
    ) -> httpx.Response:
        self._pace()
        app = self.app_id if app_path is None else app_path
        url = f"{self.base}/app/{app}/v1/recordoss/{uri}?traceId={trace}"
        return httpx.request(
            method,
            url,
            json=body if raw is None else None,
            content=raw,
            headers=self.headers() if headers is None else headers,
            timeout=15,
        )

    def call(self, method: str, uri: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        r = self.request(method, uri, body, **kw)
        assert r.status_code == 200, (r.status_code, r.text)
        answer: dict[str, Any] = r.json()
        return answer

    def apply(self) -> str:
        answer = self.call("GET", "applyrecord")
        assert answer["code"] == 0, answer
        resid: str = answer["resid"]
        return resid

    def start_body(self, resid: str, room: str, uid: str, **over: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "resid": resid,
            "appid": self.app_id,
            "roomid": room,
            "recordtype": 0,
            "streamtype": 2,
            "uid": uid,
            "storagecfg": {
                "vender": 0,
                "endpoint": "oss-cn-hangzhou.aliyuncs.com",
                "bucket": "recbucket",
                "accesskey": "AKIDEXAMPLE",
                "secretkey": "SKEXAMPLE",
                "fileprefix": ["rec", "day1"],
            },
        }
        body.update(over)
        return body

    def start(self, room: str, uid: str, **over: Any) -> tuple[str, str]:
        resid = self.apply()
        answer = self.call("POST", "startrecord", self.start_body(resid, room, uid, **over))
        assert answer["code"] == 0, answer
        return resid, answer["recordid"]

    def stop(self, resid: str, room: str, record_id: str) -> dict[str, Any]:
        return self.call(
            "POST",
            "stoprecord",
            {"resid": resid, "appid": self.app_id, "roomid": room, "recordid": record_id},
        )
