"""RTMP messages above the chunk layer (RTMP specification 1.0, §5.4, §6, §7), sans I/O.

Protocol control messages (types 1-6), User Control events (type 4), AMF0 commands (20) and
data messages (18).  ``parse`` functions raise :class:`ValueError` with an exact message;
builders return a :class:`~cloudrec.media.ingest.chunks.Message` ready for the chunk writer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Final

from cloudrec.media.ingest import amf0
from cloudrec.media.ingest.chunks import Message

SET_CHUNK_SIZE: Final = 1
ABORT: Final = 2
ACKNOWLEDGEMENT: Final = 3
USER_CONTROL: Final = 4
WINDOW_ACK_SIZE: Final = 5
SET_PEER_BANDWIDTH: Final = 6
AUDIO: Final = 8
VIDEO: Final = 9
DATA_AMF3: Final = 15
COMMAND_AMF3: Final = 17
DATA_AMF0: Final = 18
COMMAND_AMF0: Final = 20

# User Control event types (§7.1.7).
STREAM_BEGIN: Final = 0
STREAM_EOF: Final = 1
STREAM_DRY: Final = 2
SET_BUFFER_LENGTH: Final = 3
STREAM_IS_RECORDED: Final = 4
PING_REQUEST: Final = 6
PING_RESPONSE: Final = 7

# Set Peer Bandwidth limit types (§5.4.5).
LIMIT_HARD: Final = 0
LIMIT_SOFT: Final = 1
LIMIT_DYNAMIC: Final = 2

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_USER_CONTROL_HEAD = struct.Struct(">HI")


def _control(type_id: int, payload: bytes) -> Message:
    return Message(type_id, 0, 0, payload)


def set_chunk_size(size: int) -> Message:
    return _control(SET_CHUNK_SIZE, _U32.pack(size))


def abort(csid: int) -> Message:
    return _control(ABORT, _U32.pack(csid))


def acknowledgement(sequence_number: int) -> Message:
    """Acknowledgement of ``sequence_number`` bytes received so far (mod 2^32)."""
    return _control(ACKNOWLEDGEMENT, _U32.pack(sequence_number & 0xFFFFFFFF))


def window_ack_size(size: int) -> Message:
    return _control(WINDOW_ACK_SIZE, _U32.pack(size))


def set_peer_bandwidth(size: int, limit_type: int = LIMIT_DYNAMIC) -> Message:
    return _control(SET_PEER_BANDWIDTH, _U32.pack(size) + bytes([limit_type]))


def parse_u32(payload: bytes, what: str) -> int:
    """The 32-bit big-endian number that Acknowledgement and Window Ack Size carry."""
    if len(payload) != 4:
        raise ValueError(f"RTMP {what}: payload must be 4 bytes")
    value: int = _U32.unpack(payload)[0]
    return value


def parse_peer_bandwidth(payload: bytes) -> tuple[int, int]:
    """Window size and limit type of a Set Peer Bandwidth message."""
    if len(payload) != 5:
        raise ValueError("RTMP Set Peer Bandwidth: payload must be 5 bytes")
    return _U32.unpack_from(payload)[0], payload[4]


@dataclass(frozen=True)
class UserControl:
    """A User Control event: its type and first 32-bit value (stream id or ping timestamp).

    ``extra`` holds the buffer length of Set Buffer Length (the only event with two values).
    """

    event: int
    value: int
    extra: int | None = None

    @classmethod
    def parse(cls, payload: bytes) -> UserControl:
        if len(payload) < 6:
            raise ValueError("RTMP User Control: payload shorter than 6 bytes")
        event, value = _USER_CONTROL_HEAD.unpack_from(payload)
        extra = None
        if event == SET_BUFFER_LENGTH:
            if len(payload) < 10:
                raise ValueError("RTMP User Control: Set Buffer Length shorter than 10 bytes")
            extra = _U32.unpack_from(payload, 6)[0]
        return cls(event, value, extra)

    def __bytes__(self) -> bytes:
        head = _USER_CONTROL_HEAD.pack(self.event, self.value & 0xFFFFFFFF)
        return head if self.extra is None else head + _U32.pack(self.extra)

    def message(self) -> Message:
        return _control(USER_CONTROL, bytes(self))


@dataclass(frozen=True)
class Command:
    """An AMF0 command (type 20): name, transaction id, command object, then arguments."""

    name: str
    transaction_id: float = 0.0
    command_object: Any = None
    args: list[Any] = field(default_factory=list)

    @classmethod
    def parse(cls, payload: bytes) -> Command:
        values = amf0.decode(payload)
        if len(values) < 2 or not isinstance(values[0], str):
            raise ValueError("RTMP command: expected a name and a transaction id")
        name, txn = values[0], values[1]
        if not isinstance(txn, float):
            raise ValueError(f"RTMP command {name!r}: transaction id is not a number")
        cmd_obj = values[2] if len(values) > 2 else None
        return cls(name, txn, cmd_obj, values[3:])

    def __bytes__(self) -> bytes:
        return amf0.encode(self.name, self.transaction_id, self.command_object, *self.args)

    def message(self, stream_id: int = 0) -> Message:
        return Message(COMMAND_AMF0, stream_id, 0, bytes(self))

    def arg_str(self, index: int) -> str:
        """Argument ``index`` as a string (a publish or play name), or ValueError."""
        if index >= len(self.args) or not isinstance(self.args[index], str):
            raise ValueError(f"RTMP command {self.name!r}: argument {index} is not a string")
        value: str = self.args[index]
        return value


def status(code: str, description: str, level: str = "status", **extra: Any) -> Command:
    """An ``onStatus`` command (NetStream status events, §7.2.2)."""
    info: dict[str, Any] = {"level": level, "code": code, "description": description}
    info.update(extra)
    return Command("onStatus", 0.0, None, [info])


def data_message(*values: Any, stream_id: int = 1, timestamp: int = 0) -> Message:
    return Message(DATA_AMF0, stream_id, timestamp, amf0.encode(*values))


def parse_metadata(payload: bytes) -> dict[str, Any] | None:
    """The properties of an ``onMetaData`` data message, with or without ``@setDataFrame``.

    Return None for other data messages.
    """
    values = amf0.decode(payload)
    if values and values[0] == "@setDataFrame":
        values = values[1:]
    if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
        return dict(values[1])
    return None
