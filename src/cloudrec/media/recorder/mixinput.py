"""The inputs of a mix: one thread per input stream decoding it (PyAV, GIL released) into a
buffer of its pictures and its sound at 48 kHz stereo, by source timestamp; the mixer takes
from each the picture and the sound of the same source moment (docs/mixing.md, "A/V sync").
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import av
import numpy as np

from cloudrec.core.tasks import Media
from cloudrec.media.inputs import open_input

RATE = 48000
CHANNELS = 2
READ_TIMEOUT_S = 5.0
# Sound further than this from its picture is cut or delayed to match (FLV times are in ms).
SYNC_TOLERANCE_S = 0.01
# An input is shown this far behind the newest media it has delivered: room for delivery and
# decoding to jitter without the picture or the sound running dry.
JITTER_S = 0.5
# An input whose newest media is further than this from its schedule (a timestamp jump, a
# pause, a mixer that fell behind) is put back on schedule at its newest media.
RESYNC_S = 1.5
# An input still sending sound whose last picture is this old has its camera off: the fill
# (patch) decides what its region shows.
VIDEO_OFF_S = 2.0
# Sound timestamps this far from where the queued sound ends are jitter (encoders that stamp
# sound by the system clock): the sound is taken as continuous.
GAP_TOLERANCE_S = 0.03
# An input whose clock runs slower or faster than ours drifts from JITTER_S behind its newest
# media: its schedule follows it by this much per output frame (5 ms/s at 25 fps), never
# noticeably, where a clock 100 ppm off drifts 0.1 ms/s.
SLEW_S = 0.0002


class InputBuffer:
    """One input's decoded pictures and sound, by source timestamp, and its schedule.

    The mixer asks for output time ``t`` (seconds of the file); the input answers with the
    picture and the sound taken at source time ``t + offset``, the offset being fixed when the
    input is first asked (``JITTER_S`` behind its newest media).  Picture and sound are chosen
    by the same source time, so they stay together whatever the delivery or decoding jitter:
    what arrives late is skipped, never shown out of step.
    """

    def __init__(self) -> None:
        self._pictures: deque[tuple[float, Any]] = deque()
        self._audio = np.zeros((0, CHANNELS), dtype=np.int16)
        self._head_ts: float | None = None  # source time of the first queued sample
        self._newest: float | None = None  # of any media received
        self._offset: float | None = None
        self._ended = False
        self.shown: Any = None  # the picture shown last, kept for patch mode "last"
        self._shown_ts = 0.0
        self._last_picture_ts: float | None = None

    def add_picture(self, ts: float, picture: Any) -> None:
        if self._last_picture_ts is not None and ts < self._last_picture_ts - RESYNC_S:
            self._restart(ts)
        self._last_picture_ts = ts
        self._seen(ts)
        self._pictures.append((ts, picture))
        horizon = ts - JITTER_S - RESYNC_S - 1.0
        while len(self._pictures) > 1 and self._pictures[0][0] < horizon:
            self._pictures.popleft()

    def add_audio(self, ts: float | None, pcm: np.ndarray) -> None:
        """``pcm`` (s16 stereo at ``RATE``) starting at source time ``ts``, or right after the
        previous sound when ``ts`` is None."""
        if ts is not None and self._head_ts is not None and len(self._audio):
            # A gap (media the ingest dropped for a slow reader) or an overlap: keep every
            # sample at its own time, or the sound would drift from the pictures for good.
            gap = ts - (self._head_ts + len(self._audio) / RATE)
            if GAP_TOLERANCE_S < gap <= RESYNC_S:
                self._audio = np.concatenate(
                    [self._audio, np.zeros((int(gap * RATE), CHANNELS), np.int16)]
                )
            elif -RESYNC_S <= gap < -GAP_TOLERANCE_S:
                pcm = pcm[int(-gap * RATE) :]  # the part already queued
            elif gap > RESYNC_S:
                self._audio = self._audio[:0]  # a jump: start again at this sound
            elif gap < -RESYNC_S:
                self._restart(ts)  # the clock went back
        if not len(self._audio) and ts is not None:
            self._head_ts = ts
        if self._head_ts is None:
            return
        self._audio = np.concatenate([self._audio, pcm])
        keep = int((JITTER_S + RESYNC_S + 1.0) * RATE)
        if len(self._audio) > keep:
            self._head_ts += (len(self._audio) - keep) / RATE
            self._audio = self._audio[-keep:]
        self._seen(self._head_ts + len(self._audio) / RATE)

    def _seen(self, ts: float) -> None:
        self._newest = ts if self._newest is None else max(self._newest, ts)

    def _restart(self, ts: float) -> None:
        """The publisher's clock went back (an encoder restarted): start again from ``ts``."""
        self._pictures = deque(p for p in self._pictures if p[0] <= ts)
        self._audio = self._audio[:0]
        self._offset = None
        self._newest = ts

    def end(self) -> None:
        self._ended = True

    def reanchor(self) -> None:
        """Back on schedule at the newest media (after a pause of the output)."""
        self._offset = None

    def sample(self, t: float, samples: int, frame_s: float) -> tuple[Any, np.ndarray]:
        """The picture to show at output time ``t`` (None: none yet, or the input has
        ended) and ``samples`` frames of sound from the same source time (silence where
        there is none)."""
        if self._newest is None:
            return None, np.zeros((samples, CHANNELS), np.int16)
        if self._offset is not None:
            lag = self._newest - (t + self._offset)
            if not -RESYNC_S <= lag <= JITTER_S + RESYNC_S:
                self._offset = None
            elif lag < JITTER_S / 2:  # its clock runs slow (or it stalls): follow it
                self._offset -= SLEW_S
            elif lag > JITTER_S * 1.5:  # fast
                self._offset += SLEW_S
        if self._offset is None:
            self._offset = self._newest - JITTER_S - t
        target = t + self._offset
        # The picture nearest the target: at most half an output frame ahead of it.
        due = target + frame_s / 2
        while self._pictures and self._pictures[0][0] <= due:
            self._shown_ts, self.shown = self._pictures.popleft()
        picture = self.shown
        ended = self._ended and target > self._newest
        if not self._pictures and (ended or target - self._shown_ts > VIDEO_OFF_S):
            picture = None  # the input has ended, or its camera is off
        return picture, self._take_audio(target, samples)

    def _take_audio(self, target: float, samples: int) -> np.ndarray:
        silence = 0
        if self._head_ts is not None and len(self._audio):
            lead = target - self._head_ts
            if lead > SYNC_TOLERANCE_S:  # sound older than the picture: drop it
                drop = min(len(self._audio), int(lead * RATE))
                self._audio = self._audio[drop:]
                self._head_ts += drop / RATE
            elif lead < -SYNC_TOLERANCE_S:  # sound not due yet: silence first
                silence = min(samples, int(-lead * RATE))
        have = self._audio[: samples - silence]
        self._audio = self._audio[len(have) :]
        if self._head_ts is not None:
            self._head_ts += len(have) / RATE
        parts = [np.zeros((silence, CHANNELS), np.int16), have]
        if silence + len(have) < samples:
            parts.append(np.zeros((samples - silence - len(have), CHANNELS), np.int16))
        return np.concatenate(parts)


