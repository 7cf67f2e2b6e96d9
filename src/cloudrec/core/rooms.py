"""Rooms and live streams: what a publisher pushes and what a recorder pulls.

A publisher reaches cloudrec at ``rtmp://HOST:PORT/{appid}/{roomid}`` with the stream name
``{streamid}?uid={userid}&token={token}``.  The RTMP layer hands the raw ``app`` path and stream
name to the core as a :class:`PublishRequest`; the core decides who may publish and records
what is live.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qsl

from cloudrec.core.errors import CloudrecError

ID_PATTERN = r"^[A-Za-z0-9_\-.]{1,128}$"  # room, stream and user ids
_ID_RE = re.compile(ID_PATTERN)


@dataclass(frozen=True)
class StreamName:
    """A stream name as sent in RTMP ``publish``/``play``: ``id?query``."""

    stream_id: str
    args: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str) -> StreamName:
        name, _, query = raw.partition("?")
        args = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
        return cls(stream_id=name, args=args)


@dataclass(frozen=True)
class PublishRequest:
    """An RTMP client asks to publish (or play) ``stream_name`` in RTMP application ``app_path``.

    ``app_path`` is the RTMP ``connect`` app, ``{appid}/{roomid}`` for cloudrec URLs;
    ``stream_name`` is the raw name from ``publish``/``play`` including its ``?query``;
    ``remote_addr`` is the peer's IP address.
    """

    app_path: str
    stream_name: str
    remote_addr: str

    @property
    def name(self) -> StreamName:
        return StreamName.parse(self.stream_name)

    @property
    def stream_key(self) -> str:
        """The key a live stream is known by inside one ingest: ``app_path/stream_id``."""
        return f"{self.app_path.strip('/')}/{self.name.stream_id}"


PlayRequest = PublishRequest


@dataclass(frozen=True)
class StreamMeta:
    """What is known about a published stream's media, from ``onMetaData`` and sequence headers.

    Codec names are lower-case FFmpeg names (``h264``, ``aac``, ``hevc``, ``mp3``, ...); absent
    fields are ``None``.  ``fps`` is frames per second, ``audio_rate`` in Hz.
    """

    video_codec: str | None = None
    audio_codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    audio_rate: int | None = None
    audio_channels: int | None = None
    video_bitrate_kbps: float | None = None
    audio_bitrate_kbps: float | None = None
    encoder: str | None = None


@dataclass(frozen=True)
class RoomAddress:
    """An app and a room, parsed from an RTMP app path ``{appid}/{roomid}``."""

    app_id: int
    room_id: str

    @classmethod
    def parse(cls, app_path: str) -> RoomAddress:
        parts = app_path.strip("/").split("/")
        if len(parts) != 2:
            raise CloudrecError.invalid_argument(
                f"RTMP app {app_path!r} is not of the form '{{appid}}/{{roomid}}'"
            )
        app_s, room = parts
        if not app_s.isdigit():
            raise CloudrecError.invalid_argument(f"app id {app_s!r} is not a number")
        check_id("room id", room)
        return cls(app_id=int(app_s), room_id=room)


def check_id(what: str, value: str) -> str:
    """Room, stream and user ids: 1..128 of ``[A-Za-z0-9_-.]``."""
    if not _ID_RE.match(value):
        raise CloudrecError.invalid_argument(
            f"{what} {value!r} must be 1 to 128 characters of letters, digits, '_', '-' or '.'"
        )
    return value


EMBEDDED = "embedded"  # the source of the streams the embedded RTMP ingest holds


@dataclass(frozen=True)
class LiveStream:
    """A stream that is live in a room, as the room directory lists it."""

    app_id: int
    room_id: str
    stream_id: str
    user_id: str
    meta: StreamMeta
    started_at: datetime
    pull_url: str
    source: str  # EMBEDDED or "hook" (an external media server)
    node: str = ""  # the ingest node holding the publisher ("": a media server's stream)


@dataclass(frozen=True)
class RoomEvent:
    """A line of a room's history: ``published``, ``unpublished`` or ``refused``."""

    kind: str
    app_id: int | None
    room_id: str | None
    stream_id: str | None
    user_id: str | None
    at: datetime
    remote_addr: str | None = None
    detail: str = ""
