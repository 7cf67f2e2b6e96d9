"""Outbound calls against real HTTP(S) servers on loopback: pinning, redirects, timeouts, caps.

Every server here listens on 127.0.0.1; nothing is sent anywhere else.
"""

from __future__ import annotations

import datetime
import http.server
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloudrec.core.errors import CloudrecError, Kind
from cloudrec.outbound import OutboundPolicy, fetch, post_json

PRIVATE_OK = OutboundPolicy(allow_private=True, connect_timeout_s=2.0, read_timeout_s=2.0)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    port: int
    requests: list[Seen] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)


@contextmanager
def serve(
    status: int = 200,
    body: bytes = b"ok",
    headers: dict[str, str] | None = None,
    *,
    chunks: int = 1,
    tls: ssl.SSLContext | None = None,
) -> Iterator[Server]:
    """Run a one-answer HTTP server on 127.0.0.1 for the duration of a fixture.

    It answers every request with ``status``, ``headers`` and ``body`` repeated ``chunks`` times
    (without a Content-Length when ``chunks > 1``, so the client cannot refuse up front).
    """
    server_state = Server(port=0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            server_state.requests.append(
                Seen(self.command, self.path, dict(self.headers), self.rfile.read(length))
            )
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if chunks == 1:
                self.send_header("Content-Length", str(len(body)))
            else:
                self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(chunks):
                    self.wfile.write(body)
            except OSError:  # the client hung up: expected when it enforces a cap
                pass

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        tls.sni_callback = lambda sock, name, ctx: server_state.sni.append(name)  # type: ignore[assignment]
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    server_state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def resolving_to(address: str):
    def resolve(host: str, port: int):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    return resolve


@pytest.fixture
def receiver() -> Iterator[Server]:
    with serve(200, b'{"code":0}', {"Content-Type": "application/json; charset=utf-8"}) as server:
        yield server


@pytest.fixture
def redirect_target() -> Iterator[Server]:
    with serve(200, b"you should not be here") as server:
        yield server


@pytest.fixture
def redirector(redirect_target: Server) -> Iterator[Server]:
    location = f"http://127.0.0.1:{redirect_target.port}/internal"
    with serve(302, b"", {"Location": location}) as server:
        yield server


def error_of(call) -> CloudrecError:
    with pytest.raises(CloudrecError) as info:
        call()
    return info.value


def test_a_post_arrives_with_the_json_body_and_the_original_host_header(receiver):
    response = post_json(
        f"http://callbacks.example:{receiver.port}/hook?task=1",
        {"event": "recording_started", "id": "t-1", "name": "å"},
        {"X-Signature": "abc"},
        PRIVATE_OK,
        resolver=resolving_to("127.0.0.1"),
    )
    assert (response.status, response.text) == (200, '{"code":0}')
    [seen] = receiver.requests
    assert (seen.method, seen.path) == ("POST", "/hook?task=1")
    assert seen.headers["Host"] == f"callbacks.example:{receiver.port}"
    assert seen.headers["X-Signature"] == "abc"
    assert seen.headers["Content-Type"] == "application/json"
    assert json.loads(seen.body) == {"event": "recording_started", "id": "t-1", "name": "å"}


def test_a_4xx_answer_to_a_post_is_returned_for_the_caller_to_judge():
    with serve(404, b"no such hook") as server:
        response = post_json(f"http://127.0.0.1:{server.port}/", {}, {}, PRIVATE_OK)
        assert (response.status, response.text) == (404, "no such hook")


def test_a_redirect_is_refused_and_never_followed(redirector, redirect_target):
    error = error_of(
        lambda: post_json(f"http://127.0.0.1:{redirector.port}/hook", {"a": 1}, {}, PRIVATE_OK)
    )
    assert (error.kind, error.reason) == (Kind.UNAVAILABLE, "target_redirect")
    assert len(redirector.requests) == 1
    assert redirect_target.requests == []

    error = error_of(lambda: fetch(f"http://127.0.0.1:{redirector.port}/logo.png", PRIVATE_OK))
    assert error.reason == "target_redirect"
    assert redirect_target.requests == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.1", "0x7f000001"])
def test_loopback_is_refused_before_any_connection_with_the_default_policy(receiver, host):
    url = f"http://{host}:{receiver.port}/hook"
    error = error_of(lambda: post_json(url, {"a": 1}, {}, OutboundPolicy()))
    assert (error.kind, error.reason) == (Kind.INVALID_ARGUMENT, "target_forbidden")
    error = error_of(lambda: fetch(url, OutboundPolicy()))
    assert error.reason == "target_forbidden"
    assert receiver.requests == []


def test_a_server_that_never_answers_costs_about_the_read_timeout():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # connections complete in the backlog; nobody ever reads or answers
        port = listener.getsockname()[1]
        policy = OutboundPolicy(allow_private=True, connect_timeout_s=0.5, read_timeout_s=0.5)
        started = time.monotonic()
        error = error_of(lambda: post_json(f"http://127.0.0.1:{port}/", {}, {}, policy))
        elapsed = time.monotonic() - started
    assert (error.kind, error.reason) == (Kind.UNAVAILABLE, "timeout")
    assert elapsed < 2.0


def test_a_closed_port_is_unavailable_with_connect_failed():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        error = error_of(lambda: fetch(f"http://127.0.0.1:{port}/", PRIVATE_OK))
    assert (error.kind, error.reason) == (Kind.UNAVAILABLE, "connect_failed")


MIB = 1024 * 1024


def test_fetch_refuses_a_declared_body_over_the_cap():
    with serve(200, b"x" * (10 * MIB)) as server:
        error = error_of(lambda: fetch(f"http://127.0.0.1:{server.port}/big", PRIVATE_OK, MIB))
        assert (error.kind, error.reason) == (Kind.UNAVAILABLE, "too_large")


def test_fetch_stops_reading_an_undeclared_body_at_the_cap():
    # 10 MiB in 64 KiB writes, with no Content-Length
    with serve(200, b"x" * 65536, chunks=160) as server:
        error = error_of(lambda: fetch(f"http://127.0.0.1:{server.port}/big", PRIVATE_OK, MIB))
        assert error.reason == "too_large"


def test_fetch_returns_a_body_within_the_cap_and_refuses_a_non_2xx_answer():
    with serve(200, b"\x89PNG" + b"\0" * 1000) as server:
        assert fetch(f"http://127.0.0.1:{server.port}/logo.png", PRIVATE_OK, MIB)[:4] == b"\x89PNG"
    with serve(500, b"oops") as server:
        error = error_of(lambda: fetch(f"http://127.0.0.1:{server.port}/", PRIVATE_OK))
        assert (error.kind, error.reason) == (Kind.UNAVAILABLE, "http_status")


# --- https: the connection goes to the pinned IP, TLS speaks to the original name --------------


@dataclass
class Pki:
    client: ssl.SSLContext
    server_for: dict[str, ssl.SSLContext]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA and server certificates for ``callbacks.test`` and ``other.test``."""
    tmp: Path = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudrec test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    servers = {}
    for name in ("callbacks.test", "other.test"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        cert_file, key_file = tmp / f"{name}.pem", tmp / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert_file, key_file)
        servers[name] = server
    return Pki(client, servers)


def test_https_to_a_pinned_ip_sends_the_original_name_for_sni_and_verification(pki):
    policy = OutboundPolicy(allow_private=True, read_timeout_s=2.0, ssl_context=pki.client)
    with serve(200, b"secure", tls=pki.server_for["callbacks.test"]) as server:
        response = post_json(
            f"https://callbacks.test:{server.port}/hook",
            {"a": 1},
            {},
            policy,
            resolver=resolving_to("127.0.0.1"),
        )
        assert (response.status, response.text) == (200, "secure")
        assert server.sni == ["callbacks.test"]
        assert server.requests[0].headers["Host"] == f"callbacks.test:{server.port}"


def test_https_refuses_a_certificate_for_another_name(pki):
    policy = OutboundPolicy(allow_private=True, read_timeout_s=2.0, ssl_context=pki.client)
    with serve(200, b"impostor", tls=pki.server_for["other.test"]) as server:
        error = error_of(
            lambda: fetch(
                f"https://callbacks.test:{server.port}/",
                policy,
                resolver=resolving_to("127.0.0.1"),
            )
        )
        assert (error.kind, error.reason) == (Kind.UNAVAILABLE, "connect_failed")
        assert server.requests == []


def test_the_name_is_resolved_once_and_the_checked_address_is_the_one_connected_to(receiver):
    """No DNS rebinding window: a second lookup would answer a different (public) address."""
    answers = ["127.0.0.1", "192.0.2.1"]

    def rebinding(host: str, port: int):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers.pop(0), port))]

    response = post_json(
        f"http://rebind.example:{receiver.port}/", {}, {}, PRIVATE_OK, resolver=rebinding
    )
    assert response.status == 200
    assert answers == ["192.0.2.1"]  # asked once
    assert len(receiver.requests) == 1  # and the request reached 127.0.0.1


def test_a_server_dripping_one_byte_at_a_time_is_cut_off_at_the_total_timeout():
    """Each read arrives within the read timeout, so only a whole-response deadline stops it."""
    stop = threading.Event()

    def drip(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            while not stop.wait(0.05):
                try:
                    conn.sendall(b"x")
                except OSError:
                    return

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        thread = threading.Thread(target=drip, args=(listener,), daemon=True)
        thread.start()
        policy = OutboundPolicy(allow_private=True, read_timeout_s=1.0, total_timeout_s=0.3)
        started = time.monotonic()
        error = error_of(lambda: fetch(f"http://127.0.0.1:{listener.getsockname()[1]}/", policy))
        elapsed = time.monotonic() - started
        stop.set()
        thread.join(2)
    assert (error.kind, error.reason) == (Kind.UNAVAILABLE, "timeout")
    assert elapsed < 1.5
