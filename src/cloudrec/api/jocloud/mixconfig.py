"""JoCloud ``mixconfig`` → :class:`cloudrec.core.mixing.MixSpec`, every range of the document
checked with a message naming the parameter (code 2101; ``videoencode`` other than H.264 is
4004, unsupported)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from cloudrec.api.jocloud.fields import bad, get_int, get_str
from cloudrec.core.errors import CloudrecError
from cloudrec.core.mixing import (
    MAX_LAYERS,
    MAX_SIDE,
    Box,
    ImageMark,
    MixInput,
    MixSpec,
    TextMark,
    round4,
    round_gop,
)
from cloudrec.core.rooms import check_id
from cloudrec.core.tasks import Media

STREAM_TYPES = {0: Media.AUDIO_VIDEO, 1: Media.VIDEO, 2: Media.AUDIO}
TEMPLATES = range(1, 6)
TIMESTAMP_FORMATS = ("%Y/%m/%d", "%Y-%m-%d", "%H:%M:%S", "%Y/%m/%d %H:%M:%S", "%Y-%m-%d %H:%M:%S")
FONTS = ("NotoSansCJK",)
MAX_URL_BYTES = 256
MAX_SEI_BYTES = 2048
_COLOR = re.compile(r"^(?:[0-9A-F]{6}|[0-9a-f]{6})$")


def _number(
    d: dict[str, Any], name: str, where: str, lo: float, hi: float, default: float
) -> float:
    value = d.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(f"{where}{name} must be a number, not {value!r}")
    if not lo <= value <= hi:
        raise bad(f"{where}{name} must be in [{lo}, {hi}], not {value}")
    return float(value)


def _ranged(
    d: dict[str, Any],
    name: str,
    where: str,
    lo: int,
    hi: int,
    *,
    required: bool = True,
    default: int | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> int | None:
    value = get_int(d, name, where, required=required, default=default)
    if value is None:
        return None
    if value < lo or (lo_open and value == lo) or value > hi or (hi_open and value == hi):
        shown = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise bad(f"{where}{name} must be in {shown}, not {value}")
    return value


def _color(d: dict[str, Any], name: str, where: str, default: str | None) -> str | None:
    value = d.get(name, default)
    if value is None:
        return None
    if not isinstance(value, str) or not _COLOR.match(value):
        raise bad(f"{where}{name} must be RRGGBB hex, all upper or all lower case, not {value!r}")
    return value.upper()


def _url(d: dict[str, Any], name: str, where: str) -> str:
    value = str(get_str(d, name, where, max_len=4096))
    if len(value.encode()) > MAX_URL_BYTES:
        raise bad(f"{where}{name} is longer than {MAX_URL_BYTES} bytes")
    if not value.startswith(("http://", "https://")):
        raise bad(f"{where}{name} {value!r} is not an http:// or https:// URL")
    return value


def _obj(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise bad(f"{where.rstrip('.')} must be a JSON object")
    return raw


def _input(raw: Any, i: int, room_id: str) -> MixInput:
    where = f"mixconfig.input[{i}]."
    d = _obj(raw, where)
    uid = check_id(f"{where}uid", str(get_str(d, "uid", where, max_len=128)))
    room = check_id(f"{where}roomid", str(d.get("roomid") or room_id))
    stream_type = get_int(
        d, "streamtype", where, required=False, default=0, allowed=set(STREAM_TYPES)
    )
    media = STREAM_TYPES[stream_type or 0]
    if media is Media.AUDIO:
        return MixInput(user_id=uid, room_id=room, media=media)
    box = Box(
        x=_ranged(d, "layoutX", where, 0, MAX_SIDE) or 0,
        y=_ranged(d, "layoutY", where, 0, MAX_SIDE) or 0,
        w=_ranged(d, "layoutW", where, 0, MAX_SIDE, lo_open=True) or 0,
        h=_ranged(d, "layoutH", where, 0, MAX_SIDE, lo_open=True) or 0,
    )
    source = None
    if any(k in d for k in ("cropX", "cropY", "cropW", "cropH")):
        source = Box(
            x=_ranged(d, "cropX", where, 0, MAX_SIDE) or 0,
            y=_ranged(d, "cropY", where, 0, MAX_SIDE) or 0,
            w=_ranged(d, "cropW", where, 0, MAX_SIDE, lo_open=True) or 0,
            h=_ranged(d, "cropH", where, 0, MAX_SIDE, lo_open=True) or 0,
        )
    return MixInput(
        user_id=uid,
        room_id=room,
        media=media,
        z=_ranged(d, "zOrder", where, 0, MAX_LAYERS, required=False, default=0) or 0,
        box=box,
        crop="fill"
        if get_int(d, "crop", where, required=False, default=0, allowed={0, 1}) == 1
        else "fit",
        source=source,
        alpha=_number(d, "alpha", where, 0.0, 1.0, 1.0),
    )


def _text(raw: Any, where: str, width: int, height: int, *, content: str | None) -> TextMark:
    d = _obj(raw, where)
    x = _ranged(d, "x", where, 0, min(MAX_SIDE, width), hi_open=True) or 0
    y = _ranged(d, "y", where, 0, min(MAX_SIDE, height), hi_open=True) or 0
    if content is None:
        fmt = d.get("format")
        if fmt not in TIMESTAMP_FORMATS:
            raise bad(f"{where}format must be one of {', '.join(TIMESTAMP_FORMATS)}, not {fmt!r}")
        content = str(fmt)
    font = d.get("font", FONTS[0])
    if font not in FONTS:
        raise bad(f"{where}font must be {FONTS[0]!r}, not {font!r}")
    return TextMark(
        x=x,
        y=y,
        content=content,
        size=_ranged(d, "size", where, 0, 100, lo_open=True) or 0,
        color=_color(d, "color", where, "FFFFFF") or "FFFFFF",
        background=_color(d, "backgroundColor", where, "000000"),
        alpha=_number(d, "alpha", where, 0.0, 1.0, 1.0),
    )


def _image(raw: Any, where: str, width: int, height: int) -> ImageMark:
    d = _obj(raw, where)
    return ImageMark(
        x=_ranged(d, "x", where, 0, min(MAX_SIDE, width), hi_open=True) or 0,
        y=_ranged(d, "y", where, 0, min(MAX_SIDE, height), hi_open=True) or 0,
        w=_ranged(d, "width", where, 0, min(MAX_SIDE, width), lo_open=True) or 0,
        h=_ranged(d, "height", where, 0, min(MAX_SIDE, height), lo_open=True) or 0,
        url=_url(d, "url", where),
        scale=get_int(d, "scale", where, allowed={0, 1}) or 0,
        alpha=_number(d, "alpha", where, 0.0, 1.0, 1.0),
    )


def parse_mixconfig(raw: Any, room_id: str) -> MixSpec:
    d = _obj(raw, "mixconfig.")
    # The document's table spells the input list "intput"; its samples say "input".
    inputs_raw = d.get("input", d.get("intput"))
    template = get_int(d, "templateid", "mixconfig.", required=False, allowed=TEMPLATES)
    if inputs_raw is None and template is None:
        raise bad("mixconfig needs templateid (a layout template) or input (a custom layout)")
    if inputs_raw is not None and not isinstance(inputs_raw, list):
        raise bad("mixconfig.input must be an array")
    o = _obj(d.get("output"), "mixconfig.output.")
    w = "mixconfig.output."
    stream_type = get_int(o, "streamtype", w, allowed=set(STREAM_TYPES))
    media = STREAM_TYPES[stream_type or 0]
    width = height = 16
    fps, gop, bitrate = 15, 30, 800
    if media.has_video:
        width = round4(_ranged(o, "videowidth", w, 16, MAX_SIDE) or 16)
        height = round4(_ranged(o, "videoheight", w, 16, MAX_SIDE) or 16)
        bitrate = _ranged(o, "videobitrate", w, 0, 10000, lo_open=True) or 0
        asked_fps = get_int(o, "videofps", w, required=False, default=15)
        if asked_fps is None or asked_fps <= 0:
            raise bad(f"{w}videofps must be more than 0, not {asked_fps}")
        fps = min(60, asked_fps)  # the document: above 60 becomes 60
        gop = (
            _ranged(
                o, "videogop", w, 0, 1000, required=False, default=30, lo_open=True, hi_open=True
            )
            or 30
        )
        gop = round_gop(gop, fps)
        encode = get_int(o, "videoencode", w, required=False, default=100)
        if encode != 100:
            raise CloudrecError.invalid_argument(
                f"{w}videoencode {encode} is not supported: only 100 (H.264)", reason="unsupported"
            )
    for name, only in (
        ("audiobitrate", 128),
        ("audiochannel", 2),
        ("audiosample", 48000),
        ("audioformat", 2),
    ):
        value = get_int(o, name, w, required=False, default=only)
        if value != only:
            raise bad(f"{w}{name} must be {only}, not {value}")
    patch = get_int(o, "patch", w, required=False, default=0, allowed={0, 1, 2, 3}) or 0
    patch_url = _url(o, "patchUrl", w) if patch == 3 else None
    timestamp, texts, images = None, [], []
    if o.get("watermark") is not None:
        wm = _obj(o["watermark"], f"{w}watermark.")
        if wm.get("timestamp") is not None:
            timestamp = _text(
                wm["timestamp"], f"{w}watermark.timestamp.", width, height, content=None
            )
        for i, t in enumerate(wm.get("textList") or []):
            where = f"{w}watermark.textList[{i}]."
            texts.append(
                _text(
                    t,
                    where,
                    width,
                    height,
                    content=str(get_str(_obj(t, where), "content", where, max_len=512)),
                )
            )
        for i, im in enumerate(wm.get("imageList") or []):
            images.append(_image(im, f"{w}watermark.imageList[{i}].", width, height))
    background_color, background_image = "000000", None
    if o.get("background") is not None:
        bg = _obj(o["background"], f"{w}background.")
        background_color = _color(bg, "color", f"{w}background.", "000000") or "000000"
        if bg.get("image") is not None:
            where = f"{w}background.image."
            im = _obj(bg["image"], where)
            background_image = ImageMark(
                0,
                0,
                width,
                height,
                _url(im, "url", where),
                get_int(im, "scale", where, allowed={0, 1}) or 0,
            )
    sei = None
    if o.get("base64seidata") is not None:
        try:
            sei = base64.b64decode(str(o["base64seidata"]), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise bad(f"{w}base64seidata is not base64") from exc
        if len(sei) > MAX_SEI_BYTES:
            raise bad(
                f"{w}base64seidata decodes to {len(sei)} bytes; at most {MAX_SEI_BYTES} are allowed"
            )
    inputs = tuple(_input(raw, i, room_id) for i, raw in enumerate(inputs_raw or []))
    return MixSpec(
        width=width,
        height=height,
        fps=fps,
        gop=gop,
        bitrate_kbps=bitrate,
        media=media,
        template_id=template,
        inputs=inputs,
        patch=patch,
        patch_url=patch_url,
        timestamp=timestamp,
        texts=tuple(texts),
        images=tuple(images),
        background_color=background_color,
        background_image=background_image,
        sei=sei,
    )
