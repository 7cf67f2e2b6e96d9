"""H.264 user-data-unregistered SEI (ITU-T H.264 D.1.6, payloadType 5), built by hand so that
every frame can carry it (FFmpeg's h264_metadata adds SEI to keyframes only)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av

# A fixed UUID names cloudrec's payloads (uuid5 of the project URL namespace).
CLOUDREC_SEI_UUID = uuid.uuid5(uuid.NAMESPACE_URL, "cloudrec/base64seidata").bytes
USER_DATA_UNREGISTERED = 5
NAL_SEI = 6


def _emulation_prevention(rbsp: bytes) -> bytes:
    """Insert 0x03 after two zero bytes followed by a byte <= 3 (H.264 7.4.1)."""
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def sei_nal(payload: bytes, uid: bytes = CLOUDREC_SEI_UUID) -> bytes:
    """One SEI NAL unit (no start code, no length prefix) carrying ``payload``."""
    body = uid + payload
    size = len(body)
    header = bytearray([USER_DATA_UNREGISTERED])
    while size >= 255:
        header.append(255)
        size -= 255
    header.append(size)
    rbsp = bytes(header) + body + b"\x80"  # rbsp_trailing_bits
    return bytes([NAL_SEI]) + _emulation_prevention(rbsp)  # nal_ref_idc 0, type 6


def avcc_prefixed(nal: bytes, length_size: int = 4) -> bytes:
    return len(nal).to_bytes(length_size, "big") + nal


def find_sei_payloads(
    avcc: bytes, length_size: int = 4, uid: bytes = CLOUDREC_SEI_UUID
) -> list[bytes]:
    """The payloads of our user-data-unregistered SEI messages in an AVCC access unit."""
    found = []
    i = 0
    while i + length_size <= len(avcc):
        n = int.from_bytes(avcc[i : i + length_size], "big")
        nal = avcc[i + length_size : i + length_size + n]
        i += length_size + n
        if not nal or nal[0] & 0x1F != NAL_SEI:
            continue
        rbsp = nal[1:].replace(b"\x00\x00\x03", b"\x00\x00")
        if not rbsp or rbsp[0] != USER_DATA_UNREGISTERED:
            continue
        j, size = 1, 0
        while j < len(rbsp) and rbsp[j] == 255:
            size += 255
            j += 1
        size += rbsp[j]
        body = rbsp[j + 1 : j + 1 + size]
        if body[:16] == uid:
            found.append(body[16:])
    return found


def nal_units(data: bytes) -> Iterator[bytes]:
    """The NAL units of an access unit, Annex B (start codes, as in MPEG-TS) or AVCC (4-byte
    lengths, as in MP4 and FLV)."""
    if data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
        for part in re.split(b"\x00\x00\x01", data):
            nal = part.rstrip(b"\x00")
            if nal:
                yield nal
        return
    i = 0
    while i + 4 <= len(data):
        n = int.from_bytes(data[i : i + 4], "big")
        yield data[i + 4 : i + 4 + n]
        i += 4 + n


def user_data(nal: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(UUID, payload) of each user-data-unregistered message in an SEI NAL unit."""
    if not nal or nal[0] & 0x1F != NAL_SEI:
        return
    rbsp = nal[1:].replace(b"\x00\x00\x03", b"\x00\x00")
    i = 0
    while i < len(rbsp) and rbsp[i] != 0x80:
        kind = size = 0
        while i < len(rbsp) and rbsp[i] == 255:
            kind, i = kind + 255, i + 1
        if i >= len(rbsp):
            return
        kind, i = kind + rbsp[i], i + 1
        while i < len(rbsp) and rbsp[i] == 255:
            size, i = size + 255, i + 1
        if i >= len(rbsp):
            return
        size, i = size + rbsp[i], i + 1
        body = rbsp[i : i + size]
        i += size
        if kind == USER_DATA_UNREGISTERED and len(body) >= 16:
            yield body[:16], body[16:]


def custom_timestamp(payload: bytes) -> int | None:
    """The Unix time in milliseconds a publisher put in an SEI payload: 13 ASCII digits, or a
    JSON object with an integer ``timestamp`` member (the protocol cloudrec reads for ZEGO's
    CustomBeginTimestamp)."""
    text = payload.rstrip(b"\x00").strip()
    if re.fullmatch(rb"\d{13}", text):
        return int(text)
    try:
        data: Any = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None
    value = data.get("timestamp") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def begin_timestamp(path: Path, packets: int = 250) -> int:
    """The first custom timestamp carried in a recording's SEI (within its first
    ``packets`` video packets), or 0 when it carries none."""
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return 0
            for n, packet in enumerate(c.demux(c.streams.video[0])):
                if n >= packets:
                    break
                for nal in nal_units(bytes(packet)):
                    for _, payload in user_data(nal):
                        ts = custom_timestamp(payload)
                        if ts is not None:
                            return ts
    except (av.FFmpegError, OSError):
        return 0
    return 0
