"""The embedded RTMP server's bounds over loopback (issue 11, item 2): the time to authorise,
connections per address and in all, unread replies; and real publishers still pass them."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cloudrec.media.ingest import messages
from cloudrec.media.ingest.chunks import encode_message
from cloudrec.media.ingest.limits import IngestLimits
from tests.media import APP, IngestThread, RtmpTestClient, wait_publisher


def ingest(**limits: Any) -> IngestThread:
    return IngestThread(play_wait_s=3.0, limits=IngestLimits(**limits))


@pytest.fixture
def rtmp() -> Iterator[IngestThread]:
    server = IngestThread(play_wait_s=3.0)
    yield server
    server.close()


def client(server: IngestThread, source: str | None = None) -> RtmpTestClient:
    return RtmpTestClient("127.0.0.1", server.server.port, APP, source=source)


def pong(c: RtmpTestClient, value: int) -> bool:
    c.send(messages.UserControl(messages.PING_REQUEST, value).message(), 2)
    while True:
        msg = c.next_message()
        if msg.type_id == messages.USER_CONTROL:
            event = messages.UserControl.parse(msg.payload)
            if event == messages.UserControl(messages.PING_RESPONSE, value):
                return True


def refusals(server: IngestThread) -> list[dict[str, object]]:
    return server.log.fields("rtmp.refused")


def wait_refusals(
    server: IngestThread, count: int, timeout_s: float = 5.0
) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    while len(refusals(server)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return refusals(server)


def send_until_closed(c: RtmpTestClient, burst: bytes, limit: int) -> bool:
    """Send ``burst`` again and again; True if the server closed the connection before
    ``limit`` bytes were sent."""
    sent = 0
    try:
        while sent < limit:
            c.sock.sendall(burst)
            sent += len(burst)
    except ConnectionError:
        return True
    return False


def test_a_connection_that_is_not_authorised_in_time_is_closed_and_an_authorised_one_stays() -> (
    None
):
    """Bug (issue 11): a connection could hold its buffers forever without authenticating
    (it only had to send something every idle_timeout_s)."""
    server = ingest(auth_timeout_s=0.5)
    try:
        publisher = client(server)
        assert publisher.publish("s1").args[0]["code"] == "NetStream.Publish.Start"
        idle = client(server)  # connected, never publishes: keeps talking, though
        assert pong(idle, 1)
        idle.wait_closed()
        # The publisher was accepted before the idle client and its deadline is past too.
        assert pong(publisher, 2)
        (refusal,) = wait_refusals(server, 1)
        assert refusal["limit"] == "auth_timeout_s"
        assert refusal["reason"] == "no publish or play accepted within 0.5 s"
        publisher.close()
        idle.close()
    finally:
        server.close()


def test_a_connection_whose_publish_ended_must_publish_again_in_time() -> None:
    server = ingest(auth_timeout_s=0.5)
    try:
        c = client(server)
        assert c.publish("s1").args[0]["code"] == "NetStream.Publish.Start"
        c.command("deleteStream", 0.0, None, 1.0)
        assert pong(c, 3)  # answered after deleteStream: the publish has ended
        assert server.live() == {}
        c.wait_closed()
        (refusal,) = wait_refusals(server, 1)
        assert refusal["limit"] == "auth_timeout_s"
        c.close()
    finally:
        server.close()


def test_connections_over_the_per_address_cap_are_refused_and_admitted_again_once_one_ends() -> (
    None
):
    """Bug (issue 11): one address could open any number of connections."""
    server = ingest(max_connections_per_address=2)
    try:
        first, second = client(server, "127.0.0.2"), client(server, "127.0.0.2")
        with pytest.raises(ConnectionError):
            client(server, "127.0.0.2")
        other = client(server, "127.0.0.3")  # another address has its own count
        (refusal,) = wait_refusals(server, 1)
        assert refusal["limit"] == "max_connections_per_address"
        assert refusal["reason"] == "2 connections from 127.0.0.2 are open"
        first.close()
        deadline = time.monotonic() + 5.0
        while True:  # the server sees the close soon; until then the cap still holds
            try:
                third = client(server, "127.0.0.2")
                break
            except ConnectionError:
                assert time.monotonic() < deadline
        assert third.publish("s1").args[0]["code"] == "NetStream.Publish.Start"
        for c in (second, other, third):
            c.close()
    finally:
        server.close()


def test_the_total_cap_counts_every_address_and_loopback_is_exempt_only_per_address() -> None:
    server = ingest(max_connections=3, max_connections_per_address=1)
    try:
        pulls = [client(server), client(server)]  # 127.0.0.1: the recorders' pull address
        remote = client(server, "127.0.0.2")
        with pytest.raises(ConnectionError):
            client(server, "127.0.0.3")
        (refusal,) = wait_refusals(server, 1)
        assert refusal["limit"] == "max_connections"
        assert refusal["reason"] == "3 connections are open"
        for c in (*pulls, remote):
            c.close()
    finally:
        server.close()


def test_a_client_that_never_reads_its_replies_is_closed_at_the_backlog_cap() -> None:
    """Bug (issue 11): pings answered to a client that never reads piled up in the server."""
    server = ingest(max_reply_backlog_bytes=4096)
    try:
        c = RtmpTestClient("127.0.0.1", server.server.port, APP, rcvbuf=4096)
        ping = messages.UserControl(messages.PING_REQUEST, 9).message()
        burst = encode_message(ping, 2, 128) * 4096
        assert send_until_closed(c, burst, 32 * 1024 * 1024)  # far beyond every socket buffer
        (refusal,) = wait_refusals(server, 1)
        assert refusal["limit"] == "max_reply_backlog_bytes"
        c.close()
    finally:
        server.close()


def test_ffmpeg_publishes_1280x720_with_key_frames_of_megabytes_and_a_player_gets_them(
    rtmp: IngestThread,
) -> None:
    """Legit media is not caught by the bounds: lossless noise makes every frame ~1.7 MB,
    26 times the 64 KiB a message may have before the publish is accepted."""
    url = rtmp.url("big")
    publisher = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
         "-f", "lavfi", "-i", "color=c=gray:s=1280x720:r=5:d=3,noise=alls=100:allf=t+u",
         "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv420p",
         "-g", "5", "-f", "flv", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        rtmp.gate.wait_for("published")
        player = client(rtmp)
        assert player.play("big").args[0]["code"] == "NetStream.Play.Start"
        sizes = []
        while len(sizes) < 3:
            msg = player.next_message()
            if msg.type_id == messages.VIDEO and len(msg.payload) > 1000:
                sizes.append(len(msg.payload))
        assert min(sizes) > 1024 * 1024
        player.close()
    finally:
        code, err = wait_publisher(publisher, timeout_s=20)
    assert code == 0, err
    rtmp.gate.wait_for("unpublished")
    assert refusals(rtmp) == []
