"""``recordingConfig.transcodingConfig`` and ``audioProfile`` (composite recording) →
:class:`cloudrec.core.mixing.MixSpec`.

``mixedVideoLayout`` 0 (floating), 1 (best fit) and 2 (vertical) are drawn by cloudrec's
floating, grid and vertical layouts (docs/layouts.md, "ZEGO layouts"): the same idea, not yet
Agora's own geometry of layout.md; ``maxResolutionUid`` names the user of the vertical
layout's large window (without it the first user to join takes it).  3 (custom) places each
``layoutConfig`` region where it says, relative to the canvas.  Not built yet, and refused with
that reason: ``backgroundConfig`` and ``defaultUserBackgroundImage``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from cloudrec.api.agora.fields import bad, number, obj, text, uid
from cloudrec.core.mixing import MAX_SIDE, Box, ImageMark, MixInput, MixSpec, round4
from cloudrec.core.tasks import Media

TC = "clientRequest.recordingConfig.transcodingConfig."
LAYOUTS = {0: "floating", 1: "grid", 2: "vertical"}
CUSTOM = 3
MAX_REGIONS = 17
MAX_PIXELS = 1920 * 1080
# audioProfile: kb/s (start.mdx: 48 kHz music encoding; 0 and 1 mono, 2 stereo).  cloudrec's
# mixer always encodes 48 kHz stereo: the profile sets the bitrate only.
AUDIO_PROFILES = {0: 48, 1: 128, 2: 192}
_COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")


def _fraction(d: dict[str, Any], name: str, where: str, default: float | None = None) -> float:
    value = d.get(name, default)
    if value is None:
        raise bad(f"missing required parameter {where}{name}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise bad(f"{where}{name} must be a number in [0, 1], not {value!r}")
    return float(value)


def _region(raw: Any, where: str, cname: str, z: int, size: tuple[int, int]) -> MixInput:
    if not isinstance(raw, dict):
        raise bad(f"{where[:-1]} must be a JSON object")
    x = _fraction(raw, "x_axis", where)
    y = _fraction(raw, "y_axis", where)
    w = _fraction(raw, "width", where)
    h = _fraction(raw, "height", where)
    if w == 0 or h == 0 or x + w > 1.000001 or y + h > 1.000001:
        raise bad(f"{where[:-1]} must lie inside the canvas with a width and height above 0")
    user = uid(raw["uid"], f"{where}uid") if raw.get("uid") is not None else ""
    render = number(raw, "render_mode", where, default=0, allowed={0, 1})
    width, height = size
    box = Box(
        x=round(x * width) // 2 * 2,
        y=round(y * height) // 2 * 2,
        w=max(2, round(w * width) // 2 * 2),
        h=max(2, round(h * height) // 2 * 2),
    )
    return MixInput(
        user_id=user,
        room_id=cname,
        z=z,
        box=box,
        crop="fill" if render == 0 else "fit",
        alpha=_fraction(raw, "alpha", where, 1.0),
    )


def _layout(d: dict[str, Any], where: str, cname: str, size: tuple[int, int]) -> dict[str, Any]:
    """The layout fields of ``d`` (a transcodingConfig, or an updateLayout's clientRequest)
    as MixSpec fields; every one left out takes its default (update-layout.mdx: "Each call
    to this endpoint overwrites all previous layout settings")."""
    layout = number(d, "mixedVideoLayout", where, default=0, allowed={0, 1, 2, 3})
    for name in ("backgroundConfig", "defaultUserBackgroundImage"):
        if d.get(name) is not None:
            raise bad(f"{where}{name} is not built in cloudrec yet")
    main = None
    if d.get("maxResolutionUid") is not None:
        if layout != 2:
            raise bad(f"{where}maxResolutionUid is only for mixedVideoLayout 2 (vertical)")
        main = uid(d["maxResolutionUid"], f"{where}maxResolutionUid")
    color = d.get("backgroundColor", "#000000")
    if not isinstance(color, str) or not _COLOR.match(color):
        raise bad(f'{where}backgroundColor must be "#RRGGBB", not {color!r}')
    regions = d.get("layoutConfig")
    inputs: tuple[MixInput, ...] = ()
    if layout == CUSTOM:
        if not isinstance(regions, list) or not 1 <= len(regions) <= MAX_REGIONS:
            raise bad(f"{where}layoutConfig must be an array of 1 to {MAX_REGIONS} regions")
        inputs = tuple(
            _region(r, f"{where}layoutConfig[{i}].", cname, i, size) for i, r in enumerate(regions)
        )
    elif regions is not None:
        raise bad(f"{where}layoutConfig is only for mixedVideoLayout 3 (custom)")
    image = None
    url = text(d, "backgroundImage", where, required=False, max_len=1024)
    if url is not None:
        if not url.startswith(("http://", "https://")):
            raise bad(f"{where}backgroundImage {url!r} is not an http:// or https:// URL")
        image = ImageMark(0, 0, size[0], size[1], url, scale=0)  # cropped to fill (start.mdx)
    return {
        "auto_layout": LAYOUTS.get(layout),
        "main_user_id": main,
        "inputs": inputs,
        "background_color": color[1:].upper(),
        "background_image": image,
    }


def parse_mix(rc: dict[str, Any], cname: str, media: Media) -> MixSpec:
    """The mixed picture and sound of a ``mix`` start."""
    where = "clientRequest.recordingConfig."
    tc = obj(rc, "transcodingConfig", where)
    width = number(tc, "width", TC, default=360, allowed=range(16, MAX_SIDE + 1))
    height = number(tc, "height", TC, default=640, allowed=range(16, MAX_SIDE + 1))
    if width * height > MAX_PIXELS:
        raise bad(f"{TC}width x height is {width} x {height}; at most 1920 x 1080 pixels")
    fps = number(tc, "fps", TC, default=15, allowed=range(1, 31))
    bitrate = number(tc, "bitrate", TC, default=500, allowed=range(1, 10001))
    width, height = round4(width), round4(height)
    kbps = AUDIO_PROFILES[number(rc, "audioProfile", where, default=0, allowed=set(AUDIO_PROFILES))]
    return MixSpec(
        width=width,
        height=height,
        fps=fps,
        gop=fps * 2,
        bitrate_kbps=bitrate,
        media=media,
        hls_segment_s=15,
        audio_bitrate_kbps=kbps,
        **_layout(tc, TC, cname, (width, height)),
    )


def parse_update_layout(client: dict[str, Any], current: MixSpec, cname: str) -> MixSpec:
    """An ``updateLayout``'s ``clientRequest``: the running mix with its layout replaced
    (the canvas, frame rate, bitrate and sound stay as they started)."""
    size = (current.width, current.height)
    return replace(current, **_layout(client, "clientRequest.", cname, size))
