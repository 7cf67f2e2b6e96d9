"""RTMP chunk streams and messages (sans I/O), on hand-made and captured ffmpeg bytes."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from cloudrec.media.ingest import flv, messages
from cloudrec.media.ingest.chunks import ChunkReader, Message, encode_message
from cloudrec.media.ingest.handshake import PACKET_SIZE


def exactly(message: str) -> str:
    """A ``match`` pattern for exactly ``message``."""
    return f"^{re.escape(message)}$"


CAPTURE = Path(__file__).parent.parent / "data" / "ffmpeg_publish_c2s.bin"


def fmt0(csid: int, ts: int, length: int, type_id: int, stream_id: int) -> bytes:
    ts_field = min(ts, 0xFFFFFF)
    head = bytes([csid]) + ts_field.to_bytes(3, "big") + length.to_bytes(3, "big")
    head += bytes([type_id]) + struct.pack("<I", stream_id)
    return head + (struct.pack(">I", ts) if ts >= 0xFFFFFF else b"")


def test_a_message_longer_than_the_chunk_size_is_cut_and_reassembled() -> None:
    msg = Message(9, 1, 1234, bytes(range(256)) * 40)
    data = encode_message(msg, 6, 128)
    assert len(data) == 12 + len(msg.payload) + (len(msg.payload) - 1) // 128
    assert data[12 + 128] == 0xC6  # format 3 continuation on chunk stream 6
    assert ChunkReader().feed(data) == [msg]


def test_bytes_fed_one_at_a_time_give_the_same_messages() -> None:
    msgs = [Message(8, 1, t * 23, bytes([t]) * (50 + 70 * t)) for t in range(5)]
    data = b"".join(encode_message(m, 4, 128) for m in msgs)
    reader = ChunkReader()
    out = [m for i in range(len(data)) for m in reader.feed(data[i : i + 1])]
    assert out == msgs


def test_chunks_of_two_chunk_streams_interleave() -> None:
    video = b"V" * 200
    audio = b"A" * 150
    data = (
        fmt0(6, 40, 200, 9, 1) + video[:128]
        + fmt0(4, 41, 150, 8, 1) + audio[:128]
        + b"\xc6" + video[128:]
        + b"\xc4" + audio[128:]
    )  # fmt: skip
    assert ChunkReader().feed(data) == [Message(9, 1, 40, video), Message(8, 1, 41, audio)]


def test_compressed_headers_carry_deltas_and_format_3_repeats_the_last_delta() -> None:
    data = (
        fmt0(4, 1000, 2, 8, 1) + b"a0"
        + b"\x44" + (20).to_bytes(3, "big") + (3).to_bytes(3, "big") + b"\x08" + b"a1-"
        + b"\x84" + (21).to_bytes(3, "big") + b"a2-"
        + b"\xc4" + b"a3-"
    )  # fmt: skip
    out = ChunkReader().feed(data)
    assert [(m.timestamp, m.payload) for m in out] == [
        (1000, b"a0"),
        (1020, b"a1-"),
        (1041, b"a2-"),
        (1062, b"a3-"),
    ]


def test_format_3_after_format_0_uses_the_absolute_timestamp_as_delta() -> None:
    """RTMP spec §5.3.1.2.4 and ffmpeg's rtmppkt.c agree on this."""
    out = ChunkReader().feed(fmt0(4, 40, 1, 8, 1) + b"x" + b"\xc4" + b"y")
    assert [m.timestamp for m in out] == [40, 80]


def test_extended_timestamps_are_read_in_format_0_and_in_format_3_continuations() -> None:
    ts = 0x01234567
    msg = Message(9, 1, ts, b"z" * 300)
    data = encode_message(msg, 6, 128)
    assert data[1:4] == b"\xff\xff\xff"
    assert data[12:16] == struct.pack(">I", ts)
    assert data[16 + 128 : 16 + 128 + 5] == b"\xc6" + struct.pack(">I", ts)
    assert ChunkReader().feed(data) == [msg]


def test_set_chunk_size_applies_to_the_very_next_chunk() -> None:
    big = Message(9, 1, 0, b"q" * 10_000)
    data = encode_message(messages.set_chunk_size(4096), 2, 128) + encode_message(big, 6, 4096)
    reader = ChunkReader()
    out = reader.feed(data)
    assert out[1] == big
    assert reader.chunk_size == 4096


