"""Recording tasks: the internal spec a dialect validates a request into, the task's states,
and the files it writes.

The task row is the control plane.  The API writes the *desired* state (``RUNNING``,
``PAUSED``, ``STOPPED``); the worker reconciles to it and reports the *actual* state
(:class:`TaskState`), heartbeats, files and events.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cloudrec.core.paths import check_parts


class TaskState(enum.StrEnum):
    INITIALISING = "initialising"  # accepted; the worker has not recorded anything yet
    RECORDING = "recording"
    PAUSED = "paused"
    STOPPING = "stopping"  # stop asked or decided; files being finalised
    UPLOADING = "uploading"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (TaskState.COMPLETED, TaskState.FAILED)


class Desired(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class RecordMode(enum.StrEnum):
    SINGLE = "single"  # one file per stream, remuxed, no transcode
    MIXED = "mixed"


class Media(enum.StrEnum):
    AUDIO_VIDEO = "av"
    VIDEO = "video"
    AUDIO = "audio"
    SEPARATE = "separate"  # audio and video, each in a file of its own (ZEGO StreamType 4)

    @property
    def has_video(self) -> bool:
        return self is not Media.AUDIO

    @property
    def has_audio(self) -> bool:
        return self is not Media.VIDEO


class FileFormat(enum.StrEnum):
    MP4 = "mp4"  # fragmented: frag_keyframe+empty_moov+default_base_moof
    FLV = "flv"
    HLS = "hls"  # m3u8 + MPEG-TS segments
    AAC = "aac"  # ADTS, audio only
    TS = "ts"  # one MPEG-TS segment of an HLS recording, uploaded on its own while recording
    JPG = "jpg"  # one picture: a screenshot (ZEGO OutputFileFormat jpg, TakeSnapshot)
    MP3 = "mp3"  # audio only, encoded (MP3)
    OGG = "ogg"  # audio only, encoded (Opus in Ogg)
    # A recording's sound wave: JSON, one entry per second with each stream's volume.  Never
    # a requested format: written beside a recording file when the task asks for it.
    SOUND_WAVE = "sw"

    @property
    def extension(self) -> str:
        return "m3u8" if self is FileFormat.HLS else self.value

    @property
    def audio_only(self) -> bool:
        return self in (FileFormat.AAC, FileFormat.MP3, FileFormat.OGG)


# Content-Type of an uploaded object, by the extension of its key (HLS segments included).
CONTENT_TYPES = {
    "mp4": "video/mp4",
    "flv": "video/x-flv",
    "m3u8": "application/vnd.apple.mpegurl",
    "ts": "video/mp2t",
    "aac": "audio/aac",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "jpg": "image/jpeg",
    "sw": "application/json",
}


def content_type(key: str) -> str:
    """The Content-Type to upload an object under ``key`` with."""
    extension = key.rsplit(".", 1)[-1].lower() if "." in key else ""
    return CONTENT_TYPES.get(extension, "application/octet-stream")


class SoundWaveKey(enum.StrEnum):
    """What names a stream in a sound-wave file: the JSON key of its id (ZEGO SoundWaveType
    0 and 1)."""

    STREAM = "stream_id"
    USER = "user_id"


class FileStatus(enum.StrEnum):
    """A file's life."""

    RECORDING = "recording"  # being written
    RECORDED = "recorded"  # finalised in the spool; waiting for its upload (or kept: no storage)
    UPLOADING = "uploading"
    UPLOADED = "uploaded"  # confirmed in the app's bucket; the spool copy is gone
    BACKED_UP = "backed_up"  # uploads failed; in the backup store, re-uploaded until retention
    FAILED = "failed"  # never uploaded, and the backup retention has ended
    EXPIRED = "expired"  # kept on this server (no storage) until its retention ended: removed

    @property
    def delivered(self) -> bool:
        """No more work for the uploader (what a task waits for before it completes)."""
        return self in (FileStatus.UPLOADED, FileStatus.BACKED_UP, FileStatus.FAILED)


class TrackType(enum.IntEnum):
    """The media of a file, as both dialects number it."""

    AUDIO = 1
    VIDEO = 2
    AUDIO_VIDEO = 3


