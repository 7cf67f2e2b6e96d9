"""ZEGO ``StartRecord`` bodies, validated into cloudrec's internal spec (vendor names verbatim).

OutputFileFormat jpg asks for screenshots instead of a recording (video-screenshot.mdx): a JPG
of each stream (RecordMode 1) or of the mix (RecordMode 2) every SnapshotInterval seconds
([5, 3600], default 10; read only with jpg); jpg with StreamType 1 (audio only) is refused.

OutputFileFormat mp3 and ogg (Opus) hold audio only: with StreamType 2 (video only) they are
refused, as aac is.  ``RecordSoundWave`` (+ ``SoundWaveType`` 0 stream ids, 1 user ids) is
read from ``MixConfig``, where ZEGO's OpenAPI file puts it, or, for RecordMode 1 which has no
mix, from ``RecordInputParams``; it measures the sound of a recording, so StreamType 2 and
jpg refuse it.

What this release does not do is refused with 300000004 and a message that says so, never
pretended: whiteboards (no whiteboard service here) and the VOD vendors (5, 6).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cloudrec.core.errors import CloudrecError
from cloudrec.core.mixing import Box, ImageMark, MixInput, MixSpec, TextMark, round4
from cloudrec.core.paths import part_problem
from cloudrec.core.rooms import check_id
from cloudrec.core.tasks import (
    FileFormat,
    Media,
    RecordingSpec,
    RecordMode,
    SoundWaveKey,
    StorageTarget,
)

STREAM_TYPES = {1: Media.AUDIO, 2: Media.VIDEO, 3: Media.AUDIO_VIDEO, 4: Media.SEPARATE}
FORMATS = {
    "mp4": FileFormat.MP4,
    "flv": FileFormat.FLV,
    "hls": FileFormat.HLS,
    "aac": FileFormat.AAC,
    "jpg": FileFormat.JPG,
    "mp3": FileFormat.MP3,
    "ogg": FileFormat.OGG,
}
SOUND_WAVE_KEYS = {0: SoundWaveKey.STREAM, 1: SoundWaveKey.USER}
# ZEGO Vendor codes → the storage layer's vendor names (all S3-protocol).
VENDORS = {
    1: "aws-s3",
    2: "aliyun-oss",
    3: "tencent-cos",
    4: "qiniu-kodo",
    7: "huawei-obs",
    8: "gcs",
    9: "cmcc-eos",
    10: "s3",
}
# MixMode 2-5 → ZEGO's own layouts (media/compositor/layout.py auto_layout, docs/layouts.md).
MIX_LAYOUTS = {2: "grid", 3: "horizontal", 4: "vertical", 5: "floating"}
# MixMaxResolutionStreamId names the large region of these (start-record.yaml).
LARGE_REGION_MODES = (3, 4, 5)
MAX_VIEWS = 25  # MixInputList: "You can configure up to 25 regions."


def _bad(message: str) -> CloudrecError:
    return CloudrecError.invalid_argument(message)


def _obj(d: Any, name: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise _bad(f"{name} must be a JSON object")
    return d


def _int(
    d: dict[str, Any],
    name: str,
    where: str,
    default: int | None = None,
    lo: int | None = None,
    hi: int | None = None,
) -> int:
    value = d.get(name, default)
    if value is None:
        raise _bad(f"missing {where}{name}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{where}{name} must be an integer, not {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _bad(f"{where}{name} must be in [{lo}, {hi}], not {value}")
    return value


def _str(d: dict[str, Any], name: str, where: str, required: bool = True) -> str:
    value = d.get(name)
    if value is None or value == "":
        if required:
            raise _bad(f"missing {where}{name}")
        return ""
    if not isinstance(value, str):
        raise _bad(f"{where}{name} must be a string, not {value!r}")
    return value


def _url(d: dict[str, Any], name: str, where: str) -> str | None:
    value = _str(d, name, where, required=False)
    if not value:
        return None
    if len(value.encode()) > 2048:
        raise _bad(f"{where}{name} is longer than 2048 bytes")
    if not value.startswith(("http://", "https://")):
        raise _bad(f"{where}{name} {value!r} is not an http:// or https:// URL")
    return value


def _bool(d: dict[str, Any], name: str, where: str) -> bool:
    value = d.get(name, False)
    if not isinstance(value, bool):
        raise _bad(f"{where}{name} must be true or false, not {value!r}")
    return value


def _rgb(d: dict[str, Any], name: str, where: str) -> str:
    """A 0xRRGGBB00 integer as cloudrec's RRGGBB (an int32 in ZEGO's files: a client may send
    0xFF000000 and up as a negative number)."""
    value = d.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**31) <= value < 2**32:
        raise _bad(f"{where}{name} must be a 0xRRGGBB00 integer, not {value!r}")
    return f"{((value & 0xFFFFFFFF) >> 8) & 0xFFFFFF:06X}"


def _not_yet(what: str) -> CloudrecError:
    return _bad(f"{what} is not available in this cloudrec release")


def parse_storage(raw: Any) -> StorageTarget:
    d = _obj(raw, "StorageParams")
    w = "StorageParams."
    vendor = _int(d, "Vendor", w, lo=1, hi=10)
    if vendor in (5, 6):
        raise _not_yet(f"{w}Vendor {vendor} (a VOD platform, not object storage)")
    if vendor == 10:
        _str(d, "EndPoint", w)
    return StorageTarget(
        vendor=VENDORS[vendor],
        endpoint=_str(d, "EndPoint", w, required=False),
        bucket=_str(d, "Bucket", w),
        access_key=_str(d, "AccessKeyId", w),
        secret_key=_str(d, "AccessKeySecret", w),
        region=_str(d, "Region", w, required=False),
        path_style=bool(d.get("S3ForcePathStyle", vendor == 10)),
    )


def parse_views(
    raw: Any,
    room_id: str,
    width: int,
    height: int,
    w: str = "RecordInputParams.MixConfig.MixInputList",
) -> tuple[MixInput, ...]:
    """MixMode 1: ``MixInputList`` views (Top/Left/Bottom/Right in output pixels, Layer: the
    larger on top, FillMode 1 crop / 2 scale); a view without StreamId takes the next stream
    to join.  ``w`` names the list in messages."""
    if not isinstance(raw, list) or not raw:
        raise _bad(f"{w} must be a non-empty array when MixMode is 1")
    if len(raw) > MAX_VIEWS:
        raise _bad(f"{w} has {len(raw)} views; at most {MAX_VIEWS} are allowed")
    views = []
    for n, item in enumerate(raw):
        where = f"{w}[{n}]."
        v = _obj(item, where)
        if v.get("ViewType", 1) == 2:
            raise _bad(f"{where}ViewType 2 is a whiteboard view: cloudrec has no whiteboard")
        top, left = _int(v, "Top", where, lo=0, hi=1920), _int(v, "Left", where, lo=0, hi=1920)
        bottom = _int(v, "Bottom", where, lo=0, hi=1920)
        right = _int(v, "Right", where, lo=0, hi=1920)
        if right <= left or bottom <= top:
            raise _bad(f"{where}Right must be more than Left and Bottom more than Top")
        if right > width or bottom > height:
            raise _bad(f"{where}the view reaches past the {width}x{height} output")
        layer = _int(v, "Layer", where)
        fill = _int(v, "FillMode", where, default=1, lo=1, hi=2)
        stream = _str(v, "StreamId", where, required=False) or None
        if stream is not None:
            check_id(f"{where}StreamId", stream)
        background = _url(v, "BackgroundImage", where)
        views.append(
            (
                layer,
                n,
                MixInput(
                    user_id="",
                    room_id=room_id,
                    stream_id=stream,
                    box=Box(left, top, right - left, bottom - top),
                    crop="fill" if fill == 1 else "fit",
                    # "Only takes effect when the StreamId parameter is specified."
                    background_url=background if stream is not None else None,
                ),
            )
        )
    # Layers are any integers in ZEGO; cloudrec's are their ranks, 0..24, in the same order.
    ranked = sorted(views, key=lambda t: (t[0], t[1]))
    return tuple(replace(mi, z=rank) for rank, (_, _, mi) in enumerate(ranked))


def parse_fill(inp: dict[str, Any]) -> dict[str, Any]:
    """``FillBlank`` and ``FillFrame`` (RecordInputParams) as MixSpec fields."""
    w = "RecordInputParams."
    frame = _obj(inp.get("FillFrame") or {}, f"{w}FillFrame")
    fw = f"{w}FillFrame."
    return {
        "fill_blank": _bool(inp, "FillBlank", w),
        "frame_fill": _int(frame, "FrameFillMode", fw, default=1, lo=1, hi=3),
        "frame_fill_color": _rgb(frame, "FrameFillColor", fw),
    }


def parse_watermark(d: dict[str, Any], w: str, width: int, height: int) -> tuple[ImageMark, ...]:
    url = _url(d, "MixOutputWatermarkImage", w)
    if url is None:
        return ()
    cw = f"{w}MixOutputWatermarkImageConfig."
    c = _obj(d.get("MixOutputWatermarkImageConfig"), f"{w}MixOutputWatermarkImageConfig")
    left, top = _int(c, "Left", cw, lo=0, hi=1920), _int(c, "Top", cw, lo=0, hi=1920)
    right, bottom = _int(c, "Right", cw, lo=0, hi=1920), _int(c, "Bottom", cw, lo=0, hi=1920)
    if right <= left or bottom <= top:
        raise _bad(f"{cw}Right must be more than Left and Bottom more than Top")
    if right > width or bottom > height:
        raise _bad(f"{cw}the watermark reaches past the {width}x{height} output")
    # "Stretched to fill the watermark layout position."
    return (ImageMark(left, top, right - left, bottom - top, url, scale=1),)


def parse_timestamp(d: dict[str, Any], w: str, width: int) -> TextMark | None:
    raw = d.get("MixOutputWatermarkTimestampConfig")
    if raw is None:
        return None
    tw = f"{w}MixOutputWatermarkTimestampConfig."
    size = _int(_obj(raw, tw.rstrip(".")), "FontSize", tw, lo=12, hi=100)
    # "Displayed in the upper right corner of the video in the format yyyy-MM-dd HH:mm":
    # 16 characters of Noto Sans CJK are at most about 0.6 em wide each.
    margin = max(4, size // 4)
    x = max(0, width - margin - int(16 * 0.6 * size))
    return TextMark(x, margin, "%Y-%m-%d %H:%M", size, background=None)


def parse_layout(
    d: dict[str, Any], where: str, room_id: str, width: int, height: int
) -> dict[str, Any]:
    """``MixMode`` (default 2) with its ``MixInputList`` (1) or ``MixMaxResolutionStreamId``
    (3-5), as :class:`MixSpec` fields; the same in StartRecord's MixConfig and in UpdateLayout,
    where ``where`` prefixes the field names in messages."""
    mode = _int(d, "MixMode", where, default=2, lo=1, hi=5)
    main = _str(d, "MixMaxResolutionStreamId", where, required=False) or None
    if main is not None:
        check_id(f"{where}MixMaxResolutionStreamId", main)
    fields: dict[str, Any] = {"template_id": None, "auto_layout": None, "main_stream_id": None}
    if mode == 1:
        views = parse_views(d.get("MixInputList"), room_id, width, height, f"{where}MixInputList")
        return {**fields, "inputs": views}
    return {
        **fields,
        "auto_layout": MIX_LAYOUTS[mode],
        "main_stream_id": main if mode in LARGE_REGION_MODES else None,
        "inputs": (),
    }


def parse_mix(
    raw: Any, media: Media, room_id: str = "", fill: dict[str, Any] | None = None
) -> MixSpec:
    d = _obj(raw, "RecordInputParams.MixConfig")
    w = "RecordInputParams.MixConfig."
    _str(d, "MixOutputStreamId", w)
    video = _obj(d.get("MixOutputVideoConfig") or {}, f"{w}MixOutputVideoConfig")
    vw = f"{w}MixOutputVideoConfig."
    width = height = 16
    fps, bitrate = 15, 800
    if media.has_video:
        width = _int(video, "Width", vw, lo=16, hi=1920)
        height = _int(video, "Height", vw, lo=16, hi=1920)
        if width * height > 1920 * 1080:
            raise _bad(f"{vw}Width x Height {width}x{height} is more than 1920 x 1080")
        fps = _int(video, "Fps", vw, default=15, lo=5, hi=30)
        bitrate = max(1, _int(video, "Bitrate", vw, lo=1) // 1000)  # bps → kbps
    color = _rgb(d, "MixOutputBackgroundColor", w)
    audio = _obj(d.get("MixOutputAudioConfig") or {}, f"{w}MixOutputAudioConfig")
    audio_bps = _int(audio, "Bitrate", f"{w}MixOutputAudioConfig.", default=48000)
    if not 8000 <= audio_bps <= 320000:
        raise _bad(f"{w}MixOutputAudioConfig.Bitrate must be in [8000, 320000] bps")
    background = _url(d, "MixOutputBackgroundImage", w)
    # FillMode is for the regions of MixMode 2-5 (a view of MixMode 1 has its own); the large
    # region of 3-5 is always scaled to fit (set-the-mixed-flow-layout).
    fill_mode = _int(d, "FillMode", w, default=1, lo=1, hi=2)
    layout = parse_layout(d, w, room_id, width, height)
    return MixSpec(
        width=round4(width),
        height=round4(height),
        fps=fps,
        gop=fps * 2,
        bitrate_kbps=bitrate,
        media=media,
        crop="fill" if fill_mode == 1 else "fit",
        background_color=color,
        # "Stretched or compressed to fill the entire view."
        background_image=ImageMark(0, 0, width, height, background, scale=1)
        if background
        else None,
        images=parse_watermark(d, w, width, height),
        timestamp=parse_timestamp(d, w, width),
        view_background_url=_url(d, "DefaultMixStreamBackgroundImage", w),
        audio_bitrate_kbps=audio_bps // 1000,
        always=_bool(d, "IsAlwaysMix", w),
        # ZEGO lays out streams (a user may publish camera and screen); OutputFileRule 1 names
        # a mix's files by its MixOutputStreamId.
        by_stream=True,
        output_id=d["MixOutputStreamId"],
        extra={"MixMode": d.get("MixMode", 2)},
        **(fill or {"frame_fill": 1}),
        **layout,
    )


def parse_stream_configs(mix: dict[str, Any], media: Media) -> dict[str, Media]:
    """``MixConfig.StreamConfigList``: what to take of particular streams into the mix (an
    empty StreamId sets the default); it applies when StreamType is 3 or 4 ("only takes
    effect" then)."""
    w = "RecordInputParams.MixConfig.StreamConfigList"
    raw = mix.get("StreamConfigList") or []
    if not isinstance(raw, list):
        raise _bad(f"{w} must be an array")
    found: dict[str, Media] = {}
    for n, item in enumerate(raw):
        where = f"{w}[{n}]."
        d = _obj(item, where.rstrip("."))
        stream = _str(d, "StreamId", where, required=False)
        if stream:
            check_id(f"{where}StreamId", stream)
        kind = _int(d, "StreamType", where, default=0, lo=0, hi=3)
        if stream in found:
            raise _bad(f"{where}StreamId {stream!r} is configured twice")
        found[stream] = {1: Media.AUDIO, 2: Media.VIDEO}.get(kind, media)
    return found if media in (Media.AUDIO_VIDEO, Media.SEPARATE) else {}


def parse_rejoin(inp: dict[str, Any]) -> str | None:
    """Single streams: FillBlank (one file, the absence kept with silent sound) or
    ResumeWithoutInterruption (one file, the absence left out); FillBlank wins if both."""
    w = "RecordInputParams."
    if _bool(inp, "FillBlank", w):
        return "fill"
    return "close" if _bool(inp, "ResumeWithoutInterruption", w) else None


def parse_sound_wave(inp: dict[str, Any], media: Media) -> SoundWaveKey | None:
    """``RecordSoundWave`` and ``SoundWaveType`` from ``MixConfig`` (ZEGO's place for them),
    else from ``RecordInputParams`` (RecordMode 1 has no MixConfig)."""
    mix = inp.get("MixConfig")
    where, d = "RecordInputParams.", inp
    if isinstance(mix, dict) and "RecordSoundWave" in mix:
        where, d = "RecordInputParams.MixConfig.", mix
    wanted = d.get("RecordSoundWave", False)
    if not isinstance(wanted, bool):
        raise _bad(f"{where}RecordSoundWave must be true or false, not {wanted!r}")
    kind = _int(d, "SoundWaveType", where, default=0, lo=0, hi=1)
    if not wanted:
        return None
    if media is Media.VIDEO:
        raise _bad(f"{where}RecordSoundWave measures sound; StreamType 2 records video only")
    return SOUND_WAVE_KEYS[kind]


def parse_start(body: dict[str, Any]) -> tuple[RecordingSpec, StorageTarget]:
    room_id = check_id("RoomId", _str(body, "RoomId", ""))
    inp = _obj(body.get("RecordInputParams"), "RecordInputParams")
    w = "RecordInputParams."
    if inp.get("HasWhiteboard") or inp.get("Whiteboard"):
        raise _bad(
            "whiteboard recording needs ZEGO's whiteboard service, which cloudrec "
            "does not have: leave HasWhiteboard false and Whiteboard out"
        )
    mode = _int(inp, "RecordMode", w, lo=1, hi=2)
    stream_type = _int(inp, "StreamType", w, default=3, lo=1, hi=4)
    media = STREAM_TYPES[stream_type]
    streams = inp.get("RecordStreamList") or []
    if not isinstance(streams, list):
        raise _bad(f"{w}RecordStreamList must be an array")
    stream_ids = tuple(
        check_id(
            f"{w}RecordStreamList.StreamId", _str(_obj(s, f"{w}RecordStreamList[]"), "StreamId", w)
        )
        for s in streams
    )
    client = _str(inp, "ClientTaskId", w, required=False)
    if len(client) > 64:
        raise _bad(f"{w}ClientTaskId is longer than 64 characters")
    idle = _int(inp, "MaxIdleTime", w, default=30, lo=5, hi=86400)
    longest = _int(inp, "MaxRecordTime", w, default=86400, lo=300, hi=86400)
    out = _obj(body.get("RecordOutputParams") or {}, "RecordOutputParams")
    ow = "RecordOutputParams."
    fmt_name = _str(out, "OutputFileFormat", ow, required=False) or "mp4"
    if fmt_name not in FORMATS:
        raise _bad(
            f"{ow}OutputFileFormat {fmt_name!r} is not one of mp4, flv, hls, jpg, aac, mp3, ogg"
        )
    fmt = FORMATS[fmt_name]
    if fmt.audio_only and media is Media.VIDEO:
        raise _bad(
            f"{ow}OutputFileFormat {fmt_name} holds audio only; StreamType 2 records video only"
        )
    interval = 10
    if fmt is FileFormat.JPG:
        if not media.has_video:
            raise _bad(
                f"{ow}OutputFileFormat jpg takes screenshots of the picture; StreamType 1 "
                "records audio only (use StreamType 2, 3 or 4)"
            )
        interval = _int(out, "SnapshotInterval", ow, default=10, lo=5, hi=3600)
    sound_wave = parse_sound_wave(inp, media)
    if sound_wave is not None and fmt is FileFormat.JPG:
        raise _bad("RecordSoundWave measures the sound of a recording; jpg takes screenshots")
    folder = _str(out, "OutputFolder", ow, required=False).strip("/")
    prefix = tuple(p for p in folder.split("/") if p)
    for part in prefix:  # the folder stays inside the task's own directory (issue 11)
        if (problem := part_problem(part)) is not None:
            raise _bad(f"{ow}OutputFolder {folder!r}: the part {part!r} {problem}")
    segment = _int(out, "FragmentSeconds", ow, default=15, lo=2, hi=60)
    realtime = _bool(out, "RealtimeUploadFragment", ow) and fmt is FileFormat.HLS
    _bool(out, "ShortFragmentPath", ow)  # playlists always name segments by file name
    callback = _str(out, "CallbackUrl", ow, required=False) or None
    if callback is not None and not callback.startswith(("http://", "https://")):
        raise _bad(f"{ow}CallbackUrl {callback!r} is not an http:// or https:// URL")
    storage = parse_storage(body.get("StorageParams"))
    mix = None
    if mode == 2:
        # An audio-only file needs no picture: the mix composes none.
        mixed = Media.AUDIO if fmt.audio_only else media
        mix = parse_mix(inp.get("MixConfig"), mixed, room_id, parse_fill(inp)).to_json()
    return RecordingSpec(
        room_id=room_id,
        mode=RecordMode.MIXED if mode == 2 else RecordMode.SINGLE,
        media=media,
        formats=(fmt,),
        stream_ids=stream_ids,
        hls_segment_s=segment,
        snapshot_interval_s=interval,
        idle_timeout_s=idle,
        max_duration_s=longest,
        output_prefix=prefix,
        callback_url=callback,
        dialect="zego",
        mix=mix,
        realtime_segments=realtime,
        stream_media=parse_stream_configs(inp["MixConfig"], media) if mode == 2 else {},
        rejoin=parse_rejoin(inp) if mode == 1 else None,
        sound_wave=sound_wave,
        extra={
            "RecordMode": mode,
            "StreamType": stream_type,
            **({"ClientTaskId": client} if client else {}),
        },
    ), storage
