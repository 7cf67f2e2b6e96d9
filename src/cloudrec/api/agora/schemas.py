"""Agora request bodies, validated into cloudrec's internal spec.

Parameter names are Agora's, verbatim and case-sensitive (start.mdx, acquire.mdx, stop.mdx).
Every refusal names the parameter and says why (code 2).  A channel (``cname``) is a cloudrec
room; a UID is the user id a stream is published with (``?uid=``), so ``subscribe*Uids`` name
the users whose streams are recorded, as JoCloud's ``uid`` does.  The recorder's own ``uid``
(acquire's) joins nothing: it names the task, with ``cname`` (at most one task per pair).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloudrec.api.agora.fields import bad, flag, number, obj, strings, text, uid
from cloudrec.api.agora.mix import parse_mix
from cloudrec.api.agora.storage import parse_storage
from cloudrec.core.errors import CloudrecError
from cloudrec.core.rooms import check_id
from cloudrec.core.tasks import FileFormat, Media, RecordingSpec, RecordMode, StorageTarget

MODES = ("individual", "mix")
WEB_REFUSAL = (
    "mode web (web page recording) is not supported: cloudrec records the streams published "
    "into a room; it runs no browser to load and render a web page"
)
ALL_STREAMS = "#allstream#"
MAX_SUBSCRIBED = 32
STREAM_TYPES = {0: Media.AUDIO, 1: Media.VIDEO, 2: Media.AUDIO_VIDEO}
STREAM_MODES = ("default", "standard", "original")
DEFAULT_IDLE_S = 30
DEFAULT_EXPIRED_HOUR = 72  # resourceExpiredHour (acquire.mdx)
SLICE_S = 15  # HLS slices of about 15 s (manage-files.md, "Slicing")
RC = "clientRequest.recordingConfig."


@dataclass(frozen=True)
class Acquired:
    """An acquire request: the task's name (cname, uid) and how long its sid may be used."""

    cname: str
    uid: str
    expired_hour: int


def check_mode(mode: str) -> str:
    if mode == "web":
        raise bad(WEB_REFUSAL)
    if mode not in MODES:
        raise bad(f"mode must be individual, mix or web, not {mode!r}")
    return mode


def parse_cname(body: dict[str, Any]) -> str:
    """``cname`` as a room id; unsupported characters are code 401 (invalid_channel_name)."""
    cname = str(text(body, "cname", max_len=1024))
    try:
        return check_id("cname", cname)
    except CloudrecError as exc:
        raise bad(exc.message, reason="invalid_channel_name") from exc


