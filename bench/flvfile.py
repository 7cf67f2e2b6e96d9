"""The load generator's media: a generated ~2 Mbps H.264/AAC FLV file, read back as tags.

FLV layout (Adobe "Video File Format Specification v10.1", Annex E.2-E.4): a 9-byte header
(``FLV``, version, flags, header size), then ``PreviousTagSize0`` and tags, each an 11-byte
header (type, 24-bit size, 24-bit timestamp + 8-bit extension, 24-bit stream id), the body, and
a 32-bit ``PreviousTagSize``.
"""

from __future__ import annotations

import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

SAMPLE_SECONDS: Final = 10
VIDEO_KBPS: Final = 1900
AUDIO_KBPS: Final = 96
FPS: Final = 30
GOP_FRAMES: Final = 60

TAG_AUDIO: Final = 8
TAG_VIDEO: Final = 9
TAG_SCRIPT: Final = 18

_HEADER = struct.Struct(">3sBBI")
_TAG_HEADER_SIZE: Final = 11


@dataclass(frozen=True, slots=True)
class Tag:
    """One FLV tag: its type (8 audio, 9 video, 18 script data), timestamp (ms) and body."""

    type_id: int
    timestamp: int
    body: bytes


def sample_flv(cache_dir: Path) -> Path:
    """A ~2 Mbps 1280x720 30 fps H.264 + 96 kb/s AAC FLV of ``SAMPLE_SECONDS``, made once.

    The picture is testsrc2 with noise, so that x264 actually spends the bit rate; the GOP is
    ``GOP_FRAMES`` frames with no scene-cut key frames, so every loop starts on a key frame.
    """
    path = cache_dir / f"sample-{VIDEO_KBPS}k-{SAMPLE_SECONDS}s.flv"
    if path.exists() and path.stat().st_size > 0:
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.flv")
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size=1280x720:rate={FPS}:duration={SAMPLE_SECONDS},noise=alls=12:allf=t",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate=44100:duration={SAMPLE_SECONDS}",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-b:v",
            f"{VIDEO_KBPS}k",
            "-maxrate",
            f"{VIDEO_KBPS}k",
            "-bufsize",
            f"{VIDEO_KBPS}k",
            "-g",
            str(GOP_FRAMES),
            "-keyint_min",
            str(GOP_FRAMES),
            "-sc_threshold",
            "0",
            "-c:a",
            "aac",
            "-b:a",
            f"{AUDIO_KBPS}k",
            "-ac",
            "2",
            "-f",
            "flv",
            str(partial),
        ],
        check=True,
        timeout=300,
    )
    partial.rename(path)
    return path


def read_tags(path: Path) -> list[Tag]:
    """Every tag of the FLV file at ``path``; raise ValueError if it is not FLV."""
    data = path.read_bytes()
    if len(data) < _HEADER.size:
        raise ValueError(f"FLV: {path} is shorter than its header")
    signature, _version, _flags, offset = _HEADER.unpack_from(data)
    if signature != b"FLV":
        raise ValueError(f"FLV: {path} does not start with 'FLV'")
    tags: list[Tag] = []
    pos = offset + 4  # skip PreviousTagSize0
    while pos + _TAG_HEADER_SIZE <= len(data):
        type_id = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        timestamp = int.from_bytes(data[pos + 4 : pos + 7], "big") | data[pos + 7] << 24
        body_at = pos + _TAG_HEADER_SIZE
        if body_at + size > len(data):
            raise ValueError(f"FLV: tag at offset {pos} runs past the end of {path}")
        tags.append(Tag(type_id, timestamp, data[body_at : body_at + size]))
        pos = body_at + size + 4
    return tags
