"""A live stream's GOP cache and fan-out, and the slow-player policy, with a fake transport."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cloudrec.core.rooms import PublishRequest
from cloudrec.media.ingest import messages
from cloudrec.media.ingest.chunks import ChunkReader, Message
from cloudrec.media.ingest.live import LiveStream, Player

AVC_HEADER = b"\x17\x00\x00\x00\x00\x01\x64\x00\x0d"
AAC_HEADER = b"\xaf\x00\x12\x08"


def key(ts: int) -> Message:
    return Message(messages.VIDEO, 1, ts, b"\x17\x01\x00\x00\x00key")


def inter(ts: int) -> Message:
    return Message(messages.VIDEO, 1, ts, b"\x27\x01\x00\x00\x00inter")


def sound(ts: int) -> Message:
    return Message(messages.AUDIO, 1, ts, b"\xaf\x01sound")


class FakeTransport(asyncio.WriteTransport):
    """Collects writes; ``buffered`` is what ``get_write_buffer_size`` reports."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.buffered = 0
        self.aborted = False

    def write(self, data: Any) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True

    def messages(self) -> list[Message]:
        reader = ChunkReader()
        reader.chunk_size = 4096
        return reader.feed(b"".join(self.writes))


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_player(
    transport: FakeTransport, stream_id: int = 1, clock: FakeClock | None = None
) -> Player:
    return Player(
        transport,
        stream_id,
        4096,
        buffer_limit=1000,
        stall_timeout_s=30.0,
        logger=logging.getLogger("test"),
        label="p",
        clock=clock or FakeClock(),
    )


def started_stream() -> LiveStream:
    stream = LiveStream(PublishRequest("1/room", "s1", "127.0.0.1"))
    stream.on_metadata({"width": 320.0}, 0)
    for msg in [
        Message(messages.VIDEO, 1, 0, AVC_HEADER),
        Message(messages.AUDIO, 1, 0, AAC_HEADER),
        key(0),
        sound(10),
        inter(40),
        key(1000),
        sound(1010),
        inter(1040),
    ]:
        stream.on_media(msg)
    return stream


def test_a_new_player_gets_metadata_headers_then_media_from_the_last_key_frame() -> None:
    stream = started_stream()
    transport = FakeTransport()
    stream.attach("p", make_player(transport, stream_id=3))
    got = transport.messages()
    assert [m.type_id for m in got] == [18, 9, 8, 9, 8, 9]
    assert messages.parse_metadata(got[0].payload) == {"width": 320.0}
    assert [m.payload for m in got[1:3]] == [AVC_HEADER, AAC_HEADER]
    assert [m.timestamp for m in got] == [1000, 1000, 1000, 1000, 1010, 1040]
    assert got[3].payload == key(1000).payload
    assert {m.stream_id for m in got} == {3}


def test_media_is_chunked_once_and_the_same_bytes_go_to_every_player() -> None:
    stream = started_stream()
    a, b = FakeTransport(), FakeTransport()
    stream.attach("a", make_player(a))
    stream.attach("b", make_player(b))
    a.writes.clear()
    b.writes.clear()
    stream.on_media(inter(1080))
    assert a.writes[0] is b.writes[0]
    assert a.messages() == [inter(1080)]


def test_a_slow_player_skips_to_the_next_key_frame_once_its_buffer_drains() -> None:
    stream = started_stream()
    transport = FakeTransport()
    player = make_player(transport)
    stream.attach("p", player)
    transport.writes.clear()
    transport.buffered = 5000  # above the 1000-byte limit
    stream.on_media(inter(1080))
    stream.on_media(sound(1090))
    transport.buffered = 200  # drained below half the limit: wait for a key frame
    stream.on_media(inter(1120))
    stream.on_media(key(2000))
    stream.on_media(sound(2010))
    assert [m.timestamp for m in transport.messages()] == [2000, 2010]
    assert player.dropped == 3
    assert player.skipping_since is None


def test_a_player_that_stays_behind_too_long_is_disconnected() -> None:
    stream = started_stream()
    transport, clock = FakeTransport(), FakeClock()
    stream.attach("p", make_player(transport, clock=clock))
    transport.buffered = 5000
    stream.on_media(inter(1080))
    clock.now += 31
    stream.on_media(key(2000))
    assert transport.aborted


