"""Single-stream recording: pull one live stream and remux it, untouched, into files (MP3 and
Ogg, which need their own codecs, get the audio decoded and encoded: ``audio.py``).

A :class:`StreamRecorder` runs in its own thread (PyAV releases the GIL while it reads and
writes).  It cuts the recording at the task's wall-clock window: it estimates the publisher's
clock as ``offset = min(arrival - timestamp)`` over the packets it receives live, starts each
file at the keyframe nearest the start time (the ingest's backlog reaches back far enough), and
stops at the first packet past the stop time.  Packets are written as they were published:
only timestamps are shifted so that each file starts at zero.  With a sound wave asked for,
the audio written is also decoded and measured into a ``.sw`` file beside the first file
that holds it (``soundwave.py``).

A live publisher may change under the recording (issue 10, items 11 and 12):
- a new codec configuration (a new AVC sequence header or AudioSpecificConfig; FFmpeg's flv
  demuxer hands it over as ``new_extradata`` side data) starts a new file part, in every
  remuxed format, at the first keyframe with the new configuration, since a file keeps the
  configuration it began with (MP4's ``avcC``, ADTS headers);  MP3 and Ogg are encoded and
  resample instead (``audio.py``);
- timestamps that jump back or forward are rebased (``continuity.py``): the file goes on;
- an error while reading or writing reopens the input and goes on in a new part, with a
  backoff (``RETRY_FIRST_S`` doubling up to ``RETRY_MAX_S``) and at most ``RETRY_LIMIT``
  failures in a row without media written in between.
What happened is kept in ``new_parts``, ``timestamp_jumps`` and ``retries``.
"""

from __future__ import annotations

import collections
import errno
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av

from cloudrec.core.tasks import FileFormat, Media, TrackType
from cloudrec.media.inputs import open_input, shown_url
from cloudrec.media.recorder.audio import ENCODED_FORMATS, AudioEncoder
from cloudrec.media.recorder.continuity import TimestampRebaser
from cloudrec.media.recorder.soundwave import SoundWave, repair

log = logging.getLogger("cloudrec.recorder")

# How long the recorder watches live packets before it trusts its estimate of the
# publisher's clock and picks the first keyframe.
CLOCK_SETTLE_S = 0.4
# Packets wait this long before they are written, so that a stop cuts at the moment it was
# asked for even though the worker learns of it up to a reconcile period later.
HOLD_S = 1.0
READ_TIMEOUT_S = 5.0
# A live stream whose reading or writing fails is reopened after a backoff that doubles from
# RETRY_FIRST_S up to RETRY_MAX_S; after RETRY_LIMIT failures in a row with nothing written in
# between, the recorder ends with the error.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 8.0
RETRY_LIMIT = 5

MP4_FLAGS = "frag_keyframe+empty_moov+default_base_moof"


@dataclass
class OutputFile:
    """One file being written, and what will be reported about it."""

    format: FileFormat
    path: Path
    container: Any
    streams: dict[int, Any]  # input stream index -> output stream (remuxed)
    encoder: AudioEncoder | None = None  # MP3, Ogg: the audio is encoded instead
    file_id: int = 0
    first_ts: float | None = None
    last_end_ts: float = 0.0
    track: TrackType = TrackType.AUDIO_VIDEO
    # Input stream index -> the codec configuration (extradata) its output stream was made with.
    configs: dict[int, bytes] = field(default_factory=dict)
    size_wh: tuple[int, int] | None = None
    skipped_base: float = 0.0  # the recorder's paused seconds when this file began
    # The next part while the tracks move over to it (each at its keyframe or change).
    successor: OutputFile | None = None
    moved: set[int] = field(default_factory=set)
    on_change: set[int] = field(default_factory=set)  # tracks that move at their new config

    def size(self) -> int:
        if self.format is FileFormat.HLS:
            # Segments may be uploaded and gone meanwhile (RealtimeUploadFragment).
            return sum(file_size(p) for p in self.segment_paths()) + file_size(self.path)
        return file_size(self.path)

    def segment_paths(self) -> list[Path]:
        return sorted(self.path.parent.glob(self.path.stem + "_*.ts"))


