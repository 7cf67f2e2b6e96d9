"""The embedded RTMP server over loopback, driven by a minimal client that can misbehave."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cloudrec.media.ingest import messages
from cloudrec.media.ingest.chunks import ChunkReader, Message
from cloudrec.media.ingest.handshake import PACKET_SIZE
from tests.media import APP, IngestThread, RtmpTestClient

CAPTURE = Path(__file__).parent.parent / "data" / "ffmpeg_publish_c2s.bin"


def captured_media() -> list[Message]:
    """ffmpeg's AVC and AAC sequence headers and first frames, from the captured publish."""
    msgs = ChunkReader().feed(CAPTURE.read_bytes()[1 + 2 * PACKET_SIZE :])
    return [m for m in msgs if m.type_id in (messages.AUDIO, messages.VIDEO)]


@pytest.fixture
def rtmp() -> Iterator[IngestThread]:
    server = IngestThread(play_wait_s=3.0)
    yield server
    server.close()


def connect(rtmp: IngestThread) -> RtmpTestClient:
    return RtmpTestClient("127.0.0.1", rtmp.server.port, APP)


def test_pings_are_answered_and_acknowledgements_follow_the_peers_window(
    rtmp: IngestThread,
) -> None:
    client = connect(rtmp)
    client.send(messages.window_ack_size(1000), 2)
    client.send(messages.UserControl(messages.PING_REQUEST, 4242).message(), 2)
    got = []
    while not any(m.type_id == messages.USER_CONTROL for m in got):
        got.append(client.next_message())
    assert messages.UserControl.parse(got[-1].payload) == messages.UserControl(
        messages.PING_RESPONSE, 4242
    )
    assert client.publish("s1").args[0]["code"] == "NetStream.Publish.Start"
    client.send(Message(messages.VIDEO, 1, 0, b"\x27\x01" + bytes(3000)), 6)
    ack = client.next_message()
    while ack.type_id != messages.ACKNOWLEDGEMENT:
        ack = client.next_message()
    assert messages.parse_u32(ack.payload, "Acknowledgement") >= 1000
    client.close()


def test_stream_meta_comes_from_sequence_headers_when_metadata_is_missing(
    rtmp: IngestThread,
) -> None:
    client = connect(rtmp)
    assert client.publish("s1?uid=9").args[0]["code"] == "NetStream.Publish.Start"
    for msg in captured_media()[:3]:
        client.send(msg, 6 if msg.type_id == messages.VIDEO else 4)
    ((_, _, meta),) = rtmp.gate.wait_for("published")
    assert (meta.video_codec, meta.width, meta.height, meta.fps) == ("h264", 320, 240, None)
    assert (meta.audio_codec, meta.audio_rate, meta.audio_channels) == ("aac", 44100, 1)
    assert rtmp.live()["1/room/s1"].meta == meta
    client.close()
    rtmp.gate.wait_for("unpublished")


def test_a_player_gets_the_headers_and_the_gop_of_a_stream_published_by_hand(
    rtmp: IngestThread,
) -> None:
    media = captured_media()
    publisher = connect(rtmp)
    publisher.publish("s1")
    publisher.send(messages.data_message("@setDataFrame", "onMetaData", {"width": 320.0}), 5)
    for msg in media:
        publisher.send(msg, 6 if msg.type_id == messages.VIDEO else 4)
    rtmp.gate.wait_for("published")
    player = connect(rtmp)
    start = player.play("s1?token=t")
    assert start.args[0]["code"] == "NetStream.Play.Start"
    got = [player.next_message() for _ in range(2 + len(media))]
    access, metadata = got[0], got[1]
    assert messages.parse_metadata(metadata.payload) == {"width": 320.0}
    assert access.payload.startswith(b"\x02\x00\x11|RtmpSampleAccess")
    assert [m.payload for m in got[2:]] == [m.payload for m in media]
    assert rtmp.live()["1/room/s1"].players == 1
    publisher.close()
    rtmp.gate.wait_for("unpublished")
    player.expect_command("NetStream.Play.UnpublishNotify")
    player.close()


def test_garbage_after_the_handshake_closes_only_that_connection(rtmp: IngestThread) -> None:
    client = connect(rtmp)
    client.sock.sendall(b"\x46" + bytes(20))  # format 1 header with no format 0 before it
    client.wait_closed()
    assert any("protocol error" in line for line in rtmp.log.lines)
    other = connect(rtmp)
    assert other.publish("s1").args[0]["code"] == "NetStream.Publish.Start"
    other.close()


def test_media_sent_before_publish_is_dropped_and_never_announced(rtmp: IngestThread) -> None:
    client = connect(rtmp)
    for msg in captured_media():
        client.send(msg, 6)
    client.command("createStream", 2.0)
    client.expect_command("_result")
    time.sleep(0.2)
    assert rtmp.gate.calls == []
    client.close()


def test_close_returns_promptly_while_a_player_waits_for_a_publisher() -> None:
    server = IngestThread(play_wait_s=30.0)
    client = RtmpTestClient("127.0.0.1", server.server.port, APP)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.play, "s1")
        server.gate.wait_for("authorize_play")
        started = time.monotonic()
        server.close()
        assert time.monotonic() - started < 5.0  # not the 30 s play wait
        with pytest.raises((ConnectionError, TimeoutError, OSError)):
            waiting.result(5)
    client.close()


def test_a_publisher_that_goes_silent_is_closed_after_the_idle_timeout() -> None:
    server = IngestThread(idle_timeout_s=0.4)
    try:
        client = RtmpTestClient("127.0.0.1", server.server.port, APP)
        assert client.publish("s1").args[0]["code"] == "NetStream.Publish.Start"
        started = time.monotonic()
        client.wait_closed()
        assert time.monotonic() - started < 5.0  # well before the socket timeout
        assert server.live() == {}
        client.close()
    finally:
        server.close()
