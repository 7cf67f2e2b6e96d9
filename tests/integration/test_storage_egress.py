"""Uploads go through the outbound policy at connect time (issue 11, #5): against a real S3
server (moto) on loopback, real sockets, names mapped by an injected resolver."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cloudrec.core.errors import CloudrecError
from cloudrec.core.tasks import StorageTarget
from cloudrec.outbound import OutboundPolicy, resolve_target
from cloudrec.storage.s3 import S3ObjectStore
from tests.integration.test_outbound_http import pki  # noqa: F401 (a fixture)
from tests.s3server import FaultyS3

PUBLIC_IP = "93.184.215.14"  # a global unicast address; never connected to in these tests
STRICT = OutboundPolicy()  # allow_private_targets off: the default
LAN = OutboundPolicy(allow_private=True)


class Dns:
    """An injected resolver (``getaddrinfo``-shaped): a name → address table, with a record of
    every name asked, in order.  ``answers`` may list several addresses for one name: each
    lookup takes the next (the last one stays), the way a rebinding DNS server answers."""

    def __init__(self, **answers: str | list[str]) -> None:
        self.answers = {k.replace("_", "."): v for k, v in answers.items()}
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[tuple[Any, ...]]:
        self.asked.append(host)
        answer = self.answers.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if isinstance(answer, list):
            address = answer.pop(0) if len(answer) > 1 else answer[0]
        else:
            address = answer
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]


@pytest.fixture(scope="module")
def s3() -> Iterator[FaultyS3]:
    server = FaultyS3().start()
    server.client().create_bucket(Bucket="bkt")
    yield server
    server.stop()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A bare listening socket that never accepts: the kernel completes any TCP connection to
    it, so a pending one shows that a connection was made."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def _no_connection(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


@pytest.fixture
def file(tmp_path):
    path = tmp_path / "f.mp4"
    path.write_bytes(b"\0" * 1000)
    return str(path)


def _s3_target(endpoint: str, vendor: str = "s3", **over: Any) -> StorageTarget:
    return StorageTarget(vendor, endpoint, "bkt", "AKIDTEST", "SECRETTEST", **over)


def test_storage_on_loopback_is_refused_before_any_request_unless_private_targets_are_allowed(
    s3, file
):
    """Issue 11 #5: uploads bypassed the outbound guard; a loopback endpoint was uploaded to
    with allow_private_targets off."""
    target = _s3_target(s3.url, path_style=True)
    before = s3.requests
    with pytest.raises(CloudrecError) as err:
        S3ObjectStore(policy=STRICT).put(target, "strict/f.mp4", file)
    assert err.value.reason == "target_forbidden"
    assert s3.requests == before
    assert S3ObjectStore(policy=LAN).put(target, "lan/f.mp4", file) == f"{s3.url}/bkt/lan/f.mp4"
    assert s3.client().head_object(Bucket="bkt", Key="lan/f.mp4")["ContentLength"] == 1000


def test_a_refused_endpoint_gets_no_tcp_connection_at_all(listener, file):
    port = listener.getsockname()[1]
    with pytest.raises(CloudrecError) as err:
        S3ObjectStore(policy=STRICT).put(_s3_target(f"http://127.0.0.1:{port}"), "f.mp4", file)
    assert err.value.reason == "target_forbidden"
    assert _no_connection(listener)


def test_a_name_that_resolves_to_loopback_is_refused(listener, file):
    port = listener.getsockname()[1]
    for endpoint, dns in [
        (f"http://localhost:{port}", None),  # the system resolver
        (f"http://storage.example.com:{port}", Dns(storage_example_com="127.0.0.1")),
        (f"http://meta.example.com:{port}", Dns(meta_example_com="169.254.169.254")),
    ]:
        store = S3ObjectStore(policy=STRICT, resolver=dns)
        with pytest.raises(CloudrecError) as err:
            store.put(_s3_target(endpoint, path_style=True), "f.mp4", file)
        assert err.value.reason == "target_forbidden", endpoint
    assert _no_connection(listener)


def test_the_virtual_hosted_bucket_name_is_checked_not_only_the_endpoint(listener, file):
    """Issue 11 #5: ``{bucket}.{endpoint}`` was never checked: with a wildcard domain the
    endpoint is public while every bucket name under it points inside."""
    port = listener.getsockname()[1]
    dns = Dns(oss_example_com=PUBLIC_IP, bkt_oss_example_com="127.0.0.1")
    endpoint = f"http://oss.example.com:{port}"
    assert str(resolve_target(endpoint, STRICT, dns).ip) == PUBLIC_IP  # the start check passes
    target = _s3_target(endpoint, vendor="aliyun-oss")
    with pytest.raises(CloudrecError) as err:
        S3ObjectStore(policy=STRICT, resolver=dns).put(target, "f.mp4", file)
    assert err.value.reason == "target_forbidden"
    assert dns.asked[-1] == "bkt.oss.example.com"
    assert _no_connection(listener)


def test_a_name_that_rebinds_to_loopback_after_the_start_check_is_refused_at_connect(
    listener, file
):
    """Issue 11 #5: boto3 resolved the name again when it connected (DNS rebinding)."""
    port = listener.getsockname()[1]
    dns = Dns(minio_example_com=[PUBLIC_IP, "127.0.0.1"])
    endpoint = f"http://minio.example.com:{port}"
    assert str(resolve_target(endpoint, STRICT, dns).ip) == PUBLIC_IP  # StartRecord's check
    with pytest.raises(CloudrecError) as err:
        S3ObjectStore(policy=STRICT, resolver=dns).put(
            _s3_target(endpoint, path_style=True), "f.mp4", file
        )
    assert err.value.reason == "target_forbidden"
    assert _no_connection(listener)


