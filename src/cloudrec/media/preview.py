"""A preview picture of a live stream: its first decodable frame, pulled from the stream's
play URL (the ingest starts a new player on the current GOP's keyframe), scaled down, as JPEG."""

from __future__ import annotations

import io
from typing import Any

from cloudrec.media.inputs import open_input

MAX_PACKETS = 300  # a keyframe that does not come within this many packets: no preview


def preview_jpeg(url: str, width: int = 320, timeout_s: float = 5.0) -> bytes:
    """The JPEG of the stream's first frame, ``width`` wide; ``LookupError`` when the stream
    has no video or no frame came; PyAV's errors when it cannot be opened or read."""
    container: Any = open_input(url, timeout=(timeout_s, timeout_s))
    try:
        if not container.streams.video:
            raise LookupError("the stream has no video")
        stream = container.streams.video[0]
        for n, packet in enumerate(container.demux(stream)):
            if n >= MAX_PACKETS:
                break
            for frame in packet.decode():
                image = frame.to_image()
                height = max(2, round(image.height * width / max(1, image.width)))
                out = io.BytesIO()
                image.resize((width, height)).save(out, "JPEG", quality=80)
                return out.getvalue()
        raise LookupError("no picture came from the stream")
    finally:
        container.close()
