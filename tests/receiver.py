"""A real HTTP callback receiver on loopback: records what it gets; can be down or a
blackhole (accepts, never answers)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.mode = "ok"  # ok, 500, blackhole
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if outer.mode == "blackhole":
                    time.sleep(60)
                    return
                if outer.mode == "500":
                    self.send_response(500)
                    self.end_headers()
                    return
                outer.received.append((dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/cb"

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(b) for _, b in self.received]

    def events(self) -> list[str]:
        return [b["context"]["msgname"] for b in self.bodies()]

    def wait_for(self, event: str, timeout_s: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for b in self.bodies():
                if b["context"]["msgname"] == event:
                    return b
            time.sleep(0.1)
        raise AssertionError(f"no {event} callback; got {self.events()}")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/cb"