def test_an_audio_only_stream_has_no_gop_cache_and_headers_still_reach_new_players() -> None:
    stream = LiveStream(PublishRequest("1/room", "s1", "127.0.0.1"))
    stream.on_media(Message(messages.AUDIO, 1, 0, AAC_HEADER))
    for ts in range(0, 200, 23):
        stream.on_media(sound(ts))
    transport = FakeTransport()
    stream.attach("p", make_player(transport))
    assert [m.payload for m in transport.messages()] == [AAC_HEADER]


def test_a_player_asking_for_a_backlog_gets_the_whole_gops_that_started_within_it() -> None:
    clock = FakeClock()
    stream = LiveStream(PublishRequest("1/room", "s1", "127.0.0.1"), clock=clock)
    stream.on_media(Message(messages.VIDEO, 1, 0, AVC_HEADER))
    for second in range(6):  # one GOP per second, arriving in real time
        clock.now = 100.0 + second
        stream.on_media(key(second * 1000))
        stream.on_media(inter(second * 1000 + 40))
    clock.now = 105.5
    recorder, live = FakeTransport(), FakeTransport()
    stream.attach("recorder", make_player(recorder), backlog_s=2.0)
    stream.attach("live", make_player(live))
    keys = [m.timestamp for m in recorder.messages() if m.payload == key(0).payload]
    assert keys == [4000, 5000]
    assert [m.timestamp for m in live.messages()] == [5000, 5000, 5040]


def test_a_backlog_burst_does_not_count_as_a_slow_player() -> None:
    clock = FakeClock()
    stream = LiveStream(PublishRequest("1/room", "s1", "127.0.0.1"), clock=clock)
    big = Message(messages.VIDEO, 1, 0, b"\x17\x01" + bytes(3000))
    stream.on_media(big)
    transport = FakeTransport()
    player = make_player(transport)
    stream.attach("p", player, backlog_s=5.0)
    transport.buffered = 3002  # the burst is still unsent; the limit is 1000
    stream.on_media(inter(40))
    assert player.skipping_since is None
    assert transport.messages()[-1] == inter(40)


def test_a_backlog_reaching_back_past_a_new_codec_configuration_replays_gops_as_coded() -> None:
    """Issue 10 item 11: after a publisher's new sequence header (640x360 to 1280x720), a
    player replaying the backlog got the newest header first and then GOPs coded with the old
    one, which decode as broken pictures."""
    clock = FakeClock()
    stream = LiveStream(PublishRequest("1/room", "s1", "127.0.0.1"), clock=clock)
    small, large = AVC_HEADER, AVC_HEADER[:-1] + b"\x1f"
    stream.on_media(Message(messages.VIDEO, 1, 0, small))
    stream.on_media(Message(messages.AUDIO, 1, 0, AAC_HEADER))
    for second in range(4):
        clock.now = 100.0 + second
        if second == 2:  # the switch: a new header just before the new configuration's key
            stream.on_media(Message(messages.VIDEO, 1, 2000, large))
            stream.on_media(Message(messages.VIDEO, 1, 2000, large))  # re-sent: kept once
        stream.on_media(key(second * 1000))
        stream.on_media(inter(second * 1000 + 40))
    clock.now = 103.5
    early, late = FakeTransport(), FakeTransport()
    stream.attach("early", make_player(early), backlog_s=5.0)
    stream.attach("late", make_player(late), backlog_s=1.0)

    def replay(t: FakeTransport) -> list[tuple[str, int]]:
        names = {small: "small", large: "large", AAC_HEADER: "aac", key(0).payload: "key"}
        return [(names[m.payload], m.timestamp) for m in t.messages() if m.payload in names]

    assert replay(early) == [
        ("small", 0),
        ("aac", 0),
        ("key", 0),
        ("key", 1000),
        ("large", 2000),
        ("key", 2000),
        ("key", 3000),
    ]
    assert replay(late) == [("large", 3000), ("aac", 3000), ("key", 3000)]