def test_the_checked_address_is_the_one_connected_to(s3, file):
    """The connection goes to the injected resolver's address, not to the system's idea of
    the name (which does not exist at all)."""
    dns = Dns(bkt_nowhere_invalid="127.0.0.1")
    target = _s3_target(f"http://nowhere.invalid:{s3.moto_port}", vendor="cmcc-eos")
    url = S3ObjectStore(policy=LAN, resolver=dns).put(target, "pinned/f.mp4", file)
    assert url == f"http://bkt.nowhere.invalid:{s3.moto_port}/pinned/f.mp4"
    assert dns.asked == ["bkt.nowhere.invalid"]
    assert s3.client().head_object(Bucket="bkt", Key="pinned/f.mp4")["ContentLength"] == 1000


class _Answer(BaseHTTPRequestHandler):
    """Answers every request with the server's ``status``, ``headers`` and ``body``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        server: Any = self.server
        server.requests += 1
        server.hosts.append(self.headers.get("Host"))
        self.send_response(server.status)
        for k, v in server.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(server.body)))
        self.end_headers()
        self.wfile.write(server.body)

    do_PUT = do_POST = do_GET = do_HEAD = _any


def _answering(tls: ssl.SSLContext | None = None) -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    server.daemon_threads = True
    server.status, server.headers, server.body = 200, {"ETag": '"e"'}, b""
    server.requests, server.hosts, server.sni = 0, [], []
    if tls is not None:
        tls.sni_callback = lambda sock, name, ctx: server.sni.append(name)  # type: ignore[assignment]
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def answering() -> Iterator[Any]:
    yield from _answering()


def test_https_goes_to_the_checked_address_with_the_name_kept_for_sni_and_host(pki, file):  # noqa: F811
    """Pinning the address keeps TLS honest: SNI and certificate verification use the name
    the request gave, and a certificate for another name is refused."""
    policy = OutboundPolicy(allow_private=True, ssl_context=pki.client)
    for cert, ok in (("callbacks.test", True), ("other.test", False)):
        for server in _answering(pki.server_for[cert]):
            endpoint = f"https://callbacks.test:{server.server_address[1]}"
            store = S3ObjectStore(policy=policy, resolver=Dns(callbacks_test="127.0.0.1"))
            target = _s3_target(endpoint, path_style=True)
            if ok:
                assert store.put(target, "f.mp4", file) == f"{endpoint}/bkt/f.mp4"
                assert server.hosts == [f"callbacks.test:{server.server_address[1]}"]
            else:
                with pytest.raises(CloudrecError) as err:
                    store.put(target, "f.mp4", file)
                assert err.value.reason == "unreachable"
                assert server.requests == 0
            assert server.sni and set(server.sni) == {"callbacks.test"}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed(answering, listener, file, status):
    """A storage that answers 3xx fails the upload at once: not followed to its Location, and
    not asked again without end by botocore's region redirector (307 did that until Python's
    recursion limit)."""
    elsewhere = f"http://127.0.0.1:{listener.getsockname()[1]}/bkt/f.mp4"
    answering.status, answering.headers = status, {"Location": elsewhere}
    endpoint = f"http://127.0.0.1:{answering.server_address[1]}"
    with pytest.raises(CloudrecError) as err:
        S3ObjectStore(policy=LAN).put(_s3_target(endpoint, path_style=True), "f.mp4", file)
    assert err.value.reason == "target_redirect"
    assert err.value.message.startswith("upload of f.mp4 to bucket bkt at 127.0.0.1:")
    assert elsewhere not in err.value.message
    assert answering.requests == 1
    assert _no_connection(listener)


def test_errors_told_to_the_caller_carry_no_address_no_server_text_and_no_keys(
    answering, listener, file
):
    """Issue 11 #5: the error text of a failed upload (the server's own answer, the address
    connected to) went back to the caller."""
    answering.status = 500
    answering.body = (
        b"<Error><Code>InternalError</Code><Message>db at 10.1.2.3:5432 is down</Message></Error>"
    )
    dns = Dns(store_example_com="127.0.0.1")
    lan = S3ObjectStore(policy=LAN, resolver=dns)
    endpoint = f"http://store.example.com:{answering.server_address[1]}"
    with pytest.raises(CloudrecError) as err:
        lan.put(_s3_target(endpoint, path_style=True), "f.mp4", file)
    assert err.value.reason == "server_error"
    assert err.value.message == (
        f"upload of f.mp4 to bucket bkt at store.example.com:{answering.server_address[1]} "
        "failed: server_error (InternalError)"
    )
    strict = S3ObjectStore(policy=STRICT, resolver=Dns(inside_example_com="10.1.2.3"))
    with pytest.raises(CloudrecError) as err:
        strict.put(_s3_target("http://inside.example.com:9000", path_style=True), "f.mp4", file)
    assert err.value.reason == "target_forbidden"
    for leak in ("10.1.2.3", "127.0.0.1", "private address", "AKIDTEST", "SECRETTEST"):
        assert leak not in err.value.message
