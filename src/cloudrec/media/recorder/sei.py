"""H.264 user-data-unregistered SEI (ITU-T H.264 D.1.6, payloadType 5), built by hand so that
every frame can carry it (FFmpeg's h264_metadata adds SEI to keyframes only)."""

from __future__ import annotations

import uuid

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
