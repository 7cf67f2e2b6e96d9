"""One file from the recordings of a stream that left and came back (ZEGO
ResumeWithoutInterruption and FillBlank in single-stream mode): the parts are remuxed, untouched,
into one file, each part's timeline following on from the previous one, either closing over
the interruption or keeping it, with silent sound filling it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from cloudrec.core.tasks import FileFormat
from cloudrec.media.recorder.remux import open_output

log = logging.getLogger("cloudrec.concat")


@dataclass(frozen=True)
class Part:
    path: Path
    begin_s: float  # Unix time of its first media
    duration_s: float


def compatible(parts: list[Part]) -> bool:
    """Whether the parts' tracks match (same kinds, codecs, picture size, sound layout), so
    that one file can hold them all."""

    def shape(path: Path) -> list[tuple[Any, ...]]:
        with av.open(str(path)) as c:
            return [
                (
                    s.type,
                    s.codec_context.name,
                    getattr(s.codec_context, "width", None),
                    getattr(s.codec_context, "height", None),
                    getattr(s.codec_context, "sample_rate", None),
                    getattr(s.codec_context, "channels", None),
                    s.codec_context.profile,
                    bytes(s.codec_context.extradata or b""),  # SPS/PPS, AudioSpecificConfig
                )
                for s in c.streams
                if s.type in ("video", "audio")
            ]

    try:
        shapes = [shape(p.path) for p in parts]
    except (av.FFmpegError, OSError):
        return False
    return all(s == shapes[0] and s for s in shapes)


def concatenate(
    parts: list[Part], fmt: FileFormat, dest: Path, fill_gaps: bool, hls_segment_s: int = 15
) -> float:
    """Write ``parts`` (in time order) into ``dest`` as one recording; return its duration
    in seconds.  ``fill_gaps``: the interruptions stay in the timeline and the sound is
    filled with silence; else the timeline closes over them."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(parts[0].path)) as first:
        templates = [s for s in first.streams if s.type in ("video", "audio")]
        out = open_output(fmt, dest, hls_segment_s)
        streams = {s.index: out.add_stream_from_template(s) for s in templates}
        kinds = {s.index: s.type for s in templates}
        sound: Any = next((s.codec_context for s in templates if s.type == "audio"), None)
        codec = sound.name if sound is not None else ""
        rate = sound.sample_rate if sound is not None else 0
        layout = sound.layout.name if sound is not None else ""
    at = 0.0  # where the next part starts in the output (s)
    end = 0.0
    try:
        for n, part in enumerate(parts):
            if n and fill_gaps:
                gap = part.begin_s - (parts[n - 1].begin_s + parts[n - 1].duration_s)
                if gap > 0:
                    audio = [i for i, k in kinds.items() if k == "audio"]
                    if audio and codec == "aac":  # silence is encoded as AAC
                        _silence(out, streams[audio[0]], rate, layout, end, gap)
                    at = end + gap
            end = max(end, _append(part.path, out, streams, at))
            at = end
    finally:
        out.close()
    return end


def _append(path: Path, out: Any, streams: dict[int, Any], at: float) -> float:
    """Mux every packet of ``path`` shifted to start at ``at`` seconds; return where the
    part ends."""
    end = at
    with av.open(str(path)) as c:
        wanted: list[Any] = [s for s in c.streams if s.index in streams]
        start = min(
            (float(s.start_time * s.time_base) for s in wanted if s.start_time is not None),
            default=0.0,
        )
        for packet in c.demux(wanted):
            if packet.dts is None or packet.size == 0:
                continue
            tb = packet.time_base
            shift = round((at - start) / tb)
            dts, pts = packet.dts, packet.pts if packet.pts is not None else packet.dts
            packet.dts, packet.pts = dts + shift, pts + shift
            packet.stream = streams[packet.stream.index]
            end = max(end, float((pts + shift + (packet.duration or 0)) * tb))
            out.mux(packet)
    return end


def _silence(out: Any, stream: Any, rate: int, layout: str, at: float, seconds: float) -> None:
    """Silent AAC frames from ``at`` for ``seconds``, encoded at the track's rate and layout
    (decodable with the track's own configuration: AAC-LC, same rate and channels)."""
    encoder = av.CodecContext.create("aac", "w")
    encoder.sample_rate = rate
    encoder.layout = layout
    encoder.format = "fltp"
    encoder.time_base = Fraction(1, rate)
    encoder.open()
    channels = encoder.layout.nb_channels
    samples = int(seconds * rate) // 1024 * 1024
    start = round(at * rate)
    packets: list[Any] = []
    for i in range(0, samples, 1024):
        frame = av.AudioFrame.from_ndarray(
            np.zeros((channels, 1024), np.float32), format="fltp", layout=layout
        )
        frame.sample_rate = rate
        frame.pts = i
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    # One packet per 1024 samples, laid end to end from ``at`` (the encoder's own times
    # start before zero: its priming).
    for k, packet in enumerate(packets[: samples // 1024]):
        packet.pts = packet.dts = start + k * 1024
        packet.duration = 1024
        packet.time_base = Fraction(1, rate)  # the muxer rescales to the track's
        packet.stream = stream
        out.mux(packet)
