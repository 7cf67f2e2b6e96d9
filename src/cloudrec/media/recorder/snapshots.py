"""Screenshots: a JPG of a live stream every ``interval_s`` seconds (ZEGO OutputFileFormat jpg
in RecordMode 1), and the JPG writer that the mix's screenshots use too.

A :class:`StreamSnapshotter` pulls one stream as a recorder does, with the same estimate of
the publisher's clock (``offset = min(arrival - timestamp)``), and writes no video.  A
screenshot named for the moment ``T`` shows the picture on screen at ``T``: the last frame
whose presentation time is at or before ``T`` (the first one after it when the stream had
none yet).  To find it without decoding the whole stream, the snapshotter keeps the packets
since the last keyframe and decodes only when a screenshot is due: from that keyframe (or
from where the previous screenshot left the decoder) to the first frame past ``T``.  That is
exact to the frame and decodes at most one GOP per screenshot; decoding keyframes only would
be cheaper but up to a GOP late whenever the GOP is longer than the interval.

Screenshot moments are ``start_at + k * interval_s``.  Like a recorder, the snapshotter holds
each screenshot back ``HOLD_S`` before it hands it over, so that a stop (or a pause) asked
for at time S, which reaches this thread a little after S, leaves out the screenshots after S.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from cloudrec.core.tasks import FileFormat, FileStatus, RecordedFile, Task, TrackType
from cloudrec.media.inputs import open_input, shown_url

log = logging.getLogger("cloudrec.snapshots")

# The same settling and hold as a recorder's (remux.py), for the same reasons.
CLOCK_SETTLE_S = 0.4
HOLD_S = 1.0
READ_TIMEOUT_S = 5.0
JPEG_QUALITY = 90


def write_jpeg(rgb: np.ndarray, path: Path) -> int:
    """Write an RGB picture (height x width x 3, uint8) as a JPG at ``path``, whole or not at
    all (written beside it, then renamed); return its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    Image.fromarray(rgb, "RGB").save(part, "JPEG", quality=JPEG_QUALITY)
    os.replace(part, path)
    return path.stat().st_size


def jpg_file(
    task: Task,
    path: Path,
    stream_id: str,
    user_id: str,
    begin_ms: int,
    size: tuple[int, int],
    nbytes: int,
) -> RecordedFile:
    """A screenshot of the task, written whole: its object key is the output prefix and its
    name."""
    prefix = "/".join(task.spec.output_prefix)
    return RecordedFile(
        task_id=task.task_id,
        name=f"{prefix}/{path.name}" if prefix else path.name,
        path=str(path),
        format=FileFormat.JPG,
        status=FileStatus.RECORDED,
        stream_id=stream_id,
        user_id=user_id,
        track_type=TrackType.VIDEO,
        begin_ms=begin_ms,
        size=nbytes,
        width=size[0],
        height=size[1],
    )


@dataclass
class SnapshotPlan:
    """What one snapshotter does.  Times are Unix seconds."""

    url: str
    directory: Path
    name: Callable[[int], str]  # file name (with .jpg) for a screenshot's moment (Unix ms)
    start_at: float  # the first screenshot's moment
    interval_s: float
    open_options: dict[str, str] | None = None


# (path, moment in Unix ms, (width, height), size in bytes) -> the file id the caller stored
ShotWritten = Callable[[Path, int, tuple[int, int], int], int]


@dataclass
class _Shot:
    at: float  # the moment it is named for (Unix s)
    rgb: np.ndarray


