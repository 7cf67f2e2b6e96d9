"""AMF0 (Action Message Format 0) encoding and decoding, sans I/O.

Reference: Adobe "Action Message Format -- AMF 0" (amf0-file-format-specification.pdf), §2.
Python values map to AMF0 types as follows::

    float / int      number (IEEE 754 double)      bool        boolean
    str              string, or long string when > 65535 UTF-8 bytes
    None             null                          UNDEFINED   undefined
    dict[str, Any]   object                        EcmaArray   ECMA array
    list             strict array                  Date        date

Decoding is bounded: nesting deeper than :data:`MAX_DEPTH` and every length that runs past the
end of the input raise :class:`ValueError`, and nothing else escapes from hostile input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final

NUMBER: Final = 0x00
BOOLEAN: Final = 0x01
STRING: Final = 0x02
OBJECT: Final = 0x03
NULL: Final = 0x05
UNDEFINED_MARKER: Final = 0x06
ECMA_ARRAY: Final = 0x08
OBJECT_END: Final = 0x09
STRICT_ARRAY: Final = 0x0A
DATE: Final = 0x0B
LONG_STRING: Final = 0x0C

MAX_DEPTH: Final = 32
"""Deepest nesting of objects and arrays accepted by :func:`decode`."""

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE = struct.Struct(">dh")


class _Undefined:
    """The AMF0 ``undefined`` value (distinct from ``null``, which is ``None``)."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = _Undefined()


class EcmaArray(dict[str, Any]):
    """An AMF0 ECMA array: an associative array, as sent in ``onMetaData``."""


@dataclass(frozen=True)
class Date:
    """An AMF0 date: milliseconds since the Unix epoch, and a time zone offset (in minutes)."""

    ms: float
    tz_minutes: int = 0


def encode(*values: Any) -> bytes:
    """Encode ``values`` one after the other, as in an RTMP command message."""
    out = bytearray()
    for value in values:
        _encode_value(out, value)
    return bytes(out)


def _encode_key(out: bytearray, key: str) -> None:
    raw = key.encode()
    if len(raw) > 0xFFFF:
        raise ValueError("AMF0: object key longer than 65535 bytes")
    out += _U16.pack(len(raw))
    out += raw


def _encode_value(out: bytearray, value: Any) -> None:
    if value is None:
        out.append(NULL)
    elif value is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif isinstance(value, bool):
        out.append(BOOLEAN)
        out.append(1 if value else 0)
    elif isinstance(value, int | float):
        out.append(NUMBER)
        out += _DOUBLE.pack(float(value))
    elif isinstance(value, str):
        raw = value.encode()
        if len(raw) <= 0xFFFF:
            out.append(STRING)
            out += _U16.pack(len(raw))
        else:
            out.append(LONG_STRING)
            out += _U32.pack(len(raw))
        out += raw
    elif isinstance(value, Date):
        out.append(DATE)
        out += _DATE.pack(value.ms, value.tz_minutes)
    elif isinstance(value, dict):
        if isinstance(value, EcmaArray):
            out.append(ECMA_ARRAY)
            out += _U32.pack(len(value))
        else:
            out.append(OBJECT)
        for key, item in value.items():
            _encode_key(out, str(key))
            _encode_value(out, item)
        out += b"\x00\x00\x09"
    elif isinstance(value, list | tuple):
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode_value(out, item)
    else:
        raise TypeError(f"AMF0: cannot encode {type(value).__name__}")


def decode(data: bytes | bytearray | memoryview) -> list[Any]:
    """Decode every value in ``data``; raise :class:`ValueError` on malformed input."""
    view = memoryview(data)
    values: list[Any] = []
    pos = 0
    while pos < len(view):
        value, pos = decode_value(view, pos)
        values.append(value)
    return values


def decode_value(data: memoryview, pos: int, depth: int = 0) -> tuple[Any, int]:
    """Decode one value at ``pos``; return it and the offset just past it."""
    end = len(data)
    if pos >= end:
        raise ValueError(f"AMF0: truncated data at offset {pos}")
    marker = data[pos]
    pos += 1
    if marker == NUMBER:
        _need(data, pos, 8)
        return _DOUBLE.unpack_from(data, pos)[0], pos + 8
    if marker == BOOLEAN:
        _need(data, pos, 1)
        return data[pos] != 0, pos + 1
    if marker == STRING:
        _need(data, pos, 2)
        (n,) = _U16.unpack_from(data, pos)
        return _text(data, pos + 2, n)
    if marker == LONG_STRING:
        _need(data, pos, 4)
        (n,) = _U32.unpack_from(data, pos)
        return _text(data, pos + 4, n)
    if marker == NULL:
        return None, pos
    if marker == UNDEFINED_MARKER:
        return UNDEFINED, pos
    if marker == OBJECT:
        obj: dict[str, Any] = {}
        return obj, _decode_properties(data, pos, depth, obj)
    if marker == ECMA_ARRAY:
        # The count is a hint only: encoders disagree with it, so read until the end marker.
        _need(data, pos, 4)
        arr = EcmaArray()
        return arr, _decode_properties(data, pos + 4, depth, arr)
    if marker == STRICT_ARRAY:
        _need(data, pos, 4)
        (count,) = _U32.unpack_from(data, pos)
        pos += 4
        if count > end - pos:  # every value takes at least one byte
            raise ValueError(f"AMF0: strict array of {count} items overruns the data")
        _check_depth(depth)
        items: list[Any] = []
        for _ in range(count):
            item, pos = decode_value(data, pos, depth + 1)
            items.append(item)
        return items, pos
    if marker == DATE:
        _need(data, pos, 10)
        ms, tz = _DATE.unpack_from(data, pos)
        return Date(ms, tz), pos + 10
    if marker == OBJECT_END:
        raise ValueError(f"AMF0: unexpected object end at offset {pos - 1}")
    raise ValueError(f"AMF0: unsupported type marker 0x{marker:02x} at offset {pos - 1}")


def _need(data: memoryview, pos: int, n: int) -> None:
    if pos + n > len(data):
        raise ValueError(f"AMF0: truncated data at offset {pos}")


def _check_depth(depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise ValueError(f"AMF0: nesting deeper than {MAX_DEPTH} levels")


def _text(data: memoryview, pos: int, n: int) -> tuple[str, int]:
    _need(data, pos, n)
    try:
        return str(data[pos : pos + n], "utf-8"), pos + n
    except UnicodeDecodeError as exc:
        raise ValueError(f"AMF0: string at offset {pos} is not UTF-8") from exc


def _decode_properties(data: memoryview, pos: int, depth: int, into: dict[str, Any]) -> int:
    _check_depth(depth)
    while True:
        _need(data, pos, 2)
        (n,) = _U16.unpack_from(data, pos)
        key, pos = _text(data, pos + 2, n)
        if n == 0:
            _need(data, pos, 1)
            if data[pos] == OBJECT_END:
                return pos + 1
        into[key], pos = decode_value(data, pos, depth + 1)
