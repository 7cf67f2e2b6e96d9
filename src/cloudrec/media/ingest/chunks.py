"""RTMP chunk streams (RTMP specification 1.0, §5.3), sans I/O.

:class:`ChunkReader` turns the bytes after the handshake into complete :class:`Message`\\ s; it
applies Set Chunk Size and Abort itself, because they change how the very next chunk is read.
:func:`encode_message` cuts one message into chunks.  It always starts with a format 0 header,
so its output does not depend on what was sent before on the connection, and the same bytes can
be written to every player of a stream (encode once, write many).

Timestamps follow the specification and ffmpeg (libavformat/rtmppkt.c): a format 3 header that
starts a new message repeats the previous delta, and after a format 0 header that delta is the
format 0 timestamp itself.  An extended timestamp is repeated in format 3 chunks whenever the
chunk stream's last format 0-2 header carried one; in the continuation chunks of a message the
reader also accepts it missing (it is taken only when it repeats the value it should).

What a peer can make the reader hold is bounded by :class:`ChunkLimits` (issue 11): each chunk
stream keeps one growing buffer, and the declared length of every unfinished message is counted
against a per-connection budget before a byte of it is kept.  A bound that is hit raises
:class:`LimitError`, a :class:`ValueError` naming the limit.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

MAX_CHUNK_SIZE: Final = 0x7FFFFFFF
DEFAULT_CHUNK_SIZE: Final = 128
MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024 - 1
"""Largest message accepted by default (the 24-bit length field's maximum)."""

MSG_SET_CHUNK_SIZE: Final = 1
MSG_ABORT: Final = 2
_MEDIA_TYPES: Final = frozenset((8, 9))  # audio, video

_EXTENDED: Final = 0xFFFFFF
_U32 = struct.Struct(">I")
_U32LE = struct.Struct("<I")
_U16LE = struct.Struct("<H")


@dataclass(slots=True)
class Message:
    """One RTMP message: its type id, message stream id, timestamp (ms, 32 bit) and payload."""

    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes


class LimitError(ValueError):
    """A peer went past a bound; ``limit`` names it (a :class:`ChunkLimits` field, or
    ``max_message_size``)."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True, slots=True)
class ChunkLimits:
    """What one peer may make a :class:`ChunkReader` hold (sizes in bytes).

    ``min_chunk_size``: the smallest Set Chunk Size accepted (tiny chunks cost a parse per byte).
    ``max_chunk_streams``: chunk stream ids one connection may use (each keeps its header state).
    ``max_unfinished_messages``: messages begun and not complete, all chunk streams together.
    ``max_command_bytes``: the largest message other than an accepted publisher's audio and
    video, and the declared length of all unfinished messages together until then.
    ``max_buffered_bytes``: the declared length of all unfinished messages together once the
    publish is accepted (:attr:`ChunkReader.publishing`); so also the largest audio/video message.

    The defaults are the ingest's.  A :class:`ChunkReader` without limits (a client reading a
    server it trusts) checks only its ``max_message_size``.
    """

    min_chunk_size: int = 128
    max_chunk_streams: int = 64
    max_unfinished_messages: int = 8
    max_command_bytes: int = 64 * 1024
    max_buffered_bytes: int = 16 * 1024 * 1024


class _ChunkStream:
    """What a chunk stream remembers between chunks (§5.3.1.2); ``buf`` holds the unfinished
    message's bytes so far (one buffer that grows, not a list of chunks)."""

    __slots__ = (
        "buf",
        "delta",
        "ext_value",
        "extended",
        "length",
        "stream_id",
        "timestamp",
        "type_id",
    )

    def __init__(self) -> None:
        self.timestamp = 0
        self.delta = 0
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.extended = False
        self.ext_value = 0
        self.buf = bytearray()


