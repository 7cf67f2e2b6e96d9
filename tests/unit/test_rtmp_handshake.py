"""The RTMP handshake (sans I/O), including ffmpeg's digest-style C1."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cloudrec.media.ingest.handshake import PACKET_SIZE, ClientHandshake, ServerHandshake, make_s1


def exactly(message: str) -> str:
    """A ``match`` pattern for exactly ``message``."""
    return f"^{re.escape(message)}$"


CAPTURE = Path(__file__).parent.parent / "data" / "ffmpeg_publish_c2s.bin"


def test_a_server_and_a_client_complete_the_handshake_and_keep_trailing_bytes() -> None:
    server = ServerHandshake(s1=make_s1(7, bytes(PACKET_SIZE - 8)))
    client = ClientHandshake()
    reply = server.feed(client.start())
    assert reply[0] == 3
    assert len(reply) == 1 + 2 * PACKET_SIZE
    assert reply[1 + PACKET_SIZE :] == client.c1  # S2 echoes C1
    c2 = client.feed(reply)
    assert client.done
    assert c2 == reply[1 : 1 + PACKET_SIZE]  # C2 echoes S1
    assert server.feed(c2 + b"\x02chunk") == b""
    assert server.done
    assert server.leftover == b"\x02chunk"


def test_the_handshake_accepts_input_split_at_every_byte() -> None:
    server = ServerHandshake()
    data = ClientHandshake().start() + bytes(PACKET_SIZE) + b"rest"
    out = b"".join(server.feed(data[i : i + 1]) for i in range(len(data) - 4))
    assert len(out) == 1 + 2 * PACKET_SIZE
    assert server.done
    assert server.leftover == b""


def test_ffmpegs_digest_style_c1_is_echoed_in_s2() -> None:
    captured = CAPTURE.read_bytes()
    assert captured[5:9] == bytes([9, 0, 124, 2])  # Flash Player version: a digest C1
    server = ServerHandshake()
    reply = server.feed(captured[: 1 + PACKET_SIZE])
    assert reply[1 + PACKET_SIZE :] == captured[1 : 1 + PACKET_SIZE]
    assert reply[5:9] == bytes(4)  # zero version: ffmpeg does not validate our digest
    server.feed(captured[1 + PACKET_SIZE : 1 + 2 * PACKET_SIZE + 10])
    assert server.done
    assert server.leftover == captured[1 + 2 * PACKET_SIZE : 1 + 2 * PACKET_SIZE + 10]


@pytest.mark.parametrize("version", [0, 6, 0x16, 0xFF])
def test_a_version_other_than_3_is_refused(version: int) -> None:
    with pytest.raises(ValueError, match=exactly(f"RTMP handshake: unsupported version {version}")):
        ServerHandshake().feed(bytes([version]))


def test_feeding_a_finished_handshake_is_an_error() -> None:
    server = ServerHandshake()
    server.feed(ClientHandshake().start() + bytes(PACKET_SIZE))
    with pytest.raises(ValueError, match=exactly("RTMP handshake: already complete")):
        server.feed(b"x")
