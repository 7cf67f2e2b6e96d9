"""The RTMP handshake (RTMP specification 1.0, §5.2), sans I/O.

The server side answers C0+C1 with S0+S1+S2 at once, where S1 carries a zero "version" field
and S2 echoes C1.  That is the plain scheme: ffmpeg (``rtmp_handshake`` in libavformat/
rtmpproto.c) only validates the server digest when S1's version bytes are non-zero, and
librtmp/OBS accept an echo.  Digest-style C1s (Flash Player 9+, ffmpeg, OBS) are accepted and
echoed without validating their digest.
"""

from __future__ import annotations

import os
import struct
from typing import Final

RTMP_VERSION: Final = 3
PACKET_SIZE: Final = 1536
"""Size of C1, C2, S1 and S2 in bytes."""


def make_s1(epoch_ms: int = 0, random: bytes | None = None) -> bytes:
    """An S1 (or C1): 4-byte time, 4 zero bytes, 1528 random bytes."""
    body = random if random is not None else os.urandom(PACKET_SIZE - 8)
    if len(body) != PACKET_SIZE - 8:
        raise ValueError(f"RTMP handshake: random part must be {PACKET_SIZE - 8} bytes")
    return struct.pack(">II", epoch_ms & 0xFFFFFFFF, 0) + body


class ServerHandshake:
    """Feed bytes from the client; send back what :meth:`feed` returns.

    Once :attr:`done` is true, :attr:`leftover` holds bytes that followed C2 (the first chunks).
    """

    def __init__(self, s1: bytes | None = None) -> None:
        self._s1 = s1 if s1 is not None else make_s1()
        if len(self._s1) != PACKET_SIZE:
            raise ValueError(f"RTMP handshake: S1 must be {PACKET_SIZE} bytes")
        self._buf = bytearray()
        self._sent = False
        self.done = False
        self.c1: bytes | None = None
        self.leftover = b""

    def feed(self, data: bytes) -> bytes:
        """Consume client bytes; return the bytes to send (possibly empty)."""
        if self.done:
            raise ValueError("RTMP handshake: already complete")
        self._buf += data
        out = b""
        if not self._sent:
            if not self._buf:
                return b""
            version = self._buf[0]
            if version != RTMP_VERSION:
                raise ValueError(f"RTMP handshake: unsupported version {version}")
            if len(self._buf) < 1 + PACKET_SIZE:
                return b""
            self.c1 = bytes(self._buf[1 : 1 + PACKET_SIZE])
            del self._buf[: 1 + PACKET_SIZE]
            self._sent = True
            out = bytes([RTMP_VERSION]) + self._s1 + self.c1
        if len(self._buf) >= PACKET_SIZE:
            # C2 should echo S1; clients disagree on the details, and nothing depends on it.
            self.leftover = bytes(self._buf[PACKET_SIZE:])
            self._buf.clear()
            self.done = True
        return out


class ClientHandshake:
    """The client side, for tests and tools: :meth:`start` gives C0+C1, then feed S0+S1+S2."""

    def __init__(self, c1: bytes | None = None) -> None:
        self.c1 = c1 if c1 is not None else make_s1()
        self._buf = bytearray()
        self.done = False
        self.leftover = b""

    def start(self) -> bytes:
        return bytes([RTMP_VERSION]) + self.c1

    def feed(self, data: bytes) -> bytes:
        """Consume server bytes; once S0+S1+S2 are in, return C2 (the echo of S1)."""
        if self.done:
            raise ValueError("RTMP handshake: already complete")
        self._buf += data
        if self._buf[:1] and self._buf[0] != RTMP_VERSION:
            raise ValueError(f"RTMP handshake: unsupported version {self._buf[0]}")
        if len(self._buf) < 1 + 2 * PACKET_SIZE:
            return b""
        s1 = bytes(self._buf[1 : 1 + PACKET_SIZE])
        self.leftover = bytes(self._buf[1 + 2 * PACKET_SIZE :])
        self._buf.clear()
        self.done = True
        return s1
