"""An Agora Cloud Recording client, as an app's server would write it: base URL + customer
ID and secret (here the app id and its server secret)."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Agora:
    base: str
    app_id: int
    secret: str

    def headers(self) -> dict[str, str]:
        credentials = base64.b64encode(f"{self.app_id}:{self.secret}".encode()).decode()
        return {"Authorization": f"Basic {credentials}", "Content-Type": "application/json"}

    def url(self, path: str) -> str:
        return f"{self.base}/v1/apps/{self.app_id}/cloud_recording/{path.lstrip('/')}"

    def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(method, self.url(path), json=body, headers=self.headers(), timeout=40)

    def ok(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        r = self.request(method, path, body)
        assert r.status_code == 200, (r.status_code, r.text)
        answer: dict[str, Any] = r.json()
        return answer

    def acquire(self, cname: str, uid: str) -> str:
        body = {"cname": cname, "uid": uid, "clientRequest": {}}
        rid: str = self.ok("POST", "acquire", body)["resourceId"]
        return rid

    def start(self, rid: str, mode: str, body: dict[str, Any]) -> str:
        sid: str = self.ok("POST", f"resourceid/{rid}/mode/{mode}/start", body)["sid"]
        return sid

    def query(self, rid: str, sid: str, mode: str) -> httpx.Response:
        return self.request("GET", f"resourceid/{rid}/sid/{sid}/mode/{mode}/query")

    def stop(self, rid: str, sid: str, mode: str, cname: str, uid: str) -> httpx.Response:
        body = {"cname": cname, "uid": uid, "clientRequest": {}}
        return self.request("POST", f"resourceid/{rid}/sid/{sid}/mode/{mode}/stop", body)

    def wait_query(
        self, rid: str, sid: str, mode: str, check: Any, timeout_s: float = 30
    ) -> dict[str, Any]:
        """The query's serverResponse once ``check`` holds for it."""
        deadline = time.monotonic() + timeout_s
        while True:
            r = self.query(rid, sid, mode)
            assert r.status_code == 200, r.text
            server: dict[str, Any] = r.json()["serverResponse"]
            if check(server):
                return server
            assert time.monotonic() < deadline, server
            time.sleep(0.3)


def ncs_signatures_verify(secret: str, request_body: bytes, headers: dict[str, str]) -> bool:
    """A receiver's check of an NCS callback, as ncs-signature-verification-python.mdx writes
    it (its elided ``import`` lines are hmac and hashlib; its ``secret`` and ``request_body``
    are bytes in Python 3: "a binary byte array before deserialization"), header names
    looked up case-insensitively as HTTP's are."""
    import hashlib
    import hmac

    lower = {k.lower(): v for k, v in headers.items()}
    secret_bytes = secret.encode()
    signature = hmac.new(secret_bytes, request_body, hashlib.sha1).hexdigest()
    signature2 = hmac.new(secret_bytes, request_body, hashlib.sha256).hexdigest()
    return (
        lower.get("agora-signature") == signature and lower.get("agora-signature-v2") == signature2
    )
