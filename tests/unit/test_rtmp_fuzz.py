"""Fuzz the sans-I/O RTMP code: hostile bytes may only ever raise ValueError."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudrec.media.ingest import amf0, flv, messages
from cloudrec.media.ingest.chunks import ChunkReader, Message
from cloudrec.media.ingest.handshake import PACKET_SIZE, ServerHandshake
from cloudrec.media.ingest.meta import build_meta

CAPTURED = (Path(__file__).parent.parent / "data" / "ffmpeg_publish_c2s.bin").read_bytes()
CHUNKS = CAPTURED[1 + 2 * PACKET_SIZE :]
METADATA_KEYS = ["width", "height", "framerate", "audiosamplerate", "audiochannels", "stereo",
                 "videocodecid", "audiocodecid", "encoder", "videodatarate"]  # fmt: skip
FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse_message(msg: Message) -> None:
    """Everything the server does with a message's payload before trusting it."""
    payload = msg.payload
    try:
        if msg.type_id == messages.COMMAND_AMF0:
            cmd = messages.Command.parse(payload)
            if cmd.args:
                cmd.arg_str(0)
        elif msg.type_id == messages.DATA_AMF0:
            props = messages.parse_metadata(payload)
            build_meta(props, None, None)
        elif msg.type_id == messages.USER_CONTROL:
            messages.UserControl.parse(payload)
        elif msg.type_id in (messages.ACKNOWLEDGEMENT, messages.WINDOW_ACK_SIZE):
            messages.parse_u32(payload, "x")
        elif msg.type_id == messages.SET_PEER_BANDWIDTH:
            messages.parse_peer_bandwidth(payload)
        elif msg.type_id in (messages.AUDIO, messages.VIDEO):
            flv.video_codec(payload)
            flv.is_keyframe(payload)
            flv.is_video_sequence_header(payload)
            flv.is_aac_sequence_header(payload)
            build_meta(None, payload, payload)
            if len(payload) > 5:
                flv.parse_avc_dimensions(payload[5:])
                flv.parse_audio_specific_config(payload[2:])
    except ValueError:
        pass


def feed_all(data: bytes, splits: list[int]) -> None:
    reader = ChunkReader(max_message_size=1 << 20)
    pos = 0
    try:
        for size in [*splits, len(data)]:
            for msg in reader.feed(data[pos : pos + size]):
                parse_message(msg)
            pos += size
    except ValueError:
        pass


@FUZZ
@given(st.binary(max_size=2048), st.lists(st.integers(1, 300), max_size=8))
def test_random_bytes_make_the_chunk_reader_raise_only_value_errors(
    data: bytes, splits: list[int]
) -> None:
    feed_all(data, splits)


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, len(CHUNKS) - 1), st.integers(0, 255)), min_size=1, max_size=6
    ),
    st.integers(64, len(CHUNKS)),
    st.lists(st.integers(1, 4096), max_size=4),
)
def test_mutated_ffmpeg_bytes_make_the_chunk_reader_raise_only_value_errors(
    flips: list[tuple[int, int]], cut: int, splits: list[int]
) -> None:
    data = bytearray(CHUNKS[:cut])
    for index, value in flips:
        if index < len(data):
            data[index] = value
    feed_all(bytes(data), splits)


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_make_the_amf0_decoder_raise_only_value_errors(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        amf0.decode(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=4000))
def test_random_bytes_make_the_handshake_raise_only_value_errors(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        ServerHandshake().feed(data)


def test_absurd_metadata_numbers_are_ignored() -> None:
    """Regression: width=inf in onMetaData made int() raise OverflowError."""
    meta = build_meta(
        {"width": float("inf"), "height": float("nan"), "framerate": -1.0}, None, None
    )
    assert (meta.width, meta.height, meta.fps) == (None, None, None)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(METADATA_KEYS),
        st.one_of(st.floats(), st.booleans(), st.text(max_size=8), st.none()),
    )
)
def test_any_metadata_values_build_a_stream_meta(props: dict[str, object]) -> None:
    build_meta(props, None, None)
