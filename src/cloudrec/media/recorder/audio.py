"""Audio formats that are encoded rather than remuxed: MP3 (libmp3lame) and Ogg (Opus,
libopus; the PyAV wheel has no libvorbis).  Both are written with ``flush_packets`` so that
a killed worker leaves a file that plays up to its last packet (an Ogg page: about 1 s).

PyAV's encoder converts the sample format and re-frames to the codec's frame size itself
(1152 samples for MP3, 960 for Opus), so callers hand it frames of any size.  A publisher
whose sound changes mid-stream (a new AudioSpecificConfig: 44.1 kHz mono to 48 kHz stereo,
issue 10 item 11) is resampled to what the file began with, so the file goes on.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av

from cloudrec.core.tasks import FileFormat

ENCODED_FORMATS = (FileFormat.MP3, FileFormat.OGG)
CODECS = {FileFormat.MP3: "libmp3lame", FileFormat.OGG: "libopus"}
DEFAULT_KBPS = {FileFormat.MP3: 128, FileFormat.OGG: 64}
MP3_RATES = (32000, 44100, 48000)
OPUS_RATE = 48000  # Opus codes 48 kHz; an Ogg Opus file plays at 48 kHz whatever went in


def add_audio_encoder(
    container: Any, fmt: FileFormat, rate: int, channels: int, kbps: int | None = None
) -> Any:
    """An encoding audio stream in ``container`` for ``fmt``: the source's rate where the
    codec takes it (else 48 kHz), mono or stereo as the source."""
    if fmt is FileFormat.OGG:
        rate = OPUS_RATE
    elif rate not in MP3_RATES:
        rate = 48000
    stream = container.add_stream(CODECS[fmt], rate=rate)
    stream.layout = "mono" if channels == 1 else "stereo"
    stream.bit_rate = (kbps or DEFAULT_KBPS[fmt]) * 1000
    return stream


class AudioEncoder:
    """Encodes decoded frames into one file's audio stream.  Frames are stamped back to back
    from zero: the recorder has already cut the source and closed paused spans, and
    timestamps taken from the source (whole milliseconds in FLV) would jitter."""

    def __init__(self, container: Any, fmt: FileFormat, source: Any) -> None:
        ctx = source.codec_context
        self.container = container
        self.stream = add_audio_encoder(container, fmt, ctx.sample_rate or 48000, ctx.channels)
        self.seconds = 0.0  # of sound encoded so far
        self._shape: tuple[int, str, str] | None = None  # the first frame's rate, layout, format
        self._convert: Any = None  # a resampler to that shape, once the sound changed
        self._convert_from: tuple[int, str, str] | None = None

    def encode(self, frame: Any) -> None:
        shape = (frame.sample_rate, frame.layout.name, frame.format.name)
        if self._shape is None:
            self._shape = shape
        if shape == self._shape:
            self._encode(frame)
            return
        if self._convert is None or self._convert_from != shape:
            rate, layout, fmt = self._shape
            self._convert = av.AudioResampler(format=fmt, layout=layout, rate=rate)
            self._convert_from = shape
        for converted in self._convert.resample(frame):
            self._encode(converted)

    def _encode(self, frame: Any) -> None:
        rate = frame.sample_rate
        frame.pts = round(self.seconds * rate)
        frame.time_base = Fraction(1, rate)
        self.seconds += frame.samples / rate
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def flush(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
