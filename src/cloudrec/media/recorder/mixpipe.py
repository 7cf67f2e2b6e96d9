"""Mixed recording: every wanted stream (or the views' streams) composed into one picture and
sound by a :class:`Mixer`, into the task's mix files (mp4/flv/hls/aac/mp3/ogg), its
screenshots (JPG every ``snapshot_interval_s``, one per TakeSnapshot request) and its sound
wave.

The inputs and the layout follow the task's row at every pass: a template or automatic layout
has a region per user or, where ``MixSpec.by_stream``, per stream; otherwise the views
(``MixSpec.inputs``) name their streams, in this room or others of the app.  Pictures the mix
draws (background, watermarks, fills) are fetched once each; one that fails is reported and
left out.  For the sound wave the mixer hands each input's sound per output frame to
:meth:`MixPipeline._measure`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cloudrec.config import Settings
from cloudrec.core.control import TaskControl
from cloudrec.core.errors import CloudrecError
from cloudrec.core.mixing import MixSpec, assign_views
from cloudrec.core.rooms import LiveStream
from cloudrec.core.tasks import (
    FileFormat,
    FileStatus,
    Media,
    RecordedFile,
    SoundWaveKey,
    Task,
    TrackType,
    file_stamp,
)
from cloudrec.media.compositor.overlay import decode_image
from cloudrec.media.recorder.mixencode import MixOutput
from cloudrec.media.recorder.mixer import Mixer, SnapshotTaken
from cloudrec.media.recorder.pipeline import Pipeline, disk_full, type_code
from cloudrec.media.recorder.remux import probe_file
from cloudrec.media.recorder.snapshots import jpg_file, write_jpeg
from cloudrec.media.recorder.soundwave import SoundWave
from cloudrec.outbound import OutboundPolicy, fetch

# After a stop, how long the mixer may take to encode up to the stop when it runs slower than
# real time.  A file still open after that is left to the reconciler, which finalises it once
# the worker has exited.
MIX_STOP_WAIT_S = 120.0


@dataclass
class _MixWave:
    wave: SoundWave
    file_id: int
    beside: int  # the file id of the recording it is named after


def _layout_key(stream: LiveStream, by_stream: bool) -> str:
    """The mixer key of a stream in a template or automatic layout: per stream (the key a view
    naming the stream has) or per user."""
    if by_stream:
        return f"{stream.room_id}/s:{stream.stream_id}"
    return f"{stream.room_id}/{stream.user_id}"


def layout_inputs(wanted: list[LiveStream], by_stream: bool) -> dict[str, LiveStream]:
    """The inputs of a template or automatic layout by mixer key, from the wanted streams as
    the room lists them (as they joined): a user publishing two streams in a layout by user
    shows the first, and the next once that one leaves."""
    shown: dict[str, LiveStream] = {}
    for s in wanted:
        shown.setdefault(_layout_key(s, by_stream), s)
    return shown


def large_region_key(mix: MixSpec, room_id: str, keys_by_stream: dict[str, str]) -> str | None:
    """The mixer key of the stream that ``mix.main_stream_id`` names, for the large region of
    an automatic layout, from ``keys_by_stream`` (stream id → mixer key, as ``_mix`` keys layout
    inputs, for every stream seen: one that left keeps its key, and so its region if FillBlank
    keeps it).  None when none is named (the first to join goes there); a stream never seen
    gets a key no input has (``room/s:stream``, the key of a view named by stream), so the
    region shows the background (as ZEGO says for MixMaxResolutionStreamId)."""
    if mix.main_user_id is not None:
        return f"{room_id}/{mix.main_user_id}"  # the key of a user's stream (_layout_key)
    if mix.main_stream_id is None:
        return None
    return keys_by_stream.get(mix.main_stream_id, f"{room_id}/s:{mix.main_stream_id}")


def _session(stream: LiveStream) -> tuple[str, str, str]:
    """A stream session (views may show streams of other rooms, where the id may be taken)."""
    return (stream.room_id, stream.stream_id, stream.started_at.isoformat())


class MixPipeline(Pipeline):
    """One mixer for the task, started with its first wanted stream (or at once, ``always``)."""

    def __init__(self, control: TaskControl, settings: Settings) -> None:
        super().__init__(control, settings)
        self.mixer: Mixer | None = None
        self.image_urls: set[str] = set()  # fetched (or tried) for the mix
        self.snapshots_asked = 0  # of the task's snapshot_requests, handed to the mixer
        # Unix s of the next screenshot of a screenshots-only mix; None until the inputs
        # have shown their pictures.
        self.next_mix_shot: float | None = None
        self.stream_keys: dict[str, str] = {}  # stream id -> mixer key, of every stream seen
        # Each input's stream (by the mixer's input key), and the sound wave with its file id
        # once the mix's file is open.
        self.mix_streams: dict[str, LiveStream] = {}
        self.mix_wave: _MixWave | None = None
        self.written: dict[int, tuple[Path, FileFormat]] = {}  # file id -> path, format
        self.shot_error: str | None = None  # the last screenshot of the mix that failed
        self.urls: dict[tuple[str, str, str], str] = {}  # each shown stream session's input URL

    def input_url(self, stream: LiveStream) -> str:
        """Where the mixer reads ``stream``: one URL per stream session, so that a new URL
        means the stream moved (a new session, on this ingest node or another) and not
        that its pull credential's window turned (the credential lasts the longest task)."""
        key = _session(stream)
        if key not in self.urls:
            self.urls[key] = self.pull_url(stream, backlog=False)
        return self.urls[key]

    def tick(self, task: Task, room: list[LiveStream], now: float) -> list[LiveStream]:
        live = self._mix(task, room)
        self._mix_screenshots(task, now)
        return live

    def threads(self) -> list[threading.Thread]:
        return [] if self.mixer is None else [self.mixer]

    def stop(self, at: float) -> None:
        if self.mixer is not None:
            self.mixer.stop(at)

    def set_paused(self, paused: bool, now: float) -> None:
        self.paused = paused
        if self.mixer is not None:
            self.mixer.pause() if paused else self.mixer.resume()

    def busy(self) -> bool:
        return self.mixer is not None and self.mixer.busy()

    def wrote_media(self) -> bool:
        return self.mixer is not None and self.mixer.wrote_media.is_set()

    def errors(self) -> list[str | None]:
        return [self.shot_error, None if self.mixer is None else self.mixer.error]

    def stream_ids(self) -> set[str]:
        return {s.stream_id for s in self.mix_streams.values()}

    def close(self, stop_at: float) -> tuple[list[str], list[str]]:
        if self.mixer is None:
            return [], []
        self.mixer.stop(stop_at)
        self.mixer.join(MIX_STOP_WAIT_S + max(0.0, stop_at - time.time()))
        still = ["the mix"] if self.mixer.is_alive() else []
        errors = [self.mixer.error] if self.mixer.error else []
        return still, errors + self.mixer.side_errors

    def _mix(self, task: Task, room: list[LiveStream]) -> list[LiveStream]:
        """Mixed mode: keep the mixer's inputs and layout in step with the task; return the
        wanted streams that are live."""
        assert task.spec.mix is not None
        mix = MixSpec.from_json(task.spec.mix)
        main_key = None
        if mix.template_id is not None or mix.auto_layout is not None:
            wanted = [s for s in room if task.spec.wants(s.user_id, s.stream_id)]
            by_stream = mix.by_stream
            shown = layout_inputs(wanted, by_stream)
            self.stream_keys.update({s.stream_id: _layout_key(s, by_stream) for s in wanted})
            main_key = large_region_key(mix, task.spec.room_id, self.stream_keys)
        else:
            rooms = {i.room_id for i in mix.inputs} - {task.spec.room_id}
            others = [s for r in sorted(rooms) for s in self.control.room(task.app_id, r)]
            shown = assign_views(mix.inputs, [*room, *others])
            wanted = list(shown.values())
        urls = {key: self.input_url(s) for key, s in shown.items()}
        live = {_session(s) for s in shown.values()}
        self.urls = {k: u for k, u in self.urls.items() if k in live}
        media = {key: task.spec.media_of(s.stream_id) for key, s in shown.items()}
        if not mix.media.has_video:  # a sound-only mix: no picture to decode
            media = {k: Media.AUDIO if m.has_audio else m for k, m in media.items()}
        # Merged, not replaced: an input that left may still be in the mixer's next frame.
        self.mix_streams = {**self.mix_streams, **shown}
        if self.mixer is None:
            if not wanted and not mix.always:
                return wanted
            self.mixer = self._start_mixer(task, mix)
        elif mix.image_urls() - self.image_urls:
            self.mixer.add_images(self._fetch_images(mix))
        self.mixer.update(mix, urls, main_key, media)
        return wanted

    def _mix_screenshots(self, task: Task, now: float) -> None:
        """Hand the mixer one screenshot per TakeSnapshot request, and (screenshots-only
        mixes) one every ``snapshot_interval_s``, once the inputs have shown their pictures
        (requests wait until then: the API takes them only while the task mixes)."""
        if self.mixer is None:
            return
        if self.next_mix_shot is None:
            if not self.mixer.pictured():
                return
            self.next_mix_shot = now
        for _ in range(task.snapshot_requests - self.snapshots_asked):
            self.mixer.snapshot(self._mix_shot(task))
        self.snapshots_asked = max(self.snapshots_asked, task.snapshot_requests)
        if task.spec.screenshots and not self.paused and now >= self.next_mix_shot:
            self.mixer.snapshot(self._mix_shot(task))
            while self.next_mix_shot <= now:
                self.next_mix_shot += task.spec.snapshot_interval_s

    def _mix_shot(self, task: Task) -> SnapshotTaken:
        """Writes a composed picture as a JPG of the task (on the mixer's thread)."""
        spec = task.spec
        mix = MixSpec.from_json(spec.mix or {})
        mix_id = mix.output_id

        def taken(rgb: Any, when: datetime) -> None:
            name = f"{task.task_id}_{spec.room_id}_{mix_id}_V_{file_stamp(when)}.jpg"
            path = self.out_dir(task).joinpath(name)
            try:
                nbytes = write_jpeg(rgb, path)
            except (OSError, ValueError) as exc:
                self.shot_error = f"{type(exc).__name__}: {exc}"  # a full disk ends the task
                self.control.event("screenshot_failed", f"{name}: {exc}")
                return
            height, width = rgb.shape[:2]
            begin_ms = int(when.timestamp() * 1000)
            file = jpg_file(task, path, mix_id, mix_id, begin_ms, (width, height), nbytes)
            self.control.file_written(file)

        return taken

    def _start_mixer(self, task: Task, mix: MixSpec) -> Mixer:
        spec = task.spec
        prefix = "/".join(spec.output_prefix)
        tracks = {
            Media.AUDIO_VIDEO: [TrackType.AUDIO_VIDEO],
            Media.VIDEO: [TrackType.VIDEO],
            Media.AUDIO: [TrackType.AUDIO],
            Media.SEPARATE: [TrackType.VIDEO, TrackType.AUDIO],
        }[mix.media]
        stamp = file_stamp(datetime.now(UTC))
        mix_id = mix.output_id
        outputs = []
        for fmt in spec.formats:
            if fmt is FileFormat.JPG:
                continue  # screenshots are taken from the composed pictures, no file written
            for t in [TrackType.AUDIO] if fmt.audio_only else tracks:
                name = (
                    f"{task.task_id}_{spec.room_id}_{mix_id}_{type_code(t)}_{stamp}.{fmt.extension}"
                )
                path = self.out_dir(task).joinpath(name)
                outputs.append(MixOutput(path, fmt, t))

        # The sound wave is named after the first file with sound in it.
        wave_base = next((o for o in outputs if o.track is not TrackType.VIDEO), None)
        wave_key = spec.sound_wave

        def opened(path: Path, fmt: FileFormat, track: TrackType, begin_ms: int) -> int:
            file_id = self.control.file_opened(
                RecordedFile(
                    task_id=task.task_id,
                    name=f"{prefix}/{path.name}" if prefix else path.name,
                    path=str(path),
                    format=fmt,
                    status=FileStatus.RECORDING,
                    stream_id=mix_id,
                    user_id=mix_id,
                    track_type=track,
                    begin_ms=begin_ms,
                    width=mix.width if track is not TrackType.AUDIO else None,
                    height=mix.height if track is not TrackType.AUDIO else None,
                )
            )
            self.written[file_id] = (path, fmt)
            return file_id

        def on_open(out: MixOutput, begin_ms: int) -> int:
            file_id = opened(out.path, out.format, out.track, begin_ms)
            if wave_key is not None and out is wave_base:
                path = out.path.with_suffix(".sw")
                wave_id = opened(path, FileFormat.SOUND_WAVE, TrackType.AUDIO, begin_ms)
                self.mix_wave = _MixWave(SoundWave(path, wave_key.value), wave_id, file_id)
            return file_id

        def on_close(file_id: int, fields: dict[str, object]) -> None:
            written = self.written.get(file_id)
            if written is not None and self.mixer is not None and disk_full(self.mixer.error):
                # Cut short by the full disk: back to what a player reads before it is closed.
                fields = {**fields, **probe_file(*written), "complete": False}
            self.control.file_closed(file_id, str(file_id), **fields)
            w = self.mix_wave
            if w is not None and file_id == w.beside:
                w.wave.close()
                size = w.wave.path.stat().st_size
                duration_ms = w.wave.entries * 1000
                self.control.file_closed(
                    w.file_id, str(w.file_id), size=size, duration_ms=duration_ms
                )

        mixer = Mixer(
            replace(mix, hls_segment_s=spec.hls_segment_s),
            outputs,
            self._fetch_images(mix),
            on_open,
            on_close,
        )
        if wave_key is not None:
            mixer.audio_tap = self._measure
        if self.paused:  # its first stream came during a pause, or a later attempt took over one
            mixer.pause()
        mixer.start()
        self.control.event("mix_started", f"{mix.width}x{mix.height}@{mix.fps}")
        return mixer

    def _measure(self, at_s: float, sound: dict[str, np.ndarray]) -> None:
        """The mixer's tap (its thread): each input's sound in the frame starting ``at_s``
        seconds into the mix, into the sound wave by stream or user id."""
        w = self.mix_wave
        if w is None:
            return
        w.wave.advance(at_s)
        by_user = w.wave.key == SoundWaveKey.USER.value
        for key, pcm in sound.items():
            stream = self.mix_streams.get(key)
            who = key if stream is None else stream.user_id if by_user else stream.stream_id
            w.wave.add(at_s, who, pcm)

    def _fetch_images(self, mix: MixSpec) -> dict[str, Any]:
        """The background, watermark and fill pictures not fetched yet (a layout change may
        name new ones); one that fails is reported and skipped: the recording goes on
        without it."""
        policy = OutboundPolicy(allow_private=self.settings.allow_private_targets)
        images: dict[str, Any] = {}
        for url in sorted(mix.image_urls() - self.image_urls):
            self.image_urls.add(url)
            try:
                images[url] = decode_image(fetch(url, policy, max_bytes=8 * 1024 * 1024))
            except (CloudrecError, ValueError, OSError) as exc:
                message = exc.message if isinstance(exc, CloudrecError) else str(exc)
                self.control.image_failed(url, message, mix.image_kind(url))
        return images