class ChunkReader:
    """Reassemble messages from chunks: ``for msg in reader.feed(data): ...``.

    Raise :class:`ValueError` on malformed input, :class:`LimitError` when the peer goes past
    ``limits`` (if given); the connection is then unusable.  ``max_message_size`` caps every
    message.
    The owner sets :attr:`publishing` once a publish is accepted: only then may audio and video
    messages be larger than ``limits.max_command_bytes``.
    """

    def __init__(
        self, max_message_size: int = MAX_MESSAGE_SIZE, limits: ChunkLimits | None = None
    ) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.max_message_size = max_message_size
        self.limits = limits
        self.publishing = False
        self._buf = bytearray()
        self._streams: dict[int, _ChunkStream] = {}
        self._unfinished = 0
        self._reserved = 0  # declared bytes of the unfinished messages

    @property
    def buffered(self) -> int:
        """Bytes held now: unfinished messages so far plus the chunk not yet complete."""
        return sum(len(cs.buf) for cs in self._streams.values()) + len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        buf = self._buf
        buf += data
        out: list[Message] = []
        pos = 0
        end = len(buf)
        while True:
            consumed = self._read_chunk(buf, pos, end, out)
            if consumed == 0:
                break
            pos += consumed
        if pos:
            del buf[:pos]
        return out

    def _read_chunk(self, buf: bytearray, pos: int, end: int, out: list[Message]) -> int:
        """Parse the chunk at ``pos``; return its size, or 0 if it is not complete yet."""
        if pos >= end:
            return 0
        start = pos
        first = buf[pos]
        fmt = first >> 6
        csid = first & 0x3F
        pos += 1
        if csid == 0:
            if pos + 1 > end:
                return 0
            csid = 64 + buf[pos]
            pos += 1
        elif csid == 1:
            if pos + 2 > end:
                return 0
            csid = 64 + _U16LE.unpack_from(buf, pos)[0]
            pos += 2
        header_size = (11, 7, 3, 0)[fmt]
        if pos + header_size > end:
            return 0
        cs = self._streams.get(csid)
        if cs is None:
            if fmt != 0:
                raise ValueError(
                    f"RTMP chunk: format {fmt} header on chunk stream {csid} "
                    "without a previous format 0 header"
                )
            if self.limits and len(self._streams) >= self.limits.max_chunk_streams:
                raise LimitError(
                    f"RTMP chunk: chunk stream {csid} is one more than the limit of "
                    f"{self.limits.max_chunk_streams} chunk streams",
                    "max_chunk_streams",
                )
            cs = self._streams[csid] = _ChunkStream()
        received = len(cs.buf)
        new_message = received == 0
        if fmt == 3:
            ts_field = _EXTENDED if cs.extended else 0
            length, type_id, stream_id = cs.length, cs.type_id, cs.stream_id
        else:
            ts_field = int.from_bytes(buf[pos : pos + 3], "big")
            if fmt <= 1:
                length = int.from_bytes(buf[pos + 3 : pos + 6], "big")
                type_id = buf[pos + 6]
            else:
                length, type_id = cs.length, cs.type_id
            stream_id = _U32LE.unpack_from(buf, pos + 7)[0] if fmt == 0 else cs.stream_id
            if not new_message:
                raise ValueError(
                    f"RTMP chunk: format {fmt} header on chunk stream {csid} "
                    "in the middle of a message"
                )
        pos += header_size
        extended = ts_field == _EXTENDED
        if extended:
            if pos + 4 > end:
                return 0
            value = _U32.unpack_from(buf, pos)[0]
            if fmt != 3 or new_message or value == cs.ext_value:
                ts_field = value
                pos += 4
            # else: a continuation chunk without the repeated extended timestamp, as some
            # encoders send (Flash Media Server did); SRS and librtmp accept both forms.
        if new_message:
            self._check_new(length, type_id)
        n = min(self.chunk_size, length - received)
        if pos + n > end:
            return 0
        # The chunk is complete: only now commit its header to the chunk stream state.
        if fmt != 3:
            cs.extended = extended
            cs.ext_value = ts_field if extended else 0
            cs.length, cs.type_id, cs.stream_id = length, type_id, stream_id
            if fmt == 0:
                cs.timestamp = ts_field
                cs.delta = ts_field
            else:
                cs.delta = ts_field
                cs.timestamp = (cs.timestamp + ts_field) & 0xFFFFFFFF
        elif new_message:
            cs.timestamp = (cs.timestamp + cs.delta) & 0xFFFFFFFF
        if n == length:
            out.append(Message(type_id, stream_id, cs.timestamp, bytes(buf[pos : pos + n])))
            self._control(out[-1])
            return pos + n - start
        if new_message:
            self._unfinished += 1
            self._reserved += length
        cs.buf += buf[pos : pos + n]
        if len(cs.buf) == length:
            msg = Message(type_id, stream_id, cs.timestamp, bytes(cs.buf))
            self._release(cs)
            out.append(msg)
            self._control(msg)
        return pos + n - start

    def _check_new(self, length: int, type_id: int) -> None:
        """Refuse a message by its declared length, before any of it is kept."""
        if length > self.max_message_size:
            raise LimitError(
                f"RTMP chunk: message of {length} bytes exceeds the limit of "
                f"{self.max_message_size} bytes",
                "max_message_size",
            )
        limits = self.limits
        if limits is None:
            return
        media = type_id in _MEDIA_TYPES
        if length > limits.max_command_bytes and not (self.publishing and media):
            what = "before the publish is accepted" if media else "of this type"
            raise LimitError(
                f"RTMP chunk: message of type {type_id} and {length} bytes {what} exceeds "
                f"the limit of {limits.max_command_bytes} bytes",
                "max_command_bytes",
            )
        # Counted while its chunk is incomplete too: those bytes wait in the reader's buffer.
        if self.publishing:
            budget, name = limits.max_buffered_bytes, "max_buffered_bytes"
        else:
            budget, name = limits.max_command_bytes, "max_command_bytes"
        if self._reserved + length > budget:
            raise LimitError(
                f"RTMP chunk: unfinished messages of {self._reserved + length} bytes exceed "
                f"the limit of {budget} bytes",
                name,
            )
        if length > self.chunk_size and self._unfinished >= limits.max_unfinished_messages:
            raise LimitError(
                f"RTMP chunk: more than {limits.max_unfinished_messages} unfinished messages",
                "max_unfinished_messages",
            )

    def _release(self, cs: _ChunkStream) -> None:
        self._unfinished -= 1
        self._reserved -= cs.length
        cs.buf = bytearray()

    def _control(self, msg: Message) -> None:
        if msg.type_id == MSG_SET_CHUNK_SIZE:
            size = parse_chunk_size(msg.payload)
            if self.limits and size < self.limits.min_chunk_size:
                raise LimitError(
                    f"RTMP Set Chunk Size: {size} is below the minimum of "
                    f"{self.limits.min_chunk_size}",
                    "min_chunk_size",
                )
            self.chunk_size = size
        elif msg.type_id == MSG_ABORT:
            if len(msg.payload) != 4:
                raise ValueError("RTMP Abort: payload must be 4 bytes")
            cs = self._streams.get(_U32.unpack(msg.payload)[0])
            if cs is not None and cs.buf:
                self._release(cs)