class InputReader(threading.Thread):
    """Pulls one input and decodes it into an :class:`InputBuffer` (PyAV releases the GIL)."""

    def __init__(self, key: str, url: str, media: Media = Media.AUDIO_VIDEO) -> None:
        super().__init__(name=f"mixin-{key}", daemon=True)
        self.key = key
        self.url = url
        self.media = media
        self.has_video: bool | None = None  # whether the stream has pictures, once open
        self.buffer = InputBuffer()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.ended = threading.Event()
        self.error: str | None = None

    @property
    def last_picture(self) -> Any:
        with self._lock:
            return self.buffer.shown

    def stop(self) -> None:
        self._stopping.set()

    def reanchor(self) -> None:
        with self._lock:
            self.buffer.reanchor()

    def sample(self, t: float, samples: int, frame_s: float) -> tuple[Any, np.ndarray]:
        with self._lock:
            return self.buffer.sample(t, samples, frame_s)

    def run(self) -> None:
        try:
            options = {
                "rw_timeout": str(int(READ_TIMEOUT_S * 1e6)),
                # onMetaData and the sequence headers come first: little to probe.
                "analyzeduration": "500000",
                "probesize": "262144",
            }
            with open_input(self.url, options=options) as inp:
                streams: list[Any] = [
                    *(inp.streams.video[:1] if self.media.has_video else []),
                    *(inp.streams.audio[:1] if self.media.has_audio else []),
                ]
                self.has_video = bool(inp.streams.video)
                if not streams:  # nothing of it to take (a sound-only stream, video asked)
                    self._stopping.wait()
                    return
                for s in streams:
                    # One decoding thread per input (the GIL is released while it decodes):
                    # the inputs decode in parallel with each other already, and FFmpeg's
                    # frame threads (3 per input on 2 cores) spend more CPU on hand-offs
                    # (640x360: 0.59 ms a frame against 0.53; docs/benchmarks.md).
                    s.codec_context.thread_count = 1
                resampler = av.AudioResampler(format="s16", layout="stereo", rate=RATE)
                for packet in inp.demux(streams):
                    if self._stopping.is_set():
                        return
                    if packet.size == 0:
                        continue
                    frame: Any
                    for frame in packet.decode():
                        if isinstance(frame, av.VideoFrame):
                            if frame.time is not None:
                                with self._lock:
                                    self.buffer.add_picture(float(frame.time), frame)
                        else:
                            start = float(frame.time) if frame.time is not None else None
                            for out in resampler.resample(frame):
                                pcm = out.to_ndarray().reshape(-1, CHANNELS)
                                with self._lock:
                                    self.buffer.add_audio(start, pcm)
                                start = None  # later chunks follow on
        except (av.FFmpegError, OSError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self.buffer.end()
            self.ended.set()
