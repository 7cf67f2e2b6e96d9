"""Probe a live stream's media parameters by opening it with PyAV (FFmpeg)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av

from cloudrec.core.errors import CloudrecError
from cloudrec.core.rooms import StreamMeta
from cloudrec.media.inputs import open_input


def probe_stream(url: str, timeout_s: float = 10.0) -> StreamMeta:
    """Open ``url`` (RTMP: ``rw_timeout``, not ``timeout``, which switches to listen mode) and
    read its codecs, picture size, frame rate, sample rate and channels."""
    options = {"rw_timeout": str(int(timeout_s * 1_000_000))}
    try:
        with open_input(url, options=options, timeout=timeout_s) as container:
            meta: dict[str, object] = {}
            for s in container.streams:
                ctx: Any = s.codec_context
                if s.type == "video" and "video_codec" not in meta:
                    rate = s.average_rate or s.guessed_rate
                    meta.update(
                        video_codec=ctx.name,
                        width=ctx.width or None,
                        height=ctx.height or None,
                        fps=round(float(Fraction(rate)), 3) if rate else None,
                    )
                elif s.type == "audio" and "audio_codec" not in meta:
                    meta.update(
                        audio_codec=ctx.name,
                        audio_rate=ctx.sample_rate or None,
                        audio_channels=ctx.channels or None,
                    )
    except (av.FFmpegError, OSError) as exc:
        raise CloudrecError.unavailable(f"cannot probe {url}: {exc}") from exc
    return StreamMeta(**meta)  # type: ignore[arg-type]