def file_size(path: Path) -> int:
    """The file's size, 0 when it is not (or no longer) there."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass
class RecorderPlan:
    """What one recorder does.  Times are Unix seconds."""

    url: str
    media: Media
    formats: tuple[FileFormat, ...]
    directory: Path
    # File name (with extension) for a format, the file's track type and its begin (Unix ms).
    name: Callable[[FileFormat, TrackType, int], str]
    start_at: float
    hls_segment_s: int = 15
    open_options: dict[str, str] = field(default_factory=dict)
    # (JSON key, this stream's id under it): measure the sound into a sound-wave file.
    sound_wave: tuple[str, str] | None = None
    # Whether the stream session recorded is still live (the caller's room directory),
    # asked before each reopen after an error: a session that ended is not retried, so that
    # a retry never records the stream's next session, which has a recorder of its own.
    # None: retried up to RETRY_LIMIT.
    still_live: Callable[[], bool] | None = None


FileOpened = Callable[[FileFormat, Path, TrackType, int, "tuple[int, int] | None"], int]
FileClosed = Callable[[int, dict[str, object]], None]


class StreamRecorder(threading.Thread):
    """Records one stream session until it ends, ``stop(at)`` is called, or an error.

    ``on_open(format, path, track_type, begin_ms, (width, height))`` returns the file id the
    caller stored; ``on_close(file_id, fields)`` reports size, duration (ms), width and height.
    A new codec configuration or a retried error closes the files and opens the next parts
    through the same calls (named by their own ``begin_ms``).  ``files`` holds every file
    opened.  Errors are kept in ``self.error`` (a message), never raised out of the thread;
    ``new_parts`` (each new part's file name and why it began), ``timestamp_jumps`` and
    ``retries`` (the errors recovered from) say what happened on the way.
    """

    def __init__(
        self, plan: RecorderPlan, on_open: FileOpened, on_close: FileClosed, name: str
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.plan = plan
        self._on_open = on_open
        self._on_close = on_close
        self._stop_at: float | None = None
        self._stop_lock = threading.Lock()
        # Pauses as wall-clock spans [start, end); end None while paused.  What falls in them
        # is left out of the file, which goes on from the next keyframe without a gap.
        self._pauses: list[list[float | None]] = []
        self._skipped = 0.0  # source seconds left out so far
        self._gap = False  # a pause ended: resume at the next keyframe
        self._resume_ts: float | None = None
        self._last_end_ts: float | None = None
        self.error: str | None = None
        self.ended_by: str = ""
        self.files: list[OutputFile] = []  # every file opened, parts included
        self.wrote_media = threading.Event()
        self.sound_wave: SoundWave | None = None
        self._sound_wave_id = 0
        self._decode_audio = False
        self._open: list[OutputFile] = []  # the parts being written
        self._config: dict[int, bytes] = {}  # input stream index -> its codec configuration
        self._inputs: dict[int, Any] = {}  # input stream index -> the stream
        self._tb: dict[int, float] = {}  # input stream index -> its time base (s)
        self._held: collections.deque[tuple[Any, float]] = collections.deque()
        self._origin_ts: float | None = None  # the first file's start (sound-wave seconds)
        self._last_wall: float | None = None  # publisher's wall time of the last packet written
        self._resume_wall: float | None = None  # after a retry: go on from here
        self._written = 0  # packets written
        self._retried: str | None = None  # the error the next files are opened after
        self.new_parts: list[tuple[str, str]] = []  # (file name, why it began)
        self.timestamp_jumps: list[str] = []
        self.retries: list[str] = []

    def pause(self, at: float) -> None:
        with self._stop_lock:
            if not self._pauses or self._pauses[-1][1] is not None:
                self._pauses.append([at, None])

    def resume(self, at: float) -> None:
        with self._stop_lock:
            if self._pauses and self._pauses[-1][1] is None:
                self._pauses[-1][1] = at

    def _paused_at(self, wall: float) -> bool:
        with self._stop_lock:
            return any(
                s is not None and s <= wall and (e is None or wall < e) for s, e in self._pauses
            )

    def stop(self, at: float) -> None:
        """Stop at Unix time ``at``: packets published after it are not written."""
        with self._stop_lock:
            self._stop_at = at

    @property
    def stop_at(self) -> float | None:
        with self._stop_lock:
            return self._stop_at

    def run(self) -> None:
        try:
            self._record_with_retries()
        except Exception as exc:  # the thread must not end unsaid (issue 10 item 12)
            self.error = f"{type(exc).__name__}: {exc}"
            self.ended_by = "error"
            log.exception("recorder.crashed", extra={"fields": {"url": shown_url(self.plan.url)}})
        finally:
            self._close_all()

    def _record_with_retries(self) -> None:
        """Record; on an error reopen the input and go on in new parts (a live stream must
        not stop quietly, issue 10 item 12), until RETRY_LIMIT failures in a row."""
        failures = 0
        while True:
            written = self._written
            try:
                self._record()
                return
            except (av.FFmpegError, OSError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                if getattr(exc, "errno", None) == errno.ENOSPC:
                    # A full spool disk is not retried: the task ends at once, saying so
                    # (docs/reliability.md, "Full disk").
                    self.error, self.ended_by = error, "error"
                    log.warning("recorder.disk_full", extra={"fields": {"error": error}})
                    return
            failures = 1 if self._written > written else failures + 1
            stop_at = self.stop_at
            fields = {"url": shown_url(self.plan.url), "error": error, "failures": failures}
            if self.plan.still_live is not None and not self.plan.still_live():
                self.retries.append(error)
                self.ended_by = "source ended"
                log.info("recorder.ended_after_error", extra={"fields": fields})
                return
            if failures > RETRY_LIMIT or (stop_at is not None and time.time() >= stop_at):
                self.error = error
                self.ended_by = "error"
                log.warning("recorder.error", extra={"fields": fields})
                return
            log.warning("recorder.retry", extra={"fields": fields})
            self.retries.append(error)
            self._close_all(sound_wave=False)
            self._resume_wall = self._last_wall
            self._retried = error
            wait_until = time.time() + min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (failures - 1))
            while time.time() < wait_until:
                stop_at = self.stop_at
                if stop_at is not None and time.time() >= stop_at:
                    self.ended_by = "stopped"
                    return
                time.sleep(0.05)

    # -- the loop ---------------------------------------------------------------------
    def _record(self) -> None:
        plan = self.plan
        options = {"rw_timeout": str(int(READ_TIMEOUT_S * 1e6)), **plan.open_options}
        # rw_timeout bounds every network read; PyAV's own timeout= would call back into
        # Python on every I/O step.
        with open_input(plan.url, options=options) as inp:
            if self._retried is not None and plan.still_live is not None and not plan.still_live():
                # Reconnected, but the session it records left meanwhile: what the ingest
                # serves under this name now is another session's, with a recorder of its own.
                self.ended_by = "source ended"
                return
            wanted: list[Any] = []
            # Audio-only formats cut on the audio itself, not on a video keyframe.
            audio_only = all(fmt.audio_only for fmt in plan.formats)
            if plan.media.has_video and inp.streams.video and not audio_only:
                wanted.append(inp.streams.video[0])
            if plan.media.has_audio and inp.streams.audio:
                wanted.append(inp.streams.audio[0])
            if not wanted:
                self.error = f"the stream has no {plan.media.value} track"
                self.ended_by = "error"
                return
            self._config = {s.index: bytes(s.codec_context.extradata or b"") for s in wanted}
            self._inputs = {s.index: s for s in wanted}
            self._tb = {s.index: float(s.time_base) for s in wanted}
            # A new connection has its own timestamps: pauses resume against them afresh.
            self._resume_ts, self._last_end_ts = None, None
            video = next((s for s in wanted if s.type == "video"), None)
            anchor = video if video is not None else wanted[0]
            offset: float | None = None
            pending: list[tuple[Any, float]] = []
            settle_until: float | None = None
            rebaser = TimestampRebaser()
            held = self._held = collections.deque()
            try:
                for packet in inp.demux(wanted):
                    if packet.size == 0 or packet.dts is None or packet.is_corrupt:
                        continue  # corrupt: cut short by a connection lost mid-tag
                    now = time.time()
                    self._rebase(rebaser, packet, now)
                    ts = packet.dts * self._tb[packet.stream.index]
                    offset = now - ts if offset is None else min(offset, now - ts)
                    if not self._open:
                        pending.append((packet, ts))
                        settle_until = settle_until or now + CLOCK_SETTLE_S
                        if now < settle_until:
                            continue
                        pending = self._start(pending, offset, anchor, wanted)
                        if not self._open:
                            continue
                        held.extend(pending)
                        pending = []
                    else:
                        held.append((packet, ts))
                    # Hold packets back for HOLD_S so that a stop asked for at time T, which
                    # reaches this thread a little after T, still cuts exactly at T.
                    stop_at = self.stop_at
                    limit = now - HOLD_S if stop_at is None else min(stop_at, now - HOLD_S)
                    while held and held[0][1] + offset <= limit:
                        self._emit(*held.popleft(), offset, anchor)
                    if stop_at is not None and held and held[-1][1] + offset > stop_at:
                        self.ended_by = "stopped"
                        return
                self.ended_by = "source ended"
            finally:
                stop_at = self.stop_at
                while held and offset is not None and self._open:
                    p, p_ts = held.popleft()
                    if stop_at is None or p_ts + offset <= stop_at:
                        self._emit(p, p_ts, offset, anchor)

    def _rebase(self, rebaser: TimestampRebaser, packet: Any, now: float) -> None:
        """Put the packet on the continuous timeline (``continuity.py``)."""
        jumps = rebaser.jumps
        dts, pts = rebaser.rebase(
            packet.stream.index,
            packet.stream.type,
            packet.dts,
            packet.pts,
            packet.duration,
            self._tb[packet.stream.index],
            now,
        )
        if dts != packet.dts:
            packet.dts, packet.pts = dts, pts
        if rebaser.jumps > jumps:
            reason = rebaser.reasons[-1]
            self.timestamp_jumps.append(reason)
            log.info(
                "recorder.timestamp_jump",
                extra={"fields": {"url": shown_url(self.plan.url), "jump": reason}},
            )

    def _start(
        self, pending: list[tuple[Any, float]], offset: float, anchor: Any, wanted: list[Any]
    ) -> list[tuple[Any, float]]:
        """Open the files at the anchor keyframe nearest the start time (after a retry: the
        last one at or before where the previous part ended, so nothing is lost); return
        the packets to write from there (earlier ones are dropped)."""
        starts = [
            i
            for i, (p, _) in enumerate(pending)
            if p.stream.index == anchor.index and (p.is_keyframe or anchor.type == "audio")
        ]
        if not starts:
            return pending  # no keyframe yet: keep waiting
        resume = self._resume_wall
        before = [i for i in starts if resume is not None and pending[i][1] + offset <= resume]
        if before:
            first = before[-1]
        elif resume is not None:
            first = starts[0]
        else:
            target = self.plan.start_at
            first = min(starts, key=lambda i: abs(pending[i][1] + offset - target))
        start_ts = pending[first][1]
        kept = [
            (p, ts)
            for i, (p, ts) in enumerate(pending)
            if i >= first and (p.stream.index == anchor.index or ts >= start_ts)
        ]
        self._open_files(wanted, begin_ms=int((start_ts + offset) * 1000), first_ts=start_ts)
        return kept

    def _open_files(self, wanted: list[Any], begin_ms: int, first_ts: float) -> None:
        plan = self.plan
        has_v = any(s.type == "video" for s in wanted)
        has_a = any(s.type == "audio" for s in wanted)
        if self._origin_ts is None:
            self._origin_ts = first_ts
        for fmt, streams, track in self._layout(wanted, has_v, has_a):
            f = self._open_file(fmt, track, streams, begin_ms, dict(self._config), None)
            f.first_ts = first_ts
            self._open.append(f)
            if self._retried is not None:
                self._new_part(f, f"reopened after {self._retried}")
        self._retried = None
        if plan.sound_wave is not None and self._open and self.sound_wave is None:
            # Named after the first file with sound in it (separate media: the audio file).
            audio = {s.index for s in wanted if s.type == "audio"}
            base = next(
                (f for f in self._open if f.encoder or audio & set(f.streams)), self._open[0]
            )
            path = base.path.with_suffix(".sw")
            key, who = plan.sound_wave
            self.sound_wave = SoundWave(path, key, always=(who,))
            self._sound_wave_id = self._on_open(
                FileFormat.SOUND_WAVE, path, TrackType.AUDIO, begin_ms, None
            )
        self._decode_audio = self.sound_wave is not None or any(f.encoder for f in self._open)

    def _open_file(
        self,
        fmt: FileFormat,
        track: TrackType,
        streams: list[Any],
        begin_ms: int,
        configs: dict[int, bytes],
        probed: dict[int, Any] | None,
    ) -> OutputFile:
        """Open one file (part) whose output streams carry ``configs``; ``probed`` has a
        decoded frame of each stream whose configuration is not the input's own."""
        path = self.plan.directory / self.plan.name(fmt, track, begin_ms)
        path.parent.mkdir(parents=True, exist_ok=True)
        container = open_output(fmt, path, self.plan.hls_segment_s)
        if fmt in ENCODED_FORMATS:
            f = OutputFile(fmt, path, container, {}, AudioEncoder(container, fmt, streams[0]))
        else:
            out = {}
            for s in streams:
                o = out[s.index] = container.add_stream_from_template(s)
                frame = (probed or {}).get(s.index)
                if configs[s.index] != bytes(s.codec_context.extradata or b""):
                    o.codec_context.extradata = configs[s.index]
                if isinstance(frame, av.VideoFrame):
                    o.codec_context.width, o.codec_context.height = frame.width, frame.height
                elif isinstance(frame, av.AudioFrame):
                    o.codec_context.sample_rate = frame.sample_rate
                    o.codec_context.layout = frame.layout
            f = OutputFile(fmt, path, container, out)
        f.track, f.skipped_base = track, self._skipped
        f.configs = {s.index: configs[s.index] for s in streams}
        v = next((s for s in streams if s.type == "video"), None)
        if v is not None:
            frame = (probed or {}).get(v.index)
            f.size_wh = (
                (frame.width, frame.height)
                if isinstance(frame, av.VideoFrame)
                else (v.codec_context.width, v.codec_context.height)
            )
        f.file_id = self._on_open(fmt, path, track, begin_ms, f.size_wh)
        self.files.append(f)
        return f

    def _layout(
        self, wanted: list[Any], has_v: bool, has_a: bool
    ) -> list[tuple[FileFormat, list[Any], TrackType]]:
        """Which files to write: per format one file with the wanted tracks, or (separate
        media) a video file and an audio file; AAC, MP3 and Ogg hold audio only."""
        files = []
        video = [s for s in wanted if s.type == "video"]
        audio = [s for s in wanted if s.type == "audio"]
        for fmt in self.plan.formats:
            if fmt.audio_only:
                parts = [(audio, TrackType.AUDIO)]
            elif self.plan.media is Media.SEPARATE:
                parts = [(video, TrackType.VIDEO), (audio, TrackType.AUDIO)]
            elif not has_v:
                parts = [(audio, TrackType.AUDIO)]
            elif not has_a:
                parts = [(video, TrackType.VIDEO)]
            else:
                parts = [(wanted, TrackType.AUDIO_VIDEO)]
            files += [(fmt, streams, track) for streams, track in parts if streams]
        return files

    def _emit(self, packet: Any, ts: float, offset: float, anchor: Any) -> None:
        """Write a packet unless a pause covers it; after a pause, go on from the next
        keyframe of the anchor track, the file's timeline closing over the paused span."""
        if packet.has_sidedata("new_extradata"):
            self._config[packet.stream.index] = bytes(packet.get_sidedata("new_extradata"))
        if self._paused_at(ts + offset):
            self._gap = True
            return
        if self._gap:
            key = packet.stream.index == anchor.index and (
                packet.is_keyframe or anchor.type == "audio"
            )
            if not key:
                return
            self._gap = False
            self._resume_ts = ts
            if self._last_end_ts is not None:
                self._skipped += max(0.0, ts - self._last_end_ts)
        if self._resume_ts is not None and ts < self._resume_ts:
            return  # from before the resume point: would run backwards in its track
        self._write(packet, ts, offset)

    def _write(self, packet: Any, ts: float, offset: float) -> None:
        assert self._origin_ts is not None
        at_s = ts - self._origin_ts - self._skipped  # where the packet goes in the recording
        if self._decode_audio and packet.stream.type == "audio":
            self._decode(packet, at_s)
        if self.sound_wave is not None:
            self.sound_wave.advance(at_s)
        index = packet.stream.index
        targets = []
        for f in list(self._open):
            if index in f.streams:
                target = self._route(f, packet, ts, offset)
                if target is not None:
                    targets.append(target)
        dts, pts, duration = packet.dts, packet.pts, packet.duration
        tb = self._tb[index]  # a float: Fraction arithmetic per packet costs ~15% CPU
        end = ts + (duration or 0) * tb
        for i, f in enumerate(targets):
            assert f.first_ts is not None
            skipped = self._skipped - f.skipped_base
            shift = round((f.first_ts + skipped) / tb)
            # The muxer takes the packet's data: the last file gets the packet itself, the
            # others a copy (no copy at all in the common one-format case).
            p = packet if i == len(targets) - 1 else _copy(packet)
            p.dts = dts - shift
            p.pts = (pts if pts is not None else dts) - shift
            p.stream = f.streams[index]
            f.container.mux(p)
            f.last_end_ts = max(f.last_end_ts, end)
        for f in list(self._open):
            g = f.successor
            if g is not None and g.moved >= set(f.streams):
                # Every track has moved over: the part is complete.
                self._open[self._open.index(f)] = g
                f.successor = None
                self._close_file(f)
        self._last_end_ts = max(self._last_end_ts or end, end)
        self._last_wall = ts + offset
        self._written += 1
        self.wrote_media.set()

    def _route(self, f: OutputFile, packet: Any, ts: float, offset: float) -> OutputFile | None:
        """The part of ``f`` a packet goes to: ``f``, its successor, or none (a packet with
        a new configuration before that track's keyframe, which neither part decodes)."""
        index = packet.stream.index
        g = f.successor
        if g is None and self._config[index] != f.configs[index]:
            g = f.successor = self._successor(f, packet, ts, offset)
        if g is None:
            return f
        if index not in g.moved and self._moves(g, packet, ts):
            g.moved.add(index)
        if index in g.moved:
            return g
        return None if self._config[index] != f.configs[index] else f

    def _moves(self, g: OutputFile, packet: Any, ts: float) -> bool:
        """Whether a track moves to the next part at this packet: a video track at a
        keyframe, a changed track at its new configuration, the others from the part's
        start on."""
        index = packet.stream.index
        if packet.stream.type == "video" and not packet.is_keyframe:
            return False
        if index in g.on_change:
            return self._config[index] == g.configs[index]
        assert g.first_ts is not None
        return ts >= g.first_ts

    def _successor(self, f: OutputFile, packet: Any, ts: float, offset: float) -> OutputFile:
        """Open the next part of ``f`` at a new configuration of one of its tracks.  Changes
        of its other tracks due within the held packets (a relay sends the new video and
        audio headers together) go into the same part."""
        configs = {i: self._config[i] for i in f.streams}
        changes: dict[int, Any] = {packet.stream.index: packet}
        for p, _ in self._held:
            j = p.stream.index
            if j in f.streams and j not in changes and p.has_sidedata("new_extradata"):
                new = bytes(p.get_sidedata("new_extradata"))
                if new != f.configs[j]:
                    configs[j], changes[j] = new, p
        first_ts = min(ts, *(p.dts * self._tb[j] for j, p in changes.items()))
        probed = {}
        for j, p in changes.items():
            frame = _probe_frame(p, configs[j])
            if frame is not None:
                probed[j] = frame
        reasons = []
        for j, p in changes.items():
            frame = probed.get(j)
            if isinstance(frame, av.VideoFrame):
                was = f"{f.size_wh[0]}x{f.size_wh[1]}" if f.size_wh else "?"
                reasons.append(
                    f"video configuration changed ({was} to {frame.width}x{frame.height})"
                )
            elif isinstance(frame, av.AudioFrame):
                sound = f"{frame.sample_rate} Hz {frame.layout.name}"
                reasons.append(f"audio configuration changed (to {sound})")
            else:
                reasons.append(f"{p.stream.type} configuration changed")
        begin_ms = int((first_ts + offset) * 1000)
        streams = [self._inputs[i] for i in f.streams]
        g = self._open_file(f.format, f.track, streams, begin_ms, configs, probed)
        g.first_ts = first_ts
        g.on_change = set(changes)
        self._new_part(g, ", ".join(reasons))
        return g

    def _new_part(self, f: OutputFile, reason: str) -> None:
        self.new_parts.append((f.path.name, reason))
        fields = {"url": shown_url(self.plan.url), "file": f.path.name, "why": reason}
        log.info("recorder.new_part", extra={"fields": fields})

    def _decode(self, packet: Any, at_s: float) -> None:
        """Decode an audio packet (before it is muxed anywhere) for the files that encode it
        and for the sound wave.  A packet that does not decode costs its own few ms only."""
        try:
            frames = packet.decode()
        except av.FFmpegError as exc:
            log.info("recorder.bad_audio_packet", extra={"fields": {"error": str(exc)}})
            return
        for frame in frames:
            if self.sound_wave is not None and self.plan.sound_wave is not None:
                self.sound_wave.add(at_s, self.plan.sound_wave[1], frame.to_ndarray())
            for f in self._open:
                if f.encoder is not None:
                    f.encoder.encode(frame)
            at_s += frame.samples / frame.sample_rate

    def _close_file(self, f: OutputFile) -> None:
        try:
            if f.encoder is not None:
                f.encoder.flush()
            f.container.close()
        except (av.FFmpegError, OSError) as exc:
            self.error = self.error or f"closing {f.path.name}: {exc}"
        duration_ms = 0
        if f.encoder is not None:
            duration_ms = round(f.encoder.seconds * 1000)
        elif f.first_ts is not None:
            skipped = self._skipped - f.skipped_base
            duration_ms = max(0, round((f.last_end_ts - f.first_ts - skipped) * 1000))
        self._on_close(f.file_id, {"size": f.size(), "duration_ms": duration_ms})

    def _close_all(self, sound_wave: bool = True) -> None:
        for f in self._open:
            if f.successor is not None:
                self._close_file(f.successor)
            self._close_file(f)
        self._open = []
        if self.sound_wave is not None and sound_wave:
            try:
                self.sound_wave.close()
            except OSError as exc:
                self.error = self.error or f"closing {self.sound_wave.path.name}: {exc}"
            fields: dict[str, object] = {
                "size": file_size(self.sound_wave.path),
                "duration_ms": self.sound_wave.entries * 1000,
            }
            self._on_close(self._sound_wave_id, fields)


def _probe_frame(packet: Any, extradata: bytes) -> Any:
    """The first frame of ``packet`` decoded with ``extradata`` (a new configuration's
    picture size or sample rate), or None."""
    try:
        ctx = av.CodecContext.create(packet.stream.codec_context.name, "r")
        ctx.extradata = extradata
        frames = ctx.decode(_copy(packet)) + ctx.decode(None)
    except av.FFmpegError:
        return None
    return frames[0] if frames else None


def _copy(packet: Any) -> Any:
    clone = av.Packet(bytes(packet))
    clone.dts, clone.pts, clone.duration = packet.dts, packet.pts, packet.duration
    clone.time_base = packet.time_base
    clone.is_keyframe = packet.is_keyframe
    return clone


def open_output(fmt: FileFormat, path: Path, hls_segment_s: int) -> Any:
    if fmt is FileFormat.MP4:
        return av.open(str(path), "w", format="mp4", options={"movflags": MP4_FLAGS})
    if fmt is FileFormat.FLV:
        return av.open(str(path), "w", format="flv")
    if fmt is FileFormat.AAC:
        return av.open(str(path), "w", format="adts")
    if fmt in ENCODED_FORMATS:  # flushed packet by packet: a killed worker loses little
        return av.open(str(path), "w", format=fmt.value, options={"flush_packets": "1"})
    segment = path.with_name(path.stem + "_%05d.ts")
    return av.open(
        str(path),
        "w",
        format="hls",
        options={
            "hls_time": str(hls_segment_s),
            "hls_list_size": "0",
            "hls_playlist_type": "event",
            "hls_segment_filename": str(segment),
            "hls_flags": "independent_segments",
        },
    )


def trim_to_last_box(path: Path) -> int:
    """Cut a fragmented MP4 that a dead worker left after its last complete top-level box, so
    that it ends on a whole fragment (``moof`` + ``mdat``) and plays to the end.  Returns the
    number of bytes removed."""
    size = file_size(path)
    offset, last_start, last_type = 0, 0, b""
    with path.open("r+b") as f:
        while offset + 8 <= size:
            f.seek(offset)
            header = f.read(16)
            box = int.from_bytes(header[:4], "big")
            if box == 1 and len(header) >= 16:
                box = int.from_bytes(header[8:16], "big")
            if box < 8 or offset + box > size:
                break
            last_start, last_type = offset, header[4:8]
            offset += box
        if last_type == b"moof":  # a moof without its mdat is no fragment
            offset = last_start
        if offset < size:
            f.truncate(offset)
    return size - offset


def probe_file(path: Path, fmt: FileFormat) -> dict[str, object]:
    """Size and duration (ms) of a file as a player reads it; for a file a dead worker left
    (a fragmented MP4 is first cut back to its last whole fragment)."""
    if fmt is FileFormat.MP4 and path.exists():
        trim_to_last_box(path)
    if fmt is FileFormat.SOUND_WAVE:
        entries = repair(path)
        return {"size": file_size(path), "duration_ms": entries * 1000}
    size = file_size(path)
    if fmt is FileFormat.HLS:
        size += sum(file_size(p) for p in path.parent.glob(path.stem + "_*.ts"))
    duration_ms = 0
    try:
        with av.open(str(path)) as c:
            end = 0.0
            for packet in c.demux():
                if packet.size and packet.pts is not None:
                    t = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                    end = max(end, t)
            start = float(c.start_time or 0) / av.time_base
            duration_ms = round((end - start) * 1000)
    except (av.FFmpegError, OSError):
        pass
    return {"size": size, "duration_ms": max(duration_ms, 0)}
