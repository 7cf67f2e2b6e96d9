"""The embedded RTMP server over loopback, with Debian's ffmpeg publishing and PyAV playing.

The server runs on its own event loop in a background thread (as ``cloudrec serve`` runs it on
its loop); a fake gate records what the core would have been told.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import pytest

from cloudrec.core.errors import CloudrecError
from cloudrec.core.rooms import PublishRequest
from tests.media import (
    APP,
    IngestThread,
    RtmpTestClient,
    pull_with_ffmpeg,
    pull_with_pyav,
    start_publisher,
    wait_publisher,
)


@pytest.fixture
def rtmp() -> Iterator[IngestThread]:
    server = IngestThread(play_wait_s=3.0)
    yield server
    server.close()


def test_a_published_stream_is_announced_with_its_metadata_and_pulled_by_pyav_and_ffmpeg(
    rtmp: IngestThread, tmp_path: Path
) -> None:
    publisher = start_publisher(
        rtmp.url("s1?uid=7&token=abc"), duration_s=4.0, sample_rate=48000, channels=2
    )
    ((_, req, meta),) = rtmp.gate.wait_for("published")
    assert req == PublishRequest(APP, "s1?uid=7&token=abc", "127.0.0.1")
    assert (meta.video_codec, meta.audio_codec) == ("h264", "aac")
    assert (meta.width, meta.height, meta.fps) == (320, 240, 25.0)
    assert (meta.audio_rate, meta.audio_channels) == (48000, 2)
    assert meta.encoder is not None
    assert meta.encoder.startswith("Lavf")
    assert list(rtmp.live()) == ["1/room/s1"]
    time.sleep(0.5)  # join in the middle of a GOP: the cache must start at its key frame

    with ThreadPoolExecutor(2) as pool:
        pyav = pool.submit(pull_with_pyav, rtmp.url("s1?token=p"), video_frames=20)
        cli = pool.submit(pull_with_ffmpeg, rtmp.url("s1"), tmp_path / "out.flv", duration_s=1.5)
        pulled, copied = pyav.result(20), cli.result(30)

    assert pulled.first_video_packet_key
    assert pulled.first_video_key
    assert (pulled.width, pulled.height, pulled.fps) == (320, 240, 25.0)
    assert (pulled.video_codec, pulled.audio_codec) == ("h264", "aac")
    assert (pulled.audio_rate, pulled.audio_channels) == (48000, 2)
    assert pulled.video_frames >= 20
    assert copied.returncode == 0, copied.stderr.decode()
    with av.open(str(tmp_path / "out.flv")) as probe:
        video, audio = probe.streams.video[0], probe.streams.audio[0]
        assert (video.codec_context.name, video.width, video.height) == ("h264", 320, 240)
        assert (audio.codec_context.name, audio.sample_rate) == ("aac", 48000)
        first = next(p for p in probe.demux(video) if p.size)
        assert first.is_keyframe
        assert sum(1 for p in probe.demux(video) if p.size) >= 20
    plays = rtmp.gate.named("authorize_play")
    assert sorted(c[1].stream_name for c in plays) == ["s1", "s1?token=p"]

    code, err = wait_publisher(publisher)
    assert code == 0, err
    ((_, gone),) = rtmp.gate.wait_for("unpublished")
    assert gone == req
    assert rtmp.live() == {}


def test_a_refused_publish_fails_in_ffmpeg_and_is_never_announced(rtmp: IngestThread) -> None:
    rtmp.gate.refuse_publish = CloudrecError.permission_denied("token expired")
    code, err = wait_publisher(start_publisher(rtmp.url("s1?token=old"), duration_s=2.0), 10)
    assert code != 0
    assert "token expired" in err
    assert len(rtmp.gate.named("authorize_publish")) == 1
    assert rtmp.gate.named("published") == []
    assert rtmp.gate.named("unpublished") == []
    assert any("refused: token expired" in line for line in rtmp.log.lines)
    assert rtmp.live() == {}


def test_a_refused_publish_answers_bad_name_or_denied_by_error_kind(rtmp: IngestThread) -> None:
    rtmp.gate.refuse_publish = CloudrecError.invalid_argument("no such room")
    client = RtmpTestClient("127.0.0.1", rtmp.server.port, APP)
    status = client.publish("s1")
    assert (status.args[0]["code"], status.args[0]["level"]) == (
        "NetStream.Publish.BadName",
        "error",
    )
    assert status.args[0]["description"] == "no such room"
    client.close()
    rtmp.gate.refuse_publish = CloudrecError.unauthenticated("bad token")
    client = RtmpTestClient("127.0.0.1", rtmp.server.port, APP)
    assert client.publish("s1").args[0]["code"] == "NetStream.Publish.Denied"
    client.close()


def test_a_publisher_killed_mid_stream_is_unpublished_once(rtmp: IngestThread) -> None:
    publisher = start_publisher(rtmp.url("s1"), duration_s=10.0)
    rtmp.gate.wait_for("published")
    publisher.send_signal(signal.SIGKILL)
    wait_publisher(publisher)
    rtmp.gate.wait_for("unpublished")
    time.sleep(0.2)
    assert len(rtmp.gate.named("unpublished")) == 1
    assert rtmp.live() == {}


def test_a_second_publish_of_a_live_stream_key_is_refused(rtmp: IngestThread) -> None:
    first = start_publisher(rtmp.url("s1"), duration_s=10.0)
    rtmp.gate.wait_for("published")
    code, err = wait_publisher(start_publisher(rtmp.url("s1?token=other"), duration_s=2.0), 10)
    assert code != 0
    assert "already publishing" in err
    assert first.poll() is None
    assert len(rtmp.gate.named("published")) == 1
    first.kill()
    wait_publisher(first)
    rtmp.gate.wait_for("unpublished")


def test_closing_the_server_disconnects_publishers_and_players_and_unpublishes(
    rtmp: IngestThread,
) -> None:
    publisher = start_publisher(rtmp.url("s1"), duration_s=10.0)
    rtmp.gate.wait_for("published")
    player = RtmpTestClient("127.0.0.1", rtmp.server.port, APP)
    assert player.play("s1").args[0]["code"] == "NetStream.Play.Start"
    rtmp.closed = True
    rtmp.call(rtmp.server.close)
    assert len(rtmp.gate.named("unpublished")) == 1  # awaited before close() returned
    code, _ = wait_publisher(publisher, 5)
    assert code != 0
    player.wait_closed()
    player.close()


def test_a_player_that_comes_before_the_publisher_waits_for_it(rtmp: IngestThread) -> None:
    with ThreadPoolExecutor(1) as pool:
        pulled = pool.submit(pull_with_pyav, rtmp.url("s1"), video_frames=10)
        time.sleep(0.5)
        publisher = start_publisher(rtmp.url("s1"), duration_s=2.0)
        result = pulled.result(20)
    assert result.first_video_key
    assert result.video_frames >= 10
    wait_publisher(publisher)


def test_a_player_of_a_stream_that_never_comes_gets_stream_not_found() -> None:
    server = IngestThread(play_wait_s=0.3)
    try:
        client = RtmpTestClient("127.0.0.1", server.server.port, APP)
        status = client.play("missing")
        assert status.args[0]["code"] == "NetStream.Play.StreamNotFound"
        client.close()
    finally:
        server.close()


def test_a_refused_player_gets_play_failed_and_pyav_fails_to_open(rtmp: IngestThread) -> None:
    rtmp.gate.refuse_play = CloudrecError.permission_denied("bad play token")
    client = RtmpTestClient("127.0.0.1", rtmp.server.port, APP)
    status = client.play("s1?token=bad")
    assert (status.args[0]["code"], status.args[0]["description"]) == (
        "NetStream.Play.Failed",
        "bad play token",
    )
    client.close()
    with pytest.raises(av.error.FFmpegError):
        av.open(rtmp.url("s1"), options={"rw_timeout": "3000000"})


def test_a_player_that_stops_reading_does_not_hold_up_the_publisher() -> None:
    """The kernel's socket buffers absorb a few MB on loopback, so the skip-to-key-frame
    policy itself is tested with a fake transport in tests/unit/test_rtmp_live.py."""
    server = IngestThread(player_buffer_bytes=32 * 1024)
    try:
        publisher = start_publisher(server.url("s1"), duration_s=3.0, video_kbps=4000)
        server.gate.wait_for("published")
        stalled = RtmpTestClient("127.0.0.1", server.server.port, APP, rcvbuf=4096)
        assert stalled.play("s1").args[0]["code"] == "NetStream.Play.Start"
        started = time.monotonic()
        code, err = wait_publisher(publisher)
        assert code == 0, err
        assert (
            time.monotonic() - started < 10.0
        )  # 3 s of media; a blocked publisher would wait 30 s
        server.gate.wait_for("unpublished")
        stalled.close()
    finally:
        server.close()
