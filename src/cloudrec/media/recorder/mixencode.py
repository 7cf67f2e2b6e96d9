"""The encoders of a mix's outputs: H.264 (libx264 veryfast, VBV-capped, fixed GOP) and AAC (or
MP3 / Opus for those formats) into one container per output, the SEI of the mixconfig in front
of every picture."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from cloudrec.core.mixing import MixSpec
from cloudrec.core.tasks import FileFormat, TrackType
from cloudrec.media.recorder.audio import ENCODED_FORMATS, add_audio_encoder
from cloudrec.media.recorder.mixinput import CHANNELS, RATE
from cloudrec.media.recorder.remux import open_output
from cloudrec.media.recorder.sei import avcc_prefixed, sei_nal


@dataclass
class MixOutput:
    path: Path
    format: FileFormat
    track: TrackType


@dataclass
class Encoders:
    """One output's container and its encoders (None: the output has no such track)."""

    container: Any
    video: Any | None = None
    audio: Any | None = None
    fifo: av.AudioFifo | None = None  # sound in 1024-sample frames for the audio encoder

    def encode(
        self, video: av.VideoFrame | None, pcm: np.ndarray, audio_pts: int, sei: bytes | None
    ) -> None:
        """One output frame: its picture (None: no picture this time) and its sound (s16
        stereo at ``RATE``, starting at sample ``audio_pts``)."""
        if video is not None and self.video is not None:
            for packet in self.video.encode(video):
                self.container.mux(with_sei(packet, sei) if sei else packet)
        if self.audio is not None and self.fifo is not None and len(pcm):
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="stereo")
            frame.sample_rate = RATE
            frame.pts = audio_pts
            frame.time_base = Fraction(1, RATE)
            self.fifo.write(frame)
            while (chunk := self.fifo.read(1024)) is not None:
                for packet in self.audio.encode(chunk):
                    self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoders and close the container."""
        for stream in (self.video, self.audio):
            if stream is not None:
                for packet in stream.encode(None):
                    self.container.mux(packet)
        self.container.close()


def with_sei(packet: Any, payload: bytes) -> Any:
    """The packet with a user-data-unregistered SEI carrying ``payload`` in front of its
    picture (Annex B or length-prefixed, as the encoder wrote it)."""
    data = bytes(packet)
    nal = sei_nal(payload)
    annex_b = data.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01"))
    prefix = b"\x00\x00\x00\x01" + nal if annex_b else avcc_prefixed(nal)
    out = av.Packet(prefix + data)
    out.pts, out.dts, out.duration = packet.pts, packet.dts, packet.duration
    out.time_base = packet.time_base
    out.is_keyframe = packet.is_keyframe
    out.stream = packet.stream
    return out


def open_encoders(out: MixOutput, spec: MixSpec) -> Encoders:
    """The output's file, opened, with the encoders its track type asks for."""
    out.path.parent.mkdir(parents=True, exist_ok=True)
    container = open_output(out.format, out.path, spec.hls_segment_s)
    c = Encoders(container)
    if out.track is not TrackType.AUDIO:
        v = container.add_stream("libx264", rate=spec.fps)
        v.width, v.height, v.pix_fmt = spec.width, spec.height, "yuv420p"
        kbps = spec.bitrate_kbps
        v.bit_rate = kbps * 1000
        v.codec_context.gop_size = spec.gop
        v.options = {
            "preset": "veryfast",
            "tune": "zerolatency",
            "maxrate": f"{kbps}k",
            "bufsize": f"{2 * kbps}k",
            "keyint_min": str(spec.gop),
            "sc_threshold": "0",
        }
        c.video = v
    if out.track is not TrackType.VIDEO:
        if out.format in ENCODED_FORMATS:  # MP3, Ogg (Opus): their own codecs
            a = add_audio_encoder(container, out.format, RATE, CHANNELS, spec.audio_bitrate_kbps)
        else:
            a = container.add_stream("aac", rate=RATE)
            a.layout = "stereo"
            a.bit_rate = spec.audio_bitrate_kbps * 1000
        c.audio = a
        c.fifo = av.AudioFifo()
    return c
