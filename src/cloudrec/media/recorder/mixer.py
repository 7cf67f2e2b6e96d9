"""Mixed recording: decode every input, compose one picture per output frame, mix the sound,
encode H.264 + AAC, write one file.

Threads: one ``mixinput.InputReader`` per input stream (PyAV decode, GIL released) fills an
``InputBuffer`` with the input's pictures and its sound at 48 kHz stereo, by source
timestamp; the :class:`Mixer` thread produces output frames on a wall-clock schedule
(``fps``) and takes from each input the picture and the sound of the same source moment, so
each input's sound stays with its picture, and an input that stalls or leaves never stalls
the output.  The layout and the inputs can change at any time (``update``): the next frame
uses them.  Pictures are composed in yuv420p (``media/compositor``); ``mixencode`` encodes
them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, cast

import av
import numpy as np

from cloudrec.core.mixing import MixInput, MixSpec
from cloudrec.core.tasks import Media, TrackType
from cloudrec.media.compositor.frame import Canvas, PatchMode, compose, patch_frame, solid, to_rgb
from cloudrec.media.compositor.layout import (
    AutoLayout,
    Placement,
    Rect,
    auto_layout,
    template_layout,
)
from cloudrec.media.compositor.overlay import (
    ImageWatermark,
    TextWatermark,
    TimestampWatermark,
    Watermarks,
    parse_color,
)
from cloudrec.media.recorder.mixencode import Encoders, MixOutput, open_encoders
from cloudrec.media.recorder.mixinput import CHANNELS, RATE, InputReader
from cloudrec.media.recorder.remux import file_size
from cloudrec.storage.backup import hls_segments

log = logging.getLogger("cloudrec.mixer")

PATCH_MODES: dict[int, PatchMode] = {0: "none", 1: "black", 2: "last", 3: "image"}

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
        self.main_key: str | None = None  # the input of an automatic layout's large region
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
        input to show in the large region of ``spec.auto_layout``: None for the first to join;
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
                # A new reader where there is none, where it ended (the stream may be gone,
                # not yet out of the room) and where the input's stream moved to another URL
                # (a new session: its publisher came back, on this ingest node or another).
                if reader is None or reader.ended.is_set() or reader.url != url:
                    if reader is not None:
                        reader.stop()
                        if reader.last_picture is not None:
                            # Its picture stays what a fill shows, not the new one's None.
                            self.last_pictures[key] = reader.last_picture
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
        if not self._wait_first_resume():
            return  # stopped before anything was to be recorded: no file
        spec = self.spec
        fps = spec.fps
        containers: list[tuple[MixOutput, Encoders, int]] = []
        begin = time.time()
        for out in self.outputs:
            c = open_encoders(out, spec)
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
            if stop_at is not None and (paused or begin + shift + n / fps >= stop_at):
                break  # paused: nothing after the pause is to be in the file
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
            for _, c, _ in containers:
                c.encode(video, pcm, audio_sent, spec.sei)
            audio_sent += want
            n += 1
            self.frames = n
            self.wrote_media.set()
        for out, c, file_id in containers:
            c.close()
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
        elif spec.auto_layout is not None:
            with self._lock:
                main_key = self.main_key
            placements = auto_layout(
                cast(AutoLayout, spec.auto_layout),
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
        last = reader.last_picture if reader is not None else None
        if last is None:
            last = self.last_pictures.get(p.key)
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

    def _wait_first_resume(self) -> bool:
        """A mixer started paused (its first stream came during a pause, or a later attempt
        took a paused task over) opens its files once resumed, so that they begin with their
        first frame; False when it is stopped first."""
        while True:
            with self._lock:
                if self._paused_since is None:
                    self._paused_total = 0.0  # before the files: no part of their timeline
                    return True
                if self._stop_at is not None:
                    return False
            time.sleep(0.02)

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
