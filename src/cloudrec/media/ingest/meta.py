"""Build a :class:`~cloudrec.core.rooms.StreamMeta` from what a publisher sent.

``onMetaData`` (as ffmpeg's flv muxer and OBS write it) gives most fields; the AAC
AudioSpecificConfig and the H.264 SPS are more trustworthy for sample rate, channels and size,
so they win when present.
"""

from __future__ import annotations

from typing import Any

from cloudrec.core.rooms import StreamMeta
from cloudrec.media.ingest import flv


def _number(props: dict[str, Any], *names: str) -> float | None:
    for name in names:
        value = props.get(name)
        # Bounded: onMetaData is the publisher's word, and int(inf) would raise.
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1e9:
            return float(value)
    return None


def _codec(value: Any, by_id: dict[int, str], by_fourcc: dict[bytes, str]) -> str | None:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return by_id.get(int(value)) if 0 <= value < 256 else None
    if isinstance(value, str):
        return by_fourcc.get(value.encode()[:4], value.lower() or None)
    return None


def build_meta(
    metadata: dict[str, Any] | None,
    video: bytes | None,
    audio: bytes | None,
) -> StreamMeta:
    """``metadata`` from onMetaData; ``video``/``audio``: a sequence header or the first tag."""
    props = metadata or {}
    video_codec = flv.video_codec(video) if video else None
    video_codec = video_codec or _codec(
        props.get("videocodecid"), flv.VIDEO_CODECS, flv.VIDEO_FOURCCS
    )
    audio_codec = flv.audio_codec(audio) if audio else None
    audio_codec = audio_codec or _codec(
        props.get("audiocodecid"), flv.AUDIO_CODECS, {b"mp4a": "aac"}
    )

    width, height = _number(props, "width"), _number(props, "height")
    size: tuple[float, float] | None = (width, height) if width and height else None
    if video and video_codec == "h264" and flv.is_video_sequence_header(video):
        try:
            w, h = flv.parse_avc_dimensions(video[5:])
            size = (float(w), float(h))
        except ValueError:
            pass

    rate = _number(props, "audiosamplerate")
    channels = _number(props, "audiochannels")
    if channels is None and isinstance(props.get("stereo"), bool):
        channels = 2.0 if props["stereo"] else 1.0
    if audio and flv.is_aac_sequence_header(audio):
        try:
            r, c = flv.parse_audio_specific_config(audio[2:])
            rate, channels = float(r), float(c) if c else channels
        except ValueError:
            pass
    elif audio and audio_codec != "aac" and rate is None:
        r, c = flv.audio_flags(audio)
        rate, channels = float(r), channels or float(c)

    encoder = props.get("encoder")
    return StreamMeta(
        video_codec=video_codec,
        audio_codec=audio_codec,
        width=int(size[0]) if size else None,
        height=int(size[1]) if size else None,
        fps=_number(props, "framerate", "fps"),
        audio_rate=int(rate) if rate else None,
        audio_channels=int(channels) if channels else None,
        video_bitrate_kbps=_number(props, "videodatarate"),
        audio_bitrate_kbps=_number(props, "audiodatarate"),
        encoder=encoder if isinstance(encoder, str) else None,
    )
