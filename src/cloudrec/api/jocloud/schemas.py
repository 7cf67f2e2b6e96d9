"""JoCloud request bodies, validated into cloudrec's internal spec.

Parameter names are the vendor's, verbatim and case-sensitive.  Every refusal says which
parameter is wrong and why (code 2101 unless the document names another).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from cloudrec.api.jocloud.fields import bad, get_int, get_str, require
from cloudrec.api.jocloud.mixconfig import parse_mixconfig
from cloudrec.core.errors import CloudrecError
from cloudrec.core.rooms import check_id
from cloudrec.core.tasks import FileFormat, Media, RecordingSpec, RecordMode, StorageTarget

VENDORS = {0: "aliyun-oss", 1: "tencent-cos", 2: "qiniu-kodo"}
RECORD_TYPES = {0: Media.AUDIO_VIDEO, 1: Media.VIDEO, 2: Media.AUDIO}
STREAM_MIXED, STREAM_SOURCE = 1, 2
_PREFIX_PART = re.compile(r"^[A-Za-z0-9]+$")
MAX_PREFIX_CHARS = 128
MAX_URL_CHARS = 1024


def parse_storage(raw: Any) -> tuple[StorageTarget, tuple[str, ...]]:
    """``storagecfg`` → a storage target and the file prefix parts."""
    if not isinstance(raw, dict):
        raise bad("storagecfg must be a JSON object")
    where = "storagecfg."
    vender = get_int(raw, "vender", where, allowed=set(VENDORS))
    assert vender is not None
    target = StorageTarget(
        vendor=VENDORS[vender],
        endpoint=str(get_str(raw, "endpoint", where)),
        bucket=str(get_str(raw, "bucket", where)),
        access_key=str(get_str(raw, "accesskey", where)),
        secret_key=str(get_str(raw, "secretkey", where)),
    )
    prefix = raw.get("fileprefix") or []
    if not isinstance(prefix, list) or not all(isinstance(p, str) for p in prefix):
        raise bad("storagecfg.fileprefix must be an array of strings")
    for part in prefix:
        if not _PREFIX_PART.match(part):
            raise bad(
                f"storagecfg.fileprefix part {part!r} may hold only A-Z, a-z and 0-9 (no slashes)"
            )
    joined = "/".join(prefix) + ("/" if prefix else "")
    if len(joined) > MAX_PREFIX_CHARS:
        raise bad(
            f"storagecfg.fileprefix makes a prefix of {len(joined)} characters; "
            f"at most {MAX_PREFIX_CHARS} are allowed"
        )
    return target, tuple(prefix)


def parse_callback_url(raw: Any) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or len(raw) > MAX_URL_CHARS:
        raise bad(f"callbackurl must be a URL of at most {MAX_URL_CHARS} characters")
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad(f"callbackurl {raw!r} is not an http:// or https:// URL")
    return raw


# The formats of cloudrec's ``fileformat`` extension (the ZEGO dialect has more).
JOCLOUD_FORMATS = ("mp4", "flv", "hls", "aac")


def parse_formats(body: dict[str, Any], media: Media) -> tuple[FileFormat, ...]:
    """cloudrec extension ``fileformat``: "mp4" (default), "flv", "hls", "aac", or a list."""
    raw = body.get("fileformat", "mp4")
    names = raw if isinstance(raw, list) else [raw]
    formats = []
    for name in names:
        if name not in JOCLOUD_FORMATS:
            raise bad(f"fileformat {name!r} is not one of mp4, flv, hls, aac")
        formats.append(FileFormat(name))
    if FileFormat.AAC in formats and media is Media.VIDEO:
        raise CloudrecError.invalid_argument(
            "fileformat aac holds audio only and recordtype 1 records video only",
            reason="unsupported",
        )
    return tuple(dict.fromkeys(formats))


def parse_start(body: dict[str, Any], app_id: int) -> tuple[str, RecordingSpec, StorageTarget]:
    """``startrecord`` → (resid, spec, storage)."""
    resid = str(get_str(body, "resid"))
    room_id = check_id("roomid", str(get_str(body, "roomid", max_len=128)))
    record_type = get_int(body, "recordtype", allowed=set(RECORD_TYPES))
    stream_type = get_int(body, "streamtype", allowed={STREAM_MIXED, STREAM_SOURCE})
    storage, prefix = parse_storage(require(body, "storagecfg"))
    callback_url = parse_callback_url(body.get("callbackurl"))
    assert record_type is not None
    media = RECORD_TYPES[record_type]
    segment = get_int(body, "hlssegment", required=False, default=15, allowed=range(1, 61))
    if stream_type == STREAM_MIXED:
        mix = parse_mixconfig(require(body, "mixconfig"), room_id)
        formats = parse_formats(body, mix.media)
        users = tuple(sorted({i.user_id for i in mix.inputs})) if mix.template_id is None else ()
        return (
            resid,
            RecordingSpec(
                room_id=room_id,
                mode=RecordMode.MIXED,
                media=mix.media,
                formats=formats,
                user_ids=users,
                hls_segment_s=segment or 15,
                output_prefix=prefix,
                callback_url=callback_url,
                dialect="jocloud",
                mix=mix.to_json(),
                extra={"recordtype": record_type, "streamtype": stream_type},
            ),
            storage,
        )
    uid = check_id("uid", str(get_str(body, "uid", max_len=128)))
    spec = RecordingSpec(
        room_id=room_id,
        media=media,
        formats=parse_formats(body, media),
        user_ids=(uid,),
        hls_segment_s=segment or 15,
        output_prefix=prefix,
        callback_url=callback_url,
        dialect="jocloud",
        extra={"recordtype": record_type, "streamtype": stream_type, "uid": uid},
    )
    return resid, spec, storage


def parse_stop(body: dict[str, Any]) -> tuple[str, str, str]:
    """``stoprecord`` / ``updatemixrecord`` → (resid, roomid, recordid)."""
    resid = str(get_str(body, "resid"))
    room_id = check_id("roomid", str(get_str(body, "roomid", max_len=128)))
    record_id = str(get_str(body, "recordid", max_len=128))
    return resid, room_id, record_id
