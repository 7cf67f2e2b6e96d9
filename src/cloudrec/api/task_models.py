"""cloudrec's own start request (``POST /v1/apps/{appid}/tasks``), validated into the core's
:class:`RecordingSpec`.  Storage is optional: without it, the files stay on this server (in
its spool) and are fetched from ``GET …/tasks/{id}/files/{name}``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cloudrec.core.errors import CloudrecError
from cloudrec.core.mixing import MixSpec, round4
from cloudrec.core.rooms import check_id
from cloudrec.core.tasks import FileFormat, Media, RecordingSpec, RecordMode, StorageTarget

Id = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")


Format = Literal["mp4", "flv", "hls", "aac", "mp3", "ogg"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Storage(Strict):
    """An S3-protocol bucket: ``vendor`` "s3" for any (MinIO, Ceph, …) at ``endpoint``."""

    vendor: Literal[
        "s3", "aws-s3", "aliyun-oss", "tencent-cos", "qiniu-kodo", "huawei-obs", "gcs", "cmcc-eos"
    ] = "s3"
    endpoint: str = Field("", max_length=256, description="host[:port], or http(s)://host[:port]")
    bucket: str = Field(min_length=1, max_length=63)
    region: str = Field("", max_length=64)
    access_key: str = Field(min_length=1, max_length=256)
    secret_key: str = Field(min_length=1, max_length=256)
    path_style: bool = False

    def target(self) -> StorageTarget:
        if self.vendor == "s3" and not self.endpoint:
            raise CloudrecError.invalid_argument("storage.endpoint is required for vendor s3")
        return StorageTarget(
            self.vendor,
            self.endpoint,
            self.bucket,
            self.access_key,
            self.secret_key,
            self.region,
            self.path_style,
        )


class Mix(Strict):
    """The mixed picture: every stream of the room laid out in the order they joined."""

    width: int = Field(1280, ge=16, le=1920)
    height: int = Field(720, ge=16, le=1920)
    fps: int = Field(15, ge=5, le=30)
    bitrate_kbps: int = Field(1500, ge=64, le=20000)
    layout: Literal["grid", "horizontal", "vertical", "floating"] = Field(
        "grid", description="docs/layouts.md"
    )
    main_stream: str | None = Field(None, description="the stream of the large region")
    background_color: str = Field("000000", pattern=r"^#?[0-9a-fA-F]{6}$")


class StartTask(Strict):
    room_id: str = Id
    mode: Literal["single", "mixed"] = Field(
        "single", description="single: a file per stream, untouched; mixed: one picture"
    )
    users: list[str] = Field(
        default_factory=list, max_length=50, description="only these users (default: all)"
    )
    streams: list[str] = Field(
        default_factory=list, max_length=50, description="only these streams (default: all)"
    )
    media: Literal["av", "audio", "video"] = "av"
    formats: list[Format] = Field(
        default_factory=lambda: list[Format](["mp4"]), min_length=1, max_length=4
    )
    prefix: list[str] = Field(
        default_factory=list, max_length=5, description="the object key's folders"
    )
    callback_url: str | None = Field(None, max_length=1024, pattern=r"^https?://")
    idle_timeout_s: float | None = Field(None, ge=5, le=86400)
    max_duration_s: float | None = Field(None, ge=10, le=86400)
    mix: Mix | None = None
    storage: Storage | None = Field(None, description="none: the files stay on this server")

    def spec(self) -> RecordingSpec:
        for i, user in enumerate(self.users):
            check_id(f"users[{i}]", user)
        for i, stream in enumerate(self.streams):
            check_id(f"streams[{i}]", stream)
        for i, part in enumerate(self.prefix):
            check_id(f"prefix[{i}]", part)
        if self.mix is not None and self.mix.main_stream is not None:
            check_id("mix.main_stream", self.mix.main_stream)
        media = Media(self.media)
        formats = tuple(dict.fromkeys(FileFormat(f) for f in self.formats))
        audio_only = {FileFormat.AAC, FileFormat.MP3, FileFormat.OGG}
        if media is Media.VIDEO and audio_only & set(formats):
            raise CloudrecError.invalid_argument(
                "formats aac, mp3 and ogg hold audio only, and media 'video' records no sound"
            )
        if self.mode == "single" and self.mix is not None:
            raise CloudrecError.invalid_argument("mix is for mode 'mixed'")
        mix = None
        if self.mode == "mixed":
            m = self.mix or Mix()
            mix = MixSpec(
                width=round4(m.width),
                height=round4(m.height),
                fps=m.fps,
                gop=m.fps * 2,
                bitrate_kbps=m.bitrate_kbps,
                media=media,
                auto_layout=m.layout,
                main_stream_id=m.main_stream,
                background_color=m.background_color.lstrip("#").lower(),
            ).to_json()
        return RecordingSpec(
            room_id=self.room_id,
            mode=RecordMode.MIXED if self.mode == "mixed" else RecordMode.SINGLE,
            media=media,
            formats=formats,
            user_ids=tuple(self.users),
            stream_ids=tuple(self.streams),
            idle_timeout_s=self.idle_timeout_s,
            max_duration_s=self.max_duration_s,
            output_prefix=tuple(self.prefix),
            callback_url=self.callback_url,
            mix=mix,
        )