def test_the_largest_chunk_size_is_honoured() -> None:
    big = Message(9, 1, 0, b"q" * 100_000)
    data = encode_message(messages.set_chunk_size(0x7FFFFFFF), 2, 128) + encode_message(
        big, 6, 0x7FFFFFFF
    )
    assert ChunkReader().feed(data)[1] == big


def test_abort_discards_a_partial_message() -> None:
    data = fmt0(6, 0, 300, 9, 1) + b"x" * 128
    data += encode_message(messages.abort(6), 2, 128)
    data += fmt0(6, 5, 3, 9, 1) + b"new"
    out = ChunkReader().feed(data)
    assert out[-1] == Message(9, 1, 5, b"new")
    assert len(out) == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b"\x46" + bytes(7),
            "RTMP chunk: format 1 header on chunk stream 6 without a previous format 0 header",
        ),
        (
            b"\xc3",
            "RTMP chunk: format 3 header on chunk stream 3 without a previous format 0 header",
        ),
        (
            fmt0(2, 0, 4, 1, 0) + b"\x00\x00\x00\x00",
            "RTMP Set Chunk Size: 0 is not between 1 and 2147483647",
        ),
        (
            fmt0(2, 0, 4, 1, 0) + b"\x80\x00\x00\x00",
            "RTMP Set Chunk Size: 2147483648 is not between 1 and 2147483647",
        ),
        (fmt0(2, 0, 3, 1, 0) + b"\x00\x00\x01", "RTMP Set Chunk Size: payload must be 4 bytes"),
        (
            fmt0(6, 0, 200, 9, 1) + b"x" * 128 + b"\x86" + bytes(3),
            "RTMP chunk: format 2 header on chunk stream 6 in the middle of a message",
        ),
    ],
)
def test_malformed_chunks_raise_a_value_error_with_an_exact_message(
    data: bytes, message: str
) -> None:
    with pytest.raises(ValueError, match=exactly(message)):
        ChunkReader().feed(data)


def test_a_message_above_the_size_limit_is_refused_before_it_is_buffered() -> None:
    with pytest.raises(
        ValueError,
        match=exactly("RTMP chunk: message of 5000 bytes exceeds the limit of 4096 bytes"),
    ):
        ChunkReader(max_message_size=4096).feed(fmt0(6, 0, 5000, 9, 1))


def test_chunk_stream_ids_use_one_two_and_three_byte_basic_headers() -> None:
    for csid, head in [(3, b"\x03"), (64, b"\x00\x00"), (319, b"\x00\xff"), (320, b"\x01\x00\x01")]:
        msg = Message(20, 0, 0, b"abc")
        data = encode_message(msg, csid, 128)
        assert data.startswith(head)
        assert ChunkReader().feed(data) == [msg]


@pytest.mark.parametrize("other", [67, 323])
def test_chunk_streams_with_long_ids_are_told_apart_from_short_ones(other: int) -> None:
    """A message on chunk stream ``other`` (a two-byte basic header whose byte, read without
    the offset of 64, says 3; a three-byte one) between the two chunks of a message on
    stream 3: each chunk goes to its own stream."""
    first, second = Message(9, 1, 40, bytes(range(200))), Message(8, 1, 41, b"sound")
    a = encode_message(first, 3, 128)
    b = encode_message(second, other, 128)
    a1, a2 = a[: 1 + 11 + 128], a[1 + 11 + 128 :]
    assert ChunkReader().feed(a1 + b + a2) == [second, first]


