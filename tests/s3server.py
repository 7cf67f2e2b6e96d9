"""A real S3-protocol server on loopback (moto in server mode) behind a proxy that can fail
on demand: answer 500 or 403, hang, or be down, the way a user's storage misbehaves."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import httpx
from moto.server import ThreadedMotoServer

from tests.conftest import free_port


@dataclass
class FaultyS3:
    mode: str = "ok"  # ok, 500, 403, hang
    requests: int = 0
    # The Authorization header of every request (moto accepts any credentials: a test that
    # cares which keys signed a request looks here).
    authorizations: list[str] = field(default_factory=list)
    moto_port: int = field(default_factory=free_port)
    proxy: ThreadingHTTPServer | None = None
    moto: Any = None

    def start(self) -> FaultyS3:
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.moto_port)
        self.moto.start()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                outer.requests += 1
                outer.authorizations.append(self.headers.get("Authorization", ""))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if outer.mode == "hang":
                    time.sleep(30)
                    return
                if outer.mode in ("500", "403"):
                    msg = (
                        b"<Error><Code>InternalError</Code></Error>"
                        if outer.mode == "500"
                        else b"<Error><Code>AccessDenied</Code></Error>"
                    )
                    self.send_response(int(outer.mode))
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                r = httpx.request(
                    self.command,
                    f"http://127.0.0.1:{outer.moto_port}{self.path}",
                    headers=headers,
                    content=body,
                    timeout=30,
                )
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in (
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "content-encoding",
                    ):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        self.proxy = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.proxy.daemon_threads = True
        threading.Thread(target=self.proxy.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.proxy is not None
        return f"http://127.0.0.1:{self.proxy.server_address[1]}"

    def client(self) -> Any:
        """A client straight to moto (not through the faults), for the test's own checks."""
        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.moto_port}",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.shutdown()
        if self.moto is not None:
            self.moto.stop()