class StreamSnapshotter(threading.Thread):
    """Takes screenshots of one stream session until it ends, ``stop(at)`` is called, or an
    error.  The same control surface as a :class:`~cloudrec.media.recorder.remux.StreamRecorder`
    (``stop``, ``pause``, ``resume``, ``error``, ``ended_by``, ``files``, ``wrote_media``)."""

    def __init__(self, plan: SnapshotPlan, on_shot: ShotWritten, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.plan = plan
        self._on_shot = on_shot
        self._lock = threading.Lock()
        self._stop_at: float | None = None
        self._pauses: list[list[float | None]] = []  # wall-clock [start, end); end None: paused
        self.error: str | None = None
        self.ended_by = ""
        self.files: list[int] = []
        self.wrote_media = threading.Event()
        # Decoding state: packets not yet given to the decoder (from a keyframe, or from where
        # the decoder stopped), whether the decoder is fed up to them, and the screenshot
        # being resolved: its moment in stream time and the best frame so far.
        self._stream: Any = None
        self._backlog: list[Any] = []
        self._decoding = False
        self._next_at = plan.start_at
        self._want: tuple[float, float] | None = None  # (moment Unix s, moment stream s)
        self._best: Any = None
        self._ready: list[_Shot] = []

    # -- control (any thread) ---------------------------------------------------------
    def stop(self, at: float) -> None:
        """No screenshot named for a moment after ``at``."""
        with self._lock:
            self._stop_at = at

    def pause(self, at: float) -> None:
        with self._lock:
            if not self._pauses or self._pauses[-1][1] is not None:
                self._pauses.append([at, None])

    def resume(self, at: float) -> None:
        with self._lock:
            if self._pauses and self._pauses[-1][1] is None:
                self._pauses[-1][1] = at

    def _wanted(self, at: float) -> bool:
        with self._lock:
            if self._stop_at is not None and at > self._stop_at:
                return False
            return not any(
                s is not None and s <= at and (e is None or at < e) for s, e in self._pauses
            )

    @property
    def stop_at(self) -> float | None:
        with self._lock:
            return self._stop_at

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._shoot()
        except (av.FFmpegError, OSError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.ended_by = "error"
            log.warning(
                "snapshots.error",
                extra={"fields": {"url": shown_url(self.plan.url), "error": self.error}},
            )
        finally:
            try:
                self._hand_over(None)
            except OSError as exc:
                self.error = self.error or f"{type(exc).__name__}: {exc}"

    def _shoot(self) -> None:
        plan = self.plan
        options = {"rw_timeout": str(int(READ_TIMEOUT_S * 1e6)), **(plan.open_options or {})}
        with open_input(plan.url, options=options) as inp:
            if not inp.streams.video:
                self.error = "the stream has no video track: no screenshot to take"
                self.ended_by = "error"
                return
            self._stream = inp.streams.video[0]
            offset: float | None = None
            settle_until: float | None = None
            pending: list[tuple[Any, float]] = []
            for packet in inp.demux(self._stream):
                if packet.size == 0 or packet.dts is None:
                    continue
                now = time.time()
                ts = float(packet.dts * packet.time_base)
                offset = now - ts if offset is None else min(offset, now - ts)
                if settle_until is None or now < settle_until:
                    # Watch live packets a moment before trusting the clock estimate.
                    pending.append((packet, ts))
                    settle_until = settle_until or now + CLOCK_SETTLE_S
                    continue
                for p, p_ts in [*pending, (packet, ts)]:
                    self._feed(p, p_ts, offset)
                pending = []
                self._hand_over(now - HOLD_S)
                # Past the stop: done, once the screenshot being resolved is (or a little
                # later at most, when the stream gives no frame past its moment).
                stop_at = self.stop_at
                past = stop_at is not None and ts + offset > stop_at
                if past and (self._want is None or ts + offset > (stop_at or 0) + HOLD_S):
                    self.ended_by = "stopped"
                    break
            else:
                self.ended_by = "source ended"
            if self._want is not None:  # no frame past the moment came: the last before it
                self._resolve(self._best)

    def _feed(self, packet: Any, ts: float, offset: float) -> None:
        """One packet, in decoding order.  A screenshot falls due when a packet's decoding
        time reaches its moment: every picture shown up to that moment has arrived."""
        if self._want is None and ts + offset >= self._next_at:
            moment = self._next_at
            while self._next_at <= ts + offset:  # moments the stream stalled through: skipped
                self._next_at += self.plan.interval_s
            self._want, self._best = (moment, moment - offset), None
            backlog, self._backlog = self._backlog, []
            for p in backlog:
                self._decode(p)
        if self._want is not None:
            self._decode(packet)
        elif packet.is_keyframe:
            self._backlog, self._decoding = [packet], False  # start again from here
        elif self._backlog or self._decoding:
            self._backlog.append(packet)
        # else: no keyframe yet, nothing to decode this packet from

    def _decode(self, packet: Any) -> None:
        codec = self._stream.codec_context
        if not self._decoding:
            if not packet.is_keyframe:
                return
            codec.flush_buffers()
            self._decoding = True
        try:
            frames = codec.decode(packet)
        except av.FFmpegError as exc:  # a damaged packet: the next ones may do
            log.info("snapshots.decode_error", extra={"fields": {"error": str(exc)}})
            return
        for frame in frames:
            if self._want is None or frame.pts is None:
                continue
            t = float(frame.pts * self._stream.time_base)
            if t <= self._want[1]:
                self._best = frame
            else:
                self._resolve(self._best if self._best is not None else frame)

    def _resolve(self, frame: Any) -> None:
        if self._want is not None and frame is not None:
            self._ready.append(_Shot(self._want[0], frame.to_ndarray(format="rgb24")))
        self._want, self._best = None, None

    def _hand_over(self, until: float | None) -> None:
        """Write the screenshots named for moments up to ``until`` (all: None), leaving out
        those after the stop or inside a pause."""
        while self._ready and (until is None or self._ready[0].at <= until):
            shot = self._ready.pop(0)
            if not self._wanted(shot.at):
                continue
            begin_ms = int(shot.at * 1000)
            path = self.plan.directory / self.plan.name(begin_ms)
            size = write_jpeg(shot.rgb, path)
            height, width = shot.rgb.shape[:2]
            self.files.append(self._on_shot(path, begin_ms, (width, height), size))
            self.wrote_media.set()