# Why a task ended, as stored in ``Task.end_reason``.
END_STOPPED = "stopped by request"
END_IDLE = "no stream in the room"
END_MAX_DURATION = "maximum recording time reached"
END_WORKER_DIED = "worker ended abnormally"  # and kept dying: the restart limit was reached
END_DISK_FULL = "spool disk full"
END_RECORDER_FAILED = "recorder failed"  # a live stream's recorder kept failing: restarts spent
END_UPLOADS_DONE = "files delivered"


@dataclass(frozen=True)
class RecordingSpec:
    """What to record, validated once at the edge by a dialect; trusted inside.

    ``user_ids`` empty means every stream of the room.  ``output_prefix`` are the path parts
    joined with ``/`` before each file name.  Durations are seconds.
    """

    room_id: str
    mode: RecordMode = RecordMode.SINGLE
    media: Media = Media.AUDIO_VIDEO
    formats: tuple[FileFormat, ...] = (FileFormat.MP4,)
    user_ids: tuple[str, ...] = ()
    stream_ids: tuple[str, ...] = ()  # empty: every stream (of the wanted users)
    hls_segment_s: int = 15
    # Formats (JPG): a screenshot of each stream (or of the mix) every this many seconds.
    snapshot_interval_s: int = 10
    idle_timeout_s: float | None = None  # None: the service's setting
    max_duration_s: float | None = None  # None: the service's setting
    output_prefix: tuple[str, ...] = ()
    callback_url: str | None = None
    dialect: str = "cloudrec"
    # The mixed picture and sound (``MixSpec.to_json()``) when ``mode`` is mixed.
    mix: dict[str, Any] | None = None
    # HLS: upload each segment as soon as it is finished, not with the playlist at the end.
    realtime_segments: bool = False
    # What to record of particular streams (stream id -> media; "" for every other stream):
    # ZEGO StreamConfigList.
    stream_media: dict[str, Media] = field(default_factory=dict)
    # A stream that leaves and comes back: None, a new file each time; "close", one file,
    # the timeline closing over the absence (ZEGO ResumeWithoutInterruption); "fill", one
    # file keeping the absence, its sound silent (ZEGO FillBlank, single streams).
    rejoin: str | None = None
    # Write a sound-wave file beside each recording file, streams named by this key.
    sound_wave: SoundWaveKey | None = None
    # Dialect-specific values kept verbatim for the dialect's own answers (never secrets).
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Below every dialect: no part may leave the task's directory (issue 11).
        check_parts(self.output_prefix)

    def to_json(self) -> dict[str, Any]:
        return {
            "room_id": self.room_id,
            "mode": self.mode.value,
            "media": self.media.value,
            "formats": [f.value for f in self.formats],
            "user_ids": list(self.user_ids),
            "stream_ids": list(self.stream_ids),
            "hls_segment_s": self.hls_segment_s,
            "snapshot_interval_s": self.snapshot_interval_s,
            "idle_timeout_s": self.idle_timeout_s,
            "max_duration_s": self.max_duration_s,
            "output_prefix": list(self.output_prefix),
            "callback_url": self.callback_url,
            "dialect": self.dialect,
            "mix": self.mix,
            "realtime_segments": self.realtime_segments,
            "stream_media": {k: v.value for k, v in self.stream_media.items()},
            "rejoin": self.rejoin,
            "sound_wave": None if self.sound_wave is None else self.sound_wave.value,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecordingSpec:
        return cls(
            room_id=data["room_id"],
            mode=RecordMode(data["mode"]),
            media=Media(data["media"]),
            formats=tuple(FileFormat(f) for f in data["formats"]),
            user_ids=tuple(data["user_ids"]),
            stream_ids=tuple(data.get("stream_ids", ())),
            hls_segment_s=int(data["hls_segment_s"]),
            snapshot_interval_s=int(data.get("snapshot_interval_s", 10)),
            idle_timeout_s=data.get("idle_timeout_s"),
            max_duration_s=data.get("max_duration_s"),
            output_prefix=tuple(data["output_prefix"]),
            callback_url=data.get("callback_url"),
            dialect=data.get("dialect", "cloudrec"),
            mix=data.get("mix"),
            realtime_segments=bool(data.get("realtime_segments", False)),
            stream_media={k: Media(v) for k, v in (data.get("stream_media") or {}).items()},
            rejoin=data.get("rejoin"),
            sound_wave=SoundWaveKey(data["sound_wave"]) if data.get("sound_wave") else None,
            extra=dict(data.get("extra") or {}),
        )

    @property
    def screenshots(self) -> bool:
        """Screenshots only (JPG): no video or audio file is written."""
        return self.formats == (FileFormat.JPG,)

    def media_of(self, stream_id: str) -> Media:
        """What to record of ``stream_id``: its own entry, else the default entry, else the
        task's media."""
        return self.stream_media.get(stream_id) or self.stream_media.get("") or self.media

    def wants(self, user_id: str, stream_id: str = "") -> bool:
        """Whether a live stream is one this task records."""
        if self.user_ids and user_id not in self.user_ids:
            return False
        return not self.stream_ids or stream_id in self.stream_ids


@dataclass(frozen=True)
class StorageTarget:
    """Where finished files go: an S3-protocol bucket.  Holds secrets: never log or echo it."""

    vendor: str
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    region: str = ""
    path_style: bool = False

    def __repr__(self) -> str:
        return f"StorageTarget({self.vendor}, {self.endpoint}, {self.bucket}, keys hidden)"


@dataclass(frozen=True)
class Task:
    task_id: str
    app_id: int
    spec: RecordingSpec
    state: TaskState
    desired: Desired
    created_at: datetime
    started_at: datetime | None = None  # first media written
    ended_at: datetime | None = None
    stop_requested_at: datetime | None = None
    heartbeat_at: datetime | None = None
    worker: str | None = None  # executor's handle, e.g. "local:PID"
    end_reason: str | None = None
    error: str | None = None
    resource_id: str | None = None
    # Screenshots of the mix asked for so far (a counter: the worker takes one per increment).
    snapshot_requests: int = 0
    # Ownership: the attempt number of the worker that owns the task (a fencing token: every
    # write of a worker names it), the end of its lease, and where a new attempt's files
    # begin (the last moment the previous attempt was known to record).
    attempt: int = 1
    lease_until: datetime | None = None
    resume_at: datetime | None = None
    attempt_started_at: datetime | None = None
    deaths: int = 0  # since the task last ran well
    node: str | None = None  # the machine the current attempt runs on (its claim says)
    units: int = 1  # what it costs a machine (core/cost.py), decided at its start


@dataclass(frozen=True)
class RecordedFile:
    """A file a task wrote.  ``name`` is its object key (prefix included); ``path`` its place
    in the spool.  ``begin_ms`` is the Unix time (ms) of its first media."""

    task_id: str
    name: str
    path: str
    format: FileFormat
    status: FileStatus
    stream_id: str | None
    user_id: str | None
    track_type: TrackType
    begin_ms: int
    size: int = 0
    duration_ms: int = 0
    width: int | None = None
    height: int | None = None
    id: int | None = None
    # False when the worker died while writing it: playable up to its last whole fragment.
    complete: bool = True
    backup_path: str | None = None
    url: str | None = None
    retry_at: datetime | None = None
    keep_until: datetime | None = None
    # The publisher's own Unix time (ms) carried in the stream's SEI, 0 when none (ZEGO's
    # CustomBeginTimestamp).
    custom_begin_ms: int = 0
    attempt: int = 1  # the task's attempt that wrote it
    node: str | None = None  # the machine that attempt ran on (``Settings.node_name``)


def new_task_id() -> str:
    """35 lower-case hex characters, the shape of a JoCloud recordid."""
    return secrets.token_hex(18)[:35]


def file_stamp(at: datetime) -> str:
    """``yyyyMMddHHmmssSSS`` in UTC, as both dialects name files."""
    return at.strftime("%Y%m%d%H%M%S") + f"{at.microsecond // 1000:03d}"


@dataclass(frozen=True)
class UploadAttempt:
    file_id: int
    target: str  # "bucket" or "backup"
    at: datetime
    ok: bool
    error_kind: str | None = None
    error: str | None = None
    duration_ms: int = 0


@dataclass(frozen=True)
class Callback:
    id: int | None
    task_id: str
    app_id: int
    url: str
    event: str
    message_id: str
    body: str
    status: str  # pending, delivered, failed
    attempts: int
    next_at: datetime
    created_at: datetime
    delivered_at: datetime | None = None


@dataclass(frozen=True)
class CallbackAttempt:
    callback_id: int
    at: datetime
    http_status: int | None
    error: str | None
    duration_ms: int
