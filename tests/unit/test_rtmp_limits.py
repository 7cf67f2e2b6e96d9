"""Bounds on what one RTMP peer can make the chunk reader hold (issue 11, item 2), sans I/O.

Before these bounds a client could set chunk size 1 and leave unfinished messages of up to
16 MiB on up to 65,536 chunk streams, each 1-byte chunk kept as its own ``bytes`` object.
"""

from __future__ import annotations

import re
import struct
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudrec.config import Settings, SettingsError, load_settings
from cloudrec.media.ingest import messages
from cloudrec.media.ingest.chunks import ChunkLimits, ChunkReader, LimitError, Message
from cloudrec.media.ingest.chunks import encode_message as encode
from cloudrec.media.ingest.limits import IngestLimits

VIDEO, AUDIO, COMMAND = messages.VIDEO, messages.AUDIO, messages.COMMAND_AMF0


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def header(csid: int, length: int, type_id: int, stream_id: int = 1) -> bytes:
    """A format 0 chunk header (one-, two- or three-byte basic header) at timestamp 0."""
    if csid < 64:
        basic = bytes([csid])
    elif csid < 320:
        basic = bytes([0, csid - 64])
    else:
        basic = bytes([1]) + struct.pack("<H", csid - 64)
    return basic + bytes(3) + length.to_bytes(3, "big") + bytes([type_id]) + struct.pack("<I", 1)


def chunk_size(size: int) -> bytes:
    return encode(messages.set_chunk_size(size), 2, 128)


def refused(reader: ChunkReader, data: bytes, message: str) -> LimitError:
    with pytest.raises(LimitError, match=exactly(message)) as info:
        reader.feed(data)
    return info.value


def test_a_set_chunk_size_below_the_minimum_is_refused_and_the_minimum_is_accepted() -> None:
    """Bug: chunk size 1 was accepted, so every byte cost a chunk header and a parse."""
    err = refused(
        ChunkReader(limits=ChunkLimits()),
        chunk_size(127),
        "RTMP Set Chunk Size: 127 is below the minimum of 128",
    )
    assert err.limit == "min_chunk_size"
    reader = ChunkReader(limits=ChunkLimits())
    reader.feed(chunk_size(128))
    assert reader.chunk_size == 128


def test_a_chunk_stream_past_the_limit_is_refused() -> None:
    """Bug: up to 65,600 chunk stream ids each kept their state for the connection's life."""
    reader = ChunkReader(limits=ChunkLimits(max_chunk_streams=64))
    for csid in range(2, 66):
        reader.feed(header(csid, 1, AUDIO) + b"a")
    err = refused(
        reader,
        header(400, 1, AUDIO) + b"a",
        "RTMP chunk: chunk stream 400 is one more than the limit of 64 chunk streams",
    )
    assert err.limit == "max_chunk_streams"


def test_unfinished_messages_past_the_limit_are_refused_and_a_finished_one_frees_its_place() -> (
    None
):
    """Bug: every chunk stream could hold an unfinished message at once."""
    reader = ChunkReader(limits=ChunkLimits(max_unfinished_messages=8))
    for csid in range(2, 10):
        reader.feed(header(csid, 200, COMMAND) + bytes(128))
    reader.feed(b"\xc2" + bytes(72))  # completes chunk stream 2's message
    reader.feed(header(10, 200, COMMAND) + bytes(128))
    err = refused(
        reader,
        header(11, 200, COMMAND) + bytes(128),
        "RTMP chunk: more than 8 unfinished messages",
    )
    assert err.limit == "max_unfinished_messages"


def test_a_command_larger_than_the_command_limit_is_refused_before_it_is_buffered() -> None:
    """Bug: a 16 MiB command (or any message) was buffered before anything was authorised."""
    reader = ChunkReader(limits=ChunkLimits(max_command_bytes=65536))
    reader.publishing = True  # commands stay small after the publish too
    err = refused(
        reader,
        header(3, 65537, COMMAND),  # refused on its header alone: no payload sent
        "RTMP chunk: message of type 20 and 65537 bytes of this type exceeds the limit of "
        "65536 bytes",
    )
    assert err.limit == "max_command_bytes"