def parse_chunk_size(payload: bytes) -> int:
    """The chunk size in a Set Chunk Size payload (§5.4.1): 1 to 2^31-1."""
    if len(payload) != 4:
        raise ValueError("RTMP Set Chunk Size: payload must be 4 bytes")
    size: int = _U32.unpack(payload)[0]
    if size == 0 or size > MAX_CHUNK_SIZE:
        raise ValueError(f"RTMP Set Chunk Size: {size} is not between 1 and {MAX_CHUNK_SIZE}")
    return size


def _basic_header(fmt: int, csid: int) -> bytes:
    if 2 <= csid <= 63:
        return bytes([fmt << 6 | csid])
    if 64 <= csid <= 319:
        return bytes([fmt << 6, csid - 64])
    if 320 <= csid <= 65599:
        return bytes([fmt << 6 | 1]) + _U16LE.pack(csid - 64)
    raise ValueError(f"RTMP chunk: chunk stream id {csid} is not between 2 and 65599")


def encode_message(msg: Message, csid: int, chunk_size: int) -> bytes:
    """Cut ``msg`` into chunks of at most ``chunk_size`` payload bytes on chunk stream ``csid``.

    The first chunk has a format 0 header, the rest format 3 headers (with the extended
    timestamp repeated, as ffmpeg and the specification expect).
    """
    payload = msg.payload
    length = len(payload)
    if length > MAX_MESSAGE_SIZE:
        raise ValueError(f"RTMP chunk: message of {length} bytes is too long")
    ts = msg.timestamp & 0xFFFFFFFF
    extended = ts >= _EXTENDED
    header = (
        _basic_header(0, csid)
        + (_EXTENDED if extended else ts).to_bytes(3, "big")
        + length.to_bytes(3, "big")
        + bytes([msg.type_id])
        + _U32LE.pack(msg.stream_id)
    )
    ext = _U32.pack(ts) if extended else b""
    if length <= chunk_size:
        return header + ext + payload
    cont = _basic_header(3, csid) + ext
    view = memoryview(payload)
    parts: list[bytes | memoryview] = [header, ext, view[:chunk_size]]
    for off in range(chunk_size, length, chunk_size):
        parts.append(cont)
        parts.append(view[off : off + chunk_size])
    return b"".join(parts)