def parse_names(body: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(cname, uid, clientRequest) of an acquire, start or stop body."""
    cname = parse_cname(body)
    recorder = uid(body.get("uid"), "uid")
    return cname, recorder, obj(body, "clientRequest", required=True)


def parse_acquire(body: dict[str, Any]) -> Acquired:
    cname, recorder, client = parse_names(body)
    scene = number(client, "scene", "clientRequest.", default=0, allowed={0, 1})
    if scene == 1:
        raise bad(f"clientRequest.scene 1: {WEB_REFUSAL}")
    hours = number(
        client,
        "resourceExpiredHour",
        "clientRequest.",
        default=DEFAULT_EXPIRED_HOUR,
        allowed=range(1, 721),
    )
    region = client.get("region")
    if region is not None and region not in ("CN", "AP", "EU", "NA"):
        raise bad(f"clientRequest.region must be CN, AP, EU or NA, not {region!r}")
    strings(client, "excludeResourceIds", "clientRequest.", max_items=64)
    return Acquired(cname, recorder, hours)


def _subscribed(rc: dict[str, Any], media: Media) -> tuple[Media, tuple[str, ...]]:
    """The media and users to record from the subscription lists (empty users: all)."""
    for kind in ("Audio", "Video"):
        if rc.get(f"unsubscribe{kind}Uids") is not None:
            if rc.get(f"subscribe{kind}Uids") is not None:
                raise bad(
                    f"{RC}subscribe{kind}Uids and unsubscribe{kind}Uids cannot be set together"
                )
            raise bad(
                f"{RC}unsubscribe{kind}Uids is not built in cloudrec yet: name the users to "
                f"record in subscribe{kind}Uids, or leave both out to record every user"
            )
    lists: dict[str, tuple[str, ...] | None] = {}
    for kind, applies in (("Audio", media.has_audio), ("Video", media.has_video)):
        name = f"subscribe{kind}Uids"
        raw = strings(rc, name, RC, MAX_SUBSCRIBED)
        if raw is None or not applies:
            lists[kind] = None
            continue
        if raw == [ALL_STREAMS]:
            lists[kind] = ()
            continue
        lists[kind] = tuple(dict.fromkeys(uid(u, f"{RC}{name}[{i}]") for i, u in enumerate(raw)))
    audio, video = lists["Audio"], lists["Video"]
    if audio is None and video is None:
        return media, ()
    if audio is None or video is None:
        # "If a subscription list is set for only one media type, the service will not
        # subscribe to the other type."
        users = video if audio is None else audio
        assert users is not None
        return (Media.VIDEO if audio is None else Media.AUDIO), users
    if set(audio) != set(video):
        raise bad(
            f"{RC}subscribeAudioUids and subscribeVideoUids name different users: cloudrec "
            "records the same media of every subscribed user, so the lists must be equal "
            "(or set only one of them)"
        )
    return media, audio


def _individual_media(rc: dict[str, Any], media: Media) -> Media:
    mode = rc.get("streamMode", "default")
    if mode not in STREAM_MODES:
        raise bad(f"{RC}streamMode must be default, standard or original, not {mode!r}")
    # default: separate audio and video files; standard: one file of both (cloudrec writes
    # no separate files beside it); original: audio untouched (cloudrec never transcodes).
    if media is Media.AUDIO_VIDEO and mode == "default":
        return Media.SEPARATE
    return media


def _formats(client: dict[str, Any]) -> tuple[FileFormat, ...]:
    raw = obj(client, "recordingFileConfig", "clientRequest.")
    where = "clientRequest.recordingFileConfig."
    types = strings(raw, "avFileType", where, max_items=2) or ["hls"]
    if any(t not in ("hls", "mp4") for t in types) or len(set(types)) != len(types):
        raise bad(f'{where}avFileType must be ["hls"] or ["hls","mp4"], not {types}')
    if "hls" not in types:
        raise bad(f'{where}avFileType ["mp4"] alone is refused: set ["hls","mp4"]')
    return (FileFormat.HLS, FileFormat.MP4) if "mp4" in types else (FileFormat.HLS,)


def _snapshots(client: dict[str, Any], media: Media) -> int | None:
    """The interval (s) of a screenshots-only task, None when no screenshots are asked."""
    raw = client.get("snapshotConfig")
    if raw is None:
        return None
    where = "clientRequest.snapshotConfig."
    shots = obj(client, "snapshotConfig", "clientRequest.")
    interval = number(shots, "captureInterval", where, default=10, allowed=range(5, 3601))
    if strings(shots, "fileType", where, max_items=1) != ["jpg"]:
        raise bad(f'{where}fileType must be ["jpg"]')
    if not media.has_video:
        raise bad(f"{where[:-1]} needs video: {RC}streamTypes must be 1 or 2")
    if client.get("recordingFileConfig") is not None:
        raise bad(
            f"{where[:-1]} with recordingFileConfig (recording and screenshots at once) is not "
            "built in cloudrec yet: start two tasks, one of each"
        )
    return interval


def _recording_config(rc: dict[str, Any], mode: str) -> tuple[Media, float]:
    number(rc, "channelType", RC, default=0, allowed={0, 1})
    if number(rc, "decryptionMode", RC, default=0, allowed=range(0, 9)) != 0:
        raise bad(
            f"{RC}decryptionMode: cloudrec's streams arrive over RTMP, not encrypted by an "
            "Agora SDK; only 0 (no encryption) applies"
        )
    if number(rc, "videoStreamType", RC, default=0, allowed={0, 1}) == 1:
        raise bad(f"{RC}videoStreamType 1: an RTMP publisher sends one video stream, no low one")
    if mode == "individual":
        number(rc, "subscribeUidGroup", RC, default=0, allowed=range(0, 6))
    idle = number(rc, "maxIdleTime", RC, default=DEFAULT_IDLE_S, allowed=range(5, 2592001))
    media = STREAM_TYPES[number(rc, "streamTypes", RC, default=2, allowed=set(STREAM_TYPES))]
    return media, float(idle)


def parse_start(mode: str, body: dict[str, Any]) -> tuple[str, str, RecordingSpec, StorageTarget]:
    """``start`` → (cname, uid, spec, storage).  ``token`` is accepted and unused: cloudrec's
    recorders pull the room's streams on the server itself."""
    cname, recorder, client = parse_names(body)
    text(client, "token", "clientRequest.", required=False, max_len=2048)
    if client.get("extensionServiceConfig") is not None:
        raise bad(f"clientRequest.extensionServiceConfig: {WEB_REFUSAL}")
    storage, prefix = parse_storage(client)
    rc = obj(client, "recordingConfig", "clientRequest.")
    asked, idle = _recording_config(rc, mode)
    media, users = _subscribed(rc, asked)
    extra: dict[str, Any] = {
        "cname": cname,
        "uid": recorder,
        "mode": mode,
    }

    def spec(media: Media, formats: tuple[FileFormat, ...], **kw: Any) -> RecordingSpec:
        return RecordingSpec(
            room_id=cname,
            media=media,
            formats=formats,
            user_ids=users,
            hls_segment_s=SLICE_S,
            idle_timeout_s=idle,
            output_prefix=prefix,
            dialect="agora",
            extra=extra,
            **kw,
        )

    if mode == "mix":
        if client.get("snapshotConfig") is not None:
            raise bad("clientRequest.snapshotConfig is only for individual recording mode")
        mix = parse_mix(rc, cname, media)
        formats = _formats(client)
        extra["avFileType"] = [f.value for f in formats]
        return (
            cname,
            recorder,
            spec(media, formats, mode=RecordMode.MIXED, mix=mix.to_json()),
            storage,
        )
    for name in ("transcodingConfig", "audioProfile"):
        if rc.get(name) is not None:
            raise bad(f"{RC}{name} is only for composite recording mode (mix)")
    interval = _snapshots(client, media)
    if interval is not None:
        extra["snapshot"] = True
        shots = spec(Media.VIDEO, (FileFormat.JPG,), snapshot_interval_s=interval)
        return cname, recorder, shots, storage
    media = _individual_media(rc, media)
    formats = _formats(client)
    extra["avFileType"] = [f.value for f in formats]
    return cname, recorder, spec(media, formats), storage


def parse_stop(body: dict[str, Any]) -> tuple[str, str, bool]:
    """``stop`` → (cname, uid, async_stop)."""
    cname, recorder, client = parse_names(body)
    return cname, recorder, flag(client, "async_stop", "clientRequest.")


def parse_update(client: dict[str, Any], media: Media, current: tuple[str, ...]) -> tuple[str, ...]:
    """``update``'s ``clientRequest`` → the users to record from now on (empty: all).  A list
    left out stays as it was; as at start, the audio and video lists that apply must name the
    same users."""
    for name, why in (
        ("webRecordingConfig", WEB_REFUSAL),
        ("rtmpPublishConfig", "pushing a recording to a CDN is not built in cloudrec yet"),
        ("storageConfig", "changing the storage of a running task is not built in cloudrec yet"),
    ):
        if client.get(name) is not None:
            raise bad(f"clientRequest.{name}: {why}")
    where = "clientRequest.streamSubscribe."
    subscribe = obj(client, "streamSubscribe", "clientRequest.", required=True)
    given: dict[str, tuple[str, ...]] = {}
    for kind, applies in (("Audio", media.has_audio), ("Video", media.has_video)):
        box_where = f"{where}{kind.lower()}UidList."
        box = obj(subscribe, f"{kind.lower()}UidList", where)
        if box.get(f"unsubscribe{kind}Uids") is not None:
            raise bad(
                f"{box_where}unsubscribe{kind}Uids is not built in cloudrec yet: name the users "
                f"to record in subscribe{kind}Uids"
            )
        raw = strings(box, f"subscribe{kind}Uids", box_where, MAX_SUBSCRIBED)
        if raw is None or not applies:
            continue
        name = f"{box_where}subscribe{kind}Uids"
        given[kind] = (
            ()
            if raw == [ALL_STREAMS]
            else tuple(dict.fromkeys(uid(u, f"{name}[{i}]") for i, u in enumerate(raw)))
        )
    if not given:
        raise bad(f"{where[:-1]} names no subscription list of a media this task records")
    lists = [
        given.get(k, current)
        for k, on in (("Audio", media.has_audio), ("Video", media.has_video))
        if on
    ]
    if any(set(users) != set(lists[0]) for users in lists):
        raise bad(
            f"{where[:-1]}: the audio and video lists would name different users; cloudrec "
            "records the same media of every subscribed user, so update both to the same users"
        )
    return lists[0]