def test_video_larger_than_the_command_limit_is_refused_until_the_publish_is_accepted() -> None:
    big = Message(VIDEO, 1, 0, bytes(range(256)) * 8192)  # a 2 MiB key frame
    data = chunk_size(4096) + encode(big, 6, 4096)
    refused(
        ChunkReader(limits=ChunkLimits()),
        data,
        "RTMP chunk: message of type 9 and 2097152 bytes before the publish is accepted "
        "exceeds the limit of 65536 bytes",
    )
    reader = ChunkReader(limits=ChunkLimits())
    reader.publishing = True
    assert reader.feed(data)[-1] == big


def test_unfinished_messages_together_are_bounded_before_and_after_the_publish() -> None:
    """Bug: no bound on the bytes of all unfinished messages of one connection."""
    limits = ChunkLimits(max_command_bytes=65536, max_buffered_bytes=1 << 20)
    reader = ChunkReader(limits=limits)
    reader.feed(header(3, 40000, COMMAND) + bytes(128))
    err = refused(
        reader,
        header(4, 30000, COMMAND),
        "RTMP chunk: unfinished messages of 70000 bytes exceed the limit of 65536 bytes",
    )
    assert err.limit == "max_command_bytes"

    reader = ChunkReader(limits=limits)
    reader.publishing = True
    reader.feed(header(6, 600_000, VIDEO) + bytes(128))
    err = refused(
        reader,
        header(7, 500_000, VIDEO),
        "RTMP chunk: unfinished messages of 1100000 bytes exceed the limit of 1048576 bytes",
    )
    assert err.limit == "max_buffered_bytes"


def test_an_abort_gives_back_what_the_unfinished_message_held() -> None:
    reader = ChunkReader(limits=ChunkLimits(max_command_bytes=1000, max_unfinished_messages=1))
    reader.feed(header(3, 900, COMMAND) + bytes(128))
    reader.feed(encode(messages.abort(3), 2, 128))
    out = reader.feed(header(4, 900, COMMAND) + bytes(128) + b"\xc4" + bytes(128))
    assert out == []  # accepted and still unfinished: the aborted one holds nothing


def test_an_unfinished_message_in_one_byte_chunks_is_held_in_about_its_own_size() -> None:
    """Bug: each chunk of an unfinished message was its own ``bytes`` object in a list, so
    50 kB in 1-byte chunks held ~2.5 MB; now each chunk stream has one growing buffer."""
    size = 50_000
    reader = ChunkReader()  # no limits: only the buffer's representation is measured
    reader.feed(chunk_size(1))
    data = header(6, size + 1, VIDEO) + b"v" + (b"\xc6v" * (size - 1))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(0, len(data), 65536):
            assert reader.feed(data[i : i + 65536]) == []
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert held < 2 * size, held


LIMITED = ChunkLimits(max_chunk_streams=8, max_unfinished_messages=3, max_command_bytes=4096)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000), st.booleans())
def test_random_bytes_make_a_limited_reader_raise_only_value_errors_and_hold_little(
    data: bytes, publishing: bool
) -> None:
    reader = ChunkReader(limits=LIMITED)
    reader.publishing = publishing
    try:
        reader.feed(chunk_size(128) + data)
    except ValueError:
        return
    assert reader.buffered <= LIMITED.max_command_bytes + 18


def test_the_limits_come_from_the_settings() -> None:
    limits = IngestLimits.from_settings(
        Settings(
            rtmp_min_chunk_size=256,
            rtmp_max_command_bytes=1000,
            rtmp_auth_timeout_s=2.5,
            rtmp_connection_cap_exempt="10.0.0.7, ::ffff:127.0.0.1",
        )
    )
    assert limits.chunks == ChunkLimits(min_chunk_size=256, max_command_bytes=1000)
    assert limits.auth_timeout_s == 2.5
    assert limits.connection_cap_exempt == frozenset({"10.0.0.7", "127.0.0.1"})
    assert IngestLimits.from_settings(Settings()) == IngestLimits()


def test_the_limits_are_read_from_the_environment_and_must_be_positive(tmp_path: Path) -> None:
    flags = {"data_dir": tmp_path}
    env = {"CLOUDREC_RTMP_AUTH_TIMEOUT_S": "2.5", "CLOUDREC_RTMP_MAX_CONNECTIONS": "9"}
    s = load_settings(flags, env=env)
    assert (s.rtmp_auth_timeout_s, s.rtmp_max_connections) == (2.5, 9)
    with pytest.raises(
        SettingsError, match=exactly("setting rtmp_min_chunk_size: 0 is not positive")
    ):
        load_settings(flags, env={"CLOUDREC_RTMP_MIN_CHUNK_SIZE": "0"})
