"""Mixed recording: decode every input, compose one picture per output frame, mix the sound,
encode H.264 + AAC, write one file.

Threads: one :class:`InputReader` per input stream (PyAV decode, GIL released) fills an
:class:`InputBuffer` with the input's pictures and its sound at 48 kHz stereo, by source
timestamp; the :class:`Mixer` thread produces output frames on a wall-clock schedule
(``fps``) and takes from each input the picture and the sound of the same source moment, so
each input's sound stays with its picture, and an input that stalls or leaves never stalls
the output.  The layout and the inputs can change at any time (``update``): the next frame
uses them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import numpy as np

from cloudrec.core.mixing import MixInput, MixSpec
from cloudrec.core.tasks import FileFormat, Media, TrackType
from cloudrec.media.compositor.frame import Canvas, PatchMode, compose, patch_frame, solid, to_rgb
from cloudrec.media.compositor.layout import (
    Placement,
    Rect,
    ZegoLayout,
    template_layout,
    zego_layout,
)
from cloudrec.media.compositor.overlay import (
    ImageWatermark,
    TextWatermark,
    TimestampWatermark,
    Watermarks,
    parse_color,
)
from cloudrec.media.inputs import open_input
from cloudrec.media.recorder.audio import ENCODED_FORMATS, add_audio_encoder
from cloudrec.media.recorder.remux import file_size, open_output
from cloudrec.media.recorder.sei import avcc_prefixed, sei_nal
from cloudrec.storage.backup import hls_segments

log = logging.getLogger("cloudrec.mixer")

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
PATCH_MODES: dict[int, PatchMode] = {0: "none", 1: "black", 2: "last", 3: "image"}


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
        self._stop = threading.Event()
        self.ended = threading.Event()
        self.error: str | None = None

    @property
    def last_picture(self) -> Any:
        with self._lock:
            return self.buffer.shown

    def stop(self) -> None:
        self._stop.set()

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
                    self._stop.wait()
                    return
                for s in streams:
                    s.thread_type = "AUTO"  # SLICE is single-threaded for x264 streams
                resampler = av.AudioResampler(format="s16", layout="stereo", rate=RATE)
                for packet in inp.demux(streams):
                    if self._stop.is_set():
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


@dataclass
class MixOutput:
    path: Path
    format: FileFormat
    track: TrackType


FileOpened = Callable[[MixOutput, int], int]  # (output, begin_ms) -> file id
FileClosed = Callable[[int, dict[str, object]], None]
SnapshotTaken = Callable[[np.ndarray, datetime], None]  # (RGB picture, its time); never raises
# Each input's sound (s16 stereo 48 kHz, by input key; inputs whose sound is not mixed are
# left out) in the output frame that starts ``at_s`` seconds into the mix; called on the
# mixer's thread, every frame.
AudioTap = Callable[[float, dict[str, np.ndarray]], None]


class Mixer(threading.Thread):
    """Produces the mixed file from ``start_at`` until ``stop(at)``."""

    def __init__(
        self,
        spec: MixSpec,
        outputs: list[MixOutput],
        images: dict[str, Any],
        on_open: FileOpened,
        on_close: FileClosed,
    ) -> None:
        super().__init__(name="mixer", daemon=True)
        self.spec = spec
        self.outputs = outputs
        self.images = images  # url -> RGBA/RGB ndarray, fetched by the caller
        self._on_open = on_open
        self._on_close = on_close
        self.inputs: dict[str, InputReader] = {}
        self.order: list[str] = []  # keys in the order they joined (templates place by it)
        self.main_key: str | None = None  # the input of a ZEGO layout's large region
        self.last_pictures: dict[str, Any] = {}  # of inputs that left
        self._lock = threading.Lock()
        self._stop_at: float | None = None
        self._paused_since: float | None = None
        self._paused_total = 0.0
        self.error: str | None = None
        self.wrote_media = threading.Event()
        self.frames = 0
        self._snapshots: list[SnapshotTaken] = []
        self.audio_tap: AudioTap | None = None  # set before start()
        self.side_errors: list[str] = []  # sound-wave or screenshot work that failed

    # -- control (any thread) ---------------------------------------------------------
    def update(
        self,
        spec: MixSpec,
        urls: dict[str, str],
        main_key: str | None = None,
        media: dict[str, Media] | None = None,
    ) -> None:
        """New layout and/or inputs, used from the next output frame on.  ``main_key`` is the
        input to show in the large region of ``spec.zego_layout``: None for the first to join;
        a key not in ``urls`` leaves the large region to the background.  ``media`` says what
        to take of an input (default both: a sound-only input keeps its place, empty)."""
        with self._lock:
            self.spec = spec
            self.main_key = main_key
            for key in [k for k in self.inputs if k not in urls]:
                gone = self.inputs.pop(key)
                gone.stop()
                if not spec.fill_blank:  # else its region stays, filled, until it is back
                    self.order.remove(key)
                if gone.last_picture is not None:  # patch mode 2 shows it from now on
                    self.last_pictures[key] = gone.last_picture
            if not spec.fill_blank:
                self.order = [k for k in self.order if k in self.inputs or k in urls]
            for key, url in urls.items():
                reader = self.inputs.get(key)
                if reader is None or (reader.ended.is_set() and reader.url == url):
                    reader = InputReader(key, url, (media or {}).get(key, Media.AUDIO_VIDEO))
                    reader.start()
                    self.inputs[key] = reader
                    if key not in self.order:
                        self.order.append(key)

    def add_images(self, images: dict[str, Any]) -> None:
        """Pictures a new layout names, fetched by the caller."""
        with self._lock:
            self.images = {**self.images, **images}

    def stop(self, at: float) -> None:
        with self._lock:
            self._stop_at = at

    def pause(self) -> None:
        """Stop producing frames; the file goes on after ``resume`` with no gap."""
        with self._lock:
            if self._paused_since is None:
                self._paused_since = time.monotonic()

    def resume(self) -> None:
        with self._lock:
            if self._paused_since is not None:
                self._paused_total += time.monotonic() - self._paused_since
                self._paused_since = None
                for r in self.inputs.values():  # what came during the pause is left out
                    r.reanchor()

    def snapshot(self, taken: SnapshotTaken) -> None:
        """Hand the next composed picture (RGB, watermarks painted) and its time to ``taken``,
        on the mixer's thread: a screenshot of the mix.  One picture per call."""
        with self._lock:
            self._snapshots.append(taken)

    def pictured(self) -> bool:
        """Whether every input has given a picture (or ended): a screenshot taken before
        shows empty tiles."""
        with self._lock:
            readers = list(self.inputs.values())
        # Inputs with no picture to give (sound only) are not waited for.
        readers = [r for r in readers if r.media.has_video and r.has_video is not False]
        shown = [r for r in readers if r.last_picture is not None]
        return bool(shown) and all(r in shown or r.ended.is_set() for r in readers)

    def busy(self) -> bool:
        with self._lock:
            return any(not r.ended.is_set() for r in self.inputs.values())

    # -- the output loop --------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except (av.FFmpegError, OSError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("mixer.error", extra={"fields": {"error": self.error}})
        finally:
            with self._lock:
                for r in self.inputs.values():
                    r.stop()

    def _run(self) -> None:
        spec = self.spec
        fps = spec.fps
        containers = []
        begin = time.time()
        for out in self.outputs:
            c = _open(out, spec)
            file_id = self._on_open(out, int(begin * 1000))
            containers.append((out, c, file_id))
        canvas_key: tuple[Any, ...] = ()
        canvas: Canvas | None = None
        marks: Watermarks | None = None
        audio_sent = 0
        n = 0
        t0 = time.monotonic()
        encodes_video = any(out.track is not TrackType.AUDIO for out in self.outputs)
        while True:
            with self._lock:
                spec, stop_at = self.spec, self._stop_at
                readers = [self.inputs[k] for k in self.order if k in self.inputs]
                order = list(self.order)
                paused, shift = self._paused_since is not None, self._paused_total
            if stop_at is not None and begin + shift + n / fps >= stop_at:
                break
            if paused:
                time.sleep(0.02)
                continue
            wait = t0 + shift + n / fps - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            key = (
                spec.width,
                spec.height,
                spec.background_color,
                spec.background_image,
                spec.timestamp,
                spec.texts,
                spec.images,
                len(self.images),
            )
            if key != canvas_key:
                canvas, marks, canvas_key = self._canvas(spec), self._marks(spec), key
            assert canvas is not None
            assert marks is not None
            when = datetime.fromtimestamp(begin + shift + n / fps, UTC)
            want = (n + 1) * RATE // fps - audio_sent
            mixed = np.zeros((want, CHANNELS), dtype=np.int32)
            pictures: dict[str, Any] = {}
            sounds: dict[str, np.ndarray] = {}
            for r in readers:
                pictures[r.key], sounds[r.key] = r.sample(n / fps, want, 1 / fps)
                mixed += sounds[r.key]
            if self.audio_tap is not None:  # the inputs whose sound is mixed
                heard = {r.key: sounds[r.key] for r in readers if r.media.has_audio}
                self._guarded("audio_tap", self.audio_tap, audio_sent / RATE, heard)
            pcm = np.clip(mixed, -32768, 32767).astype(np.int16)
            video = None
            with self._lock:
                taken = self._snapshots.pop(0) if self._snapshots else None
            if spec.media.has_video and (encodes_video or taken is not None):
                video = compose(canvas, self._layers(spec, readers, pictures, order))
                marks.paint_onto(video, when)
                if taken is not None:  # the only RGB picture: a screenshot's
                    self._guarded("snapshot", taken, to_rgb(video), when)
                video.pts = n
                video.time_base = Fraction(1, fps)
            for out, c, _ in containers:
                self._encode(out, c, video, pcm, audio_sent, spec)
            audio_sent += want
            n += 1
            self.frames = n
            self.wrote_media.set()
        for out, c, file_id in containers:
            self._flush(out, c)
            c["container"].close()
            # Segments may be uploaded and gone meanwhile (RealtimeUploadFragment).
            size = sum(file_size(p) for p in [out.path, *hls_segments(out.path)])
            self._on_close(file_id, {"size": size, "duration_ms": int(n * 1000 / fps)})

    def _guarded(self, what: str, call: Callable[..., None], *args: Any) -> None:
        """A side job of the mix (sound waves, screenshots): when it fails the mix goes on
        without it, and says so; the recording is never lost to it."""
        try:
            call(*args)
        except Exception as exc:
            log.exception("mixer.%s_failed", what)
            if what == "audio_tap":
                self.audio_tap = None
            self.side_errors.append(f"{what}: {type(exc).__name__}: {exc}")

    def _layers(
        self,
        spec: MixSpec,
        readers: list[InputReader],
        pictures: dict[str, Any],
        order: list[str],
    ) -> list[tuple[Placement, Any]]:
        """What goes where: the layout's placements, each with its input's picture or what
        stands in for it."""
        by_key = {r.key: r for r in readers}
        keys = order  # join order; with fill_blank, departed streams keep their place
        if spec.template_id is not None:
            placements = (
                template_layout(spec.template_id, keys, spec.width, spec.height) if keys else []
            )
        elif spec.zego_layout is not None:
            with self._lock:
                main_key = self.main_key
            placements = zego_layout(
                cast(ZegoLayout, spec.zego_layout),
                keys,
                spec.width,
                spec.height,
                main_key=main_key,
                crop_mode="fit" if spec.crop == "fit" else "fill",
            )
        else:
            # The spec was validated at the edge: its layers are taken as they are (ZEGO ranks
            # up to 25 views' Layer values 0..24, past JoCloud's zOrder 16).
            placements = sorted(
                (
                    Placement(
                        key=i.key,
                        rect=Rect(i.box.x, i.box.y, i.box.w, i.box.h),
                        z=i.z,
                        crop_mode="fill" if i.crop == "fill" else "fit",
                        source_crop=None
                        if i.source is None
                        else Rect(i.source.x, i.source.y, i.source.w, i.source.h),
                        alpha=i.alpha,
                    )
                    for i in spec.inputs
                    if i.box is not None and i.media.has_video
                ),
                key=lambda p: p.z,
            )
        views = {i.key: i for i in spec.inputs}
        layers = []
        for p in placements:
            picture: Any = pictures.get(p.key)
            if picture is None:
                picture = self._stand_in(spec, p, by_key.get(p.key), views.get(p.key))
            layers.append((p, picture))
        return layers

    def _stand_in(
        self, spec: MixSpec, p: Placement, reader: InputReader | None, view: MixInput | None
    ) -> Any:
        """What a region whose input has no picture shows (None: the background)."""
        last = reader.last_picture if reader is not None else self.last_pictures.get(p.key)
        if spec.frame_fill is None:  # JoCloud patch
            patch = PATCH_MODES.get(spec.patch, "none")
            image = self.images.get(spec.patch_url or "")
            return patch_frame(patch, last, image, p.rect.w, p.rect.h)
        # ZEGO: live with its camera off, or gone but kept (FillBlank): FrameFillMode.
        interrupted = reader is not None or (spec.fill_blank and last is not None)
        if interrupted and spec.frame_fill == 1 and last is not None:
            return last
        if interrupted and spec.frame_fill == 2:
            return solid(p.rect.w, p.rect.h, parse_color(spec.frame_fill_color))
        for url, applies in (
            (view.background_url if view is not None else None, True),
            (spec.view_background_url, spec.fill_blank and spec.frame_fill == 3),
        ):
            image = self.images.get(url or "") if applies else None
            if image is not None:
                return image
        return None

    def _canvas(self, spec: MixSpec) -> Canvas:
        bg = spec.background_image
        image = self.images.get(bg.url) if bg is not None else None
        return Canvas(
            spec.width,
            spec.height,
            parse_color(spec.background_color),
            image,
            "stretch" if bg is not None and bg.scale == 1 else "fill",
        )

    def _marks(self, spec: MixSpec) -> Watermarks:
        def color(c: str | None) -> tuple[int, int, int] | None:
            return None if c is None else parse_color(c)

        ts = spec.timestamp
        return Watermarks(
            timestamp=None
            if ts is None
            else TimestampWatermark(
                ts.x,
                ts.y,
                ts.content,
                ts.size,
                parse_color(ts.color),
                color(ts.background),
                ts.alpha,
            ),
            texts=tuple(
                TextWatermark(
                    t.x, t.y, t.content, t.size, parse_color(t.color), color(t.background), t.alpha
                )
                for t in spec.texts
            ),
            images=tuple(
                ImageWatermark(i.x, i.y, i.w, i.h, self.images[i.url], i.scale == 1, i.alpha)
                for i in spec.images
                if i.url in self.images
            ),
        )

    def _encode(
        self,
        out: MixOutput,
        c: dict[str, Any],
        video: Any,
        pcm: np.ndarray,
        audio_pts: int,
        spec: MixSpec,
    ) -> None:
        container = c["container"]
        if video is not None and "video" in c:
            for packet in c["video"].encode(video):
                container.mux(with_sei(packet, spec.sei) if spec.sei else packet)
        if "audio" in c and len(pcm):
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="stereo")
            frame.sample_rate = RATE
            frame.pts = audio_pts
            frame.time_base = Fraction(1, RATE)
            c["fifo"].write(frame)
            while (chunk := c["fifo"].read(1024)) is not None:
                for packet in c["audio"].encode(chunk):
                    container.mux(packet)

    def _flush(self, out: MixOutput, c: dict[str, Any]) -> None:
        for name in ("video", "audio"):
            if name in c:
                for packet in c[name].encode(None):
                    c["container"].mux(packet)


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


def _open(out: MixOutput, spec: MixSpec) -> dict[str, Any]:
    out.path.parent.mkdir(parents=True, exist_ok=True)
    container = open_output(out.format, out.path, spec.hls_segment_s)
    c: dict[str, Any] = {"container": container}
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
        c["video"] = v
    if out.track is not TrackType.VIDEO:
        if out.format in ENCODED_FORMATS:  # MP3, Ogg (Opus): their own codecs
            a = add_audio_encoder(container, out.format, RATE, CHANNELS, spec.audio_bitrate_kbps)
        else:
            a = container.add_stream("aac", rate=RATE)
            a.layout = "stereo"
            a.bit_rate = spec.audio_bitrate_kbps * 1000
        c["audio"] = a
        c["fifo"] = av.AudioFifo()
    return c
