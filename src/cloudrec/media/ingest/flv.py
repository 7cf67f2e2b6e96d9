"""Inspect FLV audio/video tag bodies as carried in RTMP audio (8) and video (9) messages.

References: Adobe "Video File Format Specification v10.1", Annex E.4.2-E.4.3 (tag bodies);
Veovera "Enhanced RTMP" v1 (``IsExHeader`` bit, FourCC codec ids); ISO/IEC 14496-3 §1.6.2.1
(AudioSpecificConfig); ITU-T H.264 §7.3.2.1.1 (sequence parameter set).
"""

from __future__ import annotations

from typing import Final

VIDEO_CODECS: Final[dict[int, str]] = {2: "flv1", 3: "flashsv", 4: "vp6f", 7: "h264", 12: "hevc"}
VIDEO_FOURCCS: Final[dict[bytes, str]] = {
    b"avc1": "h264",
    b"hvc1": "hevc",
    b"av01": "av1",
    b"vp09": "vp9",
}
AUDIO_CODECS: Final[dict[int, str]] = {
    0: "pcm",
    1: "adpcm_swf",
    2: "mp3",
    3: "pcm_s16le",
    4: "nellymoser",
    5: "nellymoser",
    6: "nellymoser",
    7: "pcm_alaw",
    8: "pcm_mulaw",
    10: "aac",
    11: "speex",
    14: "mp3",
}
_FRAME_KEY: Final = 1
_EX_SEQUENCE_START: Final = 0
_AAC_RATES: Final = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000,
                     11025, 8000, 7350)  # fmt: skip


def video_codec(body: bytes) -> str | None:
    """FFmpeg name of the codec of a video tag body, or None if unknown or empty."""
    if not body:
        return None
    if body[0] & 0x80:
        return VIDEO_FOURCCS.get(bytes(body[1:5])) if len(body) >= 5 else None
    return VIDEO_CODECS.get(body[0] & 0x0F)


def is_keyframe(body: bytes) -> bool:
    """Whether a video tag body holds a key frame (or a sequence header, also frame type 1)."""
    return bool(body) and (body[0] >> 4) & 0x07 == _FRAME_KEY


def is_video_sequence_header(body: bytes) -> bool:
    """Whether a video tag body is a decoder configuration record (AVC/HEVC sequence header)."""
    if len(body) < 2:
        return False
    if body[0] & 0x80:
        return body[0] & 0x0F == _EX_SEQUENCE_START
    return body[0] & 0x0F in (7, 12) and body[1] == 0


def audio_codec(body: bytes) -> str | None:
    """FFmpeg name of the codec of an audio tag body, or None if unknown or empty."""
    return AUDIO_CODECS.get(body[0] >> 4) if body else None


def is_aac_sequence_header(body: bytes) -> bool:
    return len(body) >= 2 and body[0] >> 4 == 10 and body[1] == 0


def audio_flags(body: bytes) -> tuple[int, int]:
    """Sample rate (Hz) and channels from an audio tag's first byte (not exact for AAC)."""
    if not body:
        raise ValueError("FLV audio: empty tag body")
    rate = (5512, 11025, 22050, 44100)[(body[0] >> 2) & 0x03]
    return rate, 2 if body[0] & 0x01 else 1


def parse_audio_specific_config(asc: bytes) -> tuple[int, int]:
    """Sample rate (Hz) and channel count from an AAC AudioSpecificConfig."""
    if len(asc) < 2:
        raise ValueError("AAC AudioSpecificConfig: shorter than 2 bytes")
    bits = _BitReader(asc)
    object_type = bits.read(5)
    if object_type == 31:
        bits.read(6)
    index = bits.read(4)
    if index == 15:
        rate = bits.read(24)
    elif index < len(_AAC_RATES):
        rate = _AAC_RATES[index]
    else:
        raise ValueError(f"AAC AudioSpecificConfig: reserved sampling frequency index {index}")
    channel_config = bits.read(4)
    channels = 8 if channel_config == 7 else channel_config
    return rate, channels


def parse_avc_dimensions(record: bytes) -> tuple[int, int]:
    """Width and height from an AVCDecoderConfigurationRecord's first SPS."""
    if len(record) < 8 or record[0] != 1:
        raise ValueError("AVC configuration record: malformed")
    if record[5] & 0x1F == 0:
        raise ValueError("AVC configuration record: no SPS")
    n = int.from_bytes(record[6:8], "big")
    if len(record) < 8 + n or n < 4:
        raise ValueError("AVC configuration record: SPS overruns the record")
    return _sps_dimensions(_unescape(record[8 : 8 + n]))


def _unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def _sps_dimensions(sps: bytes) -> tuple[int, int]:
    bits = _BitReader(sps[1:])  # skip the NAL header
    profile = bits.read(8)
    bits.read(16)  # constraint flags, level
    bits.ue()  # seq_parameter_set_id
    chroma_format = 1
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma_format = bits.ue()
        if chroma_format == 3:
            bits.read(1)
        bits.ue()  # bit_depth_luma
        bits.ue()  # bit_depth_chroma
        bits.read(1)
        if bits.read(1):  # seq_scaling_matrix_present
            for i in range(8 if chroma_format != 3 else 12):
                if bits.read(1):
                    _skip_scaling_list(bits, 16 if i < 6 else 64)
    bits.ue()  # log2_max_frame_num
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.read(1)
        bits.se()
        bits.se()
        for _ in range(min(bits.ue(), 255)):
            bits.se()
    bits.ue()  # max_num_ref_frames
    bits.read(1)
    width_mbs = bits.ue() + 1
    height_units = bits.ue() + 1
    frame_mbs_only = bits.read(1)
    if not frame_mbs_only:
        bits.read(1)
    bits.read(1)
    width, height = width_mbs * 16, height_units * 16 * (2 - frame_mbs_only)
    if bits.read(1):  # frame_cropping_flag
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        crop_x = 1 if chroma_format in (0, 3) else 2
        crop_y = (1 if chroma_format in (0, 2, 3) else 2) * (2 - frame_mbs_only)
        width -= (left + right) * crop_x
        height -= (top + bottom) * crop_y
    if width <= 0 or height <= 0:
        raise ValueError("H.264 SPS: cropping leaves no picture")
    return width, height


def _skip_scaling_list(bits: _BitReader, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt:
            nxt = (last + bits.se()) % 256
        last = nxt or last


class _BitReader:
    """Big-endian bit reader over a small header (SPS, AudioSpecificConfig)."""

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._left = len(data) * 8

    def read(self, n: int) -> int:
        if n > self._left:
            raise ValueError("bitstream: truncated")
        self._left -= n
        return (self._value >> self._left) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while self.read(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bitstream: Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.read(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)