def test_control_messages_and_commands_survive_a_round_trip() -> None:
    ping = messages.UserControl(messages.PING_REQUEST, 12345)
    assert messages.UserControl.parse(bytes(ping)) == ping
    buffer = messages.UserControl(messages.SET_BUFFER_LENGTH, 1, 3000)
    assert messages.UserControl.parse(bytes(buffer)) == buffer
    cmd = messages.Command("publish", 5.0, None, ["s1?token=x", "live"])
    assert messages.Command.parse(bytes(cmd)) == cmd
    assert cmd.arg_str(0) == "s1?token=x"
    assert messages.parse_peer_bandwidth(messages.set_peer_bandwidth(2_500_000).payload) == (
        2_500_000,
        2,
    )
    assert messages.parse_u32(messages.acknowledgement(2**32 + 5).payload, "Acknowledgement") == 5


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: messages.UserControl.parse(b"\x00"),
            "RTMP User Control: payload shorter than 6 bytes",
        ),
        (
            lambda: messages.Command.parse(b"\x05"),
            "RTMP command: expected a name and a transaction id",
        ),
        (
            lambda: messages.Command.parse(b"\x02\x00\x01x\x05"),
            "RTMP command 'x': transaction id is not a number",
        ),
        (
            lambda: messages.Command("play", 0.0).arg_str(0),
            "RTMP command 'play': argument 0 is not a string",
        ),
        (
            lambda: messages.parse_peer_bandwidth(b""),
            "RTMP Set Peer Bandwidth: payload must be 5 bytes",
        ),
    ],
)
def test_malformed_messages_raise_a_value_error_with_an_exact_message(
    call: object, message: str
) -> None:
    with pytest.raises(ValueError, match=exactly(message)):
        call()  # type: ignore[operator]


def captured_messages() -> list[Message]:
    data = CAPTURE.read_bytes()
    return ChunkReader().feed(data[1 + 2 * PACKET_SIZE :])


def test_a_captured_ffmpeg_publish_parses_into_the_expected_command_sequence() -> None:
    msgs = captured_messages()
    commands = [
        messages.Command.parse(m.payload).name for m in msgs if m.type_id == messages.COMMAND_AMF0
    ]
    assert commands == ["connect", "releaseStream", "FCPublish", "createStream", "publish"]
    kinds = [m.type_id for m in msgs]
    assert kinds[:9] == [20, 1, 20, 20, 20, 20, 18, 9, 8]
    connect = messages.Command.parse(msgs[0].payload)
    assert connect.command_object["app"] == "1/room"
    publish = messages.Command.parse(msgs[5].payload)
    assert (msgs[5].stream_id, publish.args) == (1, ["s1", "live"])
    assert messages.parse_u32(msgs[1].payload, "Set Chunk Size") == 4096


def test_captured_ffmpeg_media_is_recognised_at_the_flv_tag_level() -> None:
    msgs = captured_messages()
    meta = messages.parse_metadata(msgs[6].payload)
    assert meta is not None
    assert (meta["width"], meta["height"], meta["framerate"], meta["videocodecid"]) == (
        320,
        240,
        25,
        7,
    )
    avc, aac, key = msgs[7].payload, msgs[8].payload, msgs[9].payload
    assert flv.video_codec(avc) == "h264"
    assert flv.is_video_sequence_header(avc)
    assert flv.parse_avc_dimensions(avc[5:]) == (320, 240)
    assert flv.is_aac_sequence_header(aac)
    assert flv.audio_codec(aac) == "aac"
    assert flv.parse_audio_specific_config(aac[2:]) == (44100, 1)
    assert flv.is_keyframe(key)
    assert not flv.is_video_sequence_header(key)
    inter = next(m for m in msgs[10:] if m.type_id == messages.VIDEO)
    assert not flv.is_keyframe(inter.payload)


def test_re_encoding_captured_messages_gives_the_same_messages() -> None:
    msgs = captured_messages()
    data = b"".join(encode_message(m, 3 + (m.type_id % 5), 4096) for m in msgs[2:])
    reader = ChunkReader()
    reader.chunk_size = 4096
    assert reader.feed(data) == msgs[2:]


def test_enhanced_rtmp_fourcc_video_headers_are_recognised() -> None:
    hevc_start = bytes([0x80 | 0x10 | 0]) + b"hvc1" + b"\x01"
    assert flv.video_codec(hevc_start) == "hevc"
    assert flv.is_video_sequence_header(hevc_start)
    assert flv.is_keyframe(hevc_start)
    assert flv.video_codec(bytes([0x1C, 1])) == "hevc"


def test_continuation_chunks_may_omit_the_repeated_extended_timestamp() -> None:
    """Some encoders (Flash Media Server) do not repeat it; ffmpeg and the spec do."""
    ts = 0x01000000
    payload = b"p" * 200
    data = fmt0(6, ts, 200, 9, 1) + payload[:128] + b"\xc6" + payload[128:]
    assert ChunkReader().feed(data) == [Message(9, 1, ts, payload)]
