"""Watermarks painted over the composed frame: a timestamp, text, images (Pillow).

Overlays are RGBA numpy arrays ``(height, width, 4)`` uint8 with straight (not premultiplied)
alpha; ``paint`` blends one onto an RGB24 frame in place. Text uses Noto Sans CJK, the only font
JoCloud accepts (``font: "NotoSansCJK"``), so Chinese, Japanese and Korean render; on Debian it
comes from the package ``fonts-noto-cjk``.
"""

from __future__ import annotations

import functools
import io
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont, UnidentifiedImageError

from cloudrec.media.compositor.frame import Image

Color = tuple[int, int, int]

FONT_CANDIDATES = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),  # Debian fonts-noto-cjk
    Path("/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc"),  # Arch, Fedora
    Path("/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc"),
    Path("/System/Library/Fonts/NotoSansCJK-Regular.ttc"),
)

TIMESTAMP_FORMATS = frozenset(
    {
        "%Y/%m/%d",
        "%Y-%m-%d",
        "%H:%M:%S",
        "%Y/%m/%d %H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    }
)
"""The strftime formats of JoCloud's timestamp watermark, verbatim, and ZEGO's."""

_COLOR_RE = re.compile(r"[0-9A-F]{6}|[0-9a-f]{6}")


class FontNotFoundError(RuntimeError):
    """Noto Sans CJK is not installed where we look for it."""


def parse_color(text: str) -> Color:
    """``"RRGGBB"`` (hex digits, all upper or all lower case, as JoCloud requires) to RGB."""
    if not _COLOR_RE.fullmatch(text):
        raise ValueError(
            f"colour must be 6 hex digits RRGGBB, all upper or all lower case, got {text!r}"
        )
    return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")


def find_cjk_font() -> Path:
    """The path of Noto Sans CJK Regular, or ``FontNotFoundError`` naming where we looked."""
    for path in FONT_CANDIDATES:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in FONT_CANDIDATES)
    raise FontNotFoundError(
        f"Noto Sans CJK not found (looked at {looked}); install it: apt-get install fonts-noto-cjk"
    )


@functools.lru_cache(maxsize=32)
def load_font(size: int) -> ImageFont.FreeTypeFont:
    """Noto Sans CJK Regular (the Simplified Chinese face of the collection) at ``size`` px."""
    if not 0 < size <= 100:
        raise ValueError(f"font size must be in (0, 100], got {size}")
    # Index 2 of NotoSansCJK-Regular.ttc is "Noto Sans CJK SC"; JoCloud is a Chinese service.
    return ImageFont.truetype(str(find_cjk_font()), size, index=2)


def text_padding(size: int) -> int:
    """Pixels of background around rendered text on every side."""
    return max(1, size // 8)


def render_text(
    text: str, size: int, color: Color, background: Color | None, alpha: float
) -> Image:
    """``text`` rendered as an RGBA overlay.

    The box is the text's ink extent measured from the pen origin (Pillow ``textbbox`` at
    ``(0, 0)``, anchor ``la``: left, ascender), plus ``text_padding(size)`` on every side; the
    text is drawn at ``(pad, pad)``. With a ``background`` the whole box is that colour with
    opacity ``alpha``; without, only the glyphs show, their edges antialiased.
    """
    _check_alpha(alpha)
    font = load_font(size)
    pad = text_padding(size)
    _, _, right, bottom = font.getbbox(text)
    w, h = max(1, math.ceil(right)) + 2 * pad, max(1, math.ceil(bottom)) + 2 * pad
    mask_img = PILImage.new("L", (w, h), 0)
    ImageDraw.Draw(mask_img).text((pad, pad), text, font=font, fill=255)
    coverage = np.asarray(mask_img, dtype=np.uint16)
    out = np.empty((h, w, 4), dtype=np.uint8)
    if background is None:
        out[..., :3] = color
        out[..., 3] = (coverage * round(alpha * 255) + 127) // 255
        return out
    fg, bg = np.array(color, np.uint16), np.array(background, np.uint16)
    c = coverage[..., None]
    out[..., :3] = (fg * c + bg * (255 - c) + 127) // 255
    out[..., 3] = round(alpha * 255)
    return out


def paint(canvas: Image, overlay: Image, x: int, y: int) -> None:
    """Blend RGBA ``overlay`` onto RGB ``canvas`` in place, its top-left corner at ``(x, y)``;
    what falls outside the canvas is dropped."""
    ch, cw = canvas.shape[:2]
    oh, ow = overlay.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(cw, x + ow), min(ch, y + oh)
    if x1 <= x0 or y1 <= y0:
        return
    src = overlay[y0 - y : y1 - y, x0 - x : x1 - x]
    dst = canvas[y0:y1, x0:x1]
    a = src[..., 3:4].astype(np.uint16)
    mixed = src[..., :3].astype(np.uint16) * a + dst.astype(np.uint16) * (255 - a) + 127
    dst[:] = mixed // 255


def decode_image(data: bytes) -> Image:
    """An image file's bytes (PNG, JPEG, ...) as RGBA; ``ValueError`` if it cannot be read."""
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGBA")).copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot decode image: {exc}") from exc


def scale_image(image: Image, width: int, height: int, stretch: bool) -> Image:
    """RGB or RGBA ``image`` as an RGBA ``width`` x ``height`` picture: stretched, or (JoCloud
    ``scale`` 0) scaled to cover keeping its aspect ratio and cropped centred."""
    img = PILImage.fromarray(image).convert("RGBA")
    if not stretch:
        sw, sh = img.size
        if sw * height > width * sh:
            cw = max(1, round(sh * width / height))
            box = ((sw - cw) // 2, 0, (sw - cw) // 2 + cw, sh)
        else:
            ch = max(1, round(sw * height / width))
            box = (0, (sh - ch) // 2, sw, (sh - ch) // 2 + ch)
        img = img.crop(box)
    return np.asarray(img.resize((width, height), PILImage.Resampling.BILINEAR)).copy()


@dataclass(frozen=True)
class TextWatermark:
    """Fixed text at ``(x, y)`` (its box's top-left corner), rendered once."""

    x: int
    y: int
    content: str
    size: int
    color: Color = (255, 255, 255)
    background: Color | None = (0, 0, 0)
    alpha: float = 1.0

    @functools.cached_property
    def overlay(self) -> Image:
        return render_text(self.content, self.size, self.color, self.background, self.alpha)

    def paint_onto(self, frame: Image) -> None:
        paint(frame, self.overlay, self.x, self.y)


@dataclass(frozen=True)
class ImageWatermark:
    """A picture (RGB or RGBA) scaled once to ``width`` x ``height`` at ``(x, y)``;
    ``stretch`` False is JoCloud ``scale`` 0 (cover and crop), True is ``scale`` 1."""

    x: int
    y: int
    width: int
    height: int
    image: Image
    stretch: bool = False
    alpha: float = 1.0

    @functools.cached_property
    def overlay(self) -> Image:
        _check_alpha(self.alpha)
        rgba = scale_image(self.image, self.width, self.height, self.stretch)
        rgba[..., 3] = (rgba[..., 3].astype(np.uint16) * round(self.alpha * 255) + 127) // 255
        return rgba

    def paint_onto(self, frame: Image) -> None:
        paint(frame, self.overlay, self.x, self.y)


class TimestampWatermark:
    """The wall-clock time of each frame, formatted by one of ``TIMESTAMP_FORMATS``.

    The caller passes the frame's time as a ``datetime`` in the zone to show. The rendering is
    cached by formatted text, so it is redone only when the text changes (once a second at
    most).
    """

    def __init__(
        self,
        x: int,
        y: int,
        fmt: str,
        size: int,
        color: Color = (255, 255, 255),
        background: Color | None = (0, 0, 0),
        alpha: float = 1.0,
    ) -> None:
        if fmt not in TIMESTAMP_FORMATS:
            raise ValueError(f"timestamp format must be one of {sorted(TIMESTAMP_FORMATS)}")
        _check_alpha(alpha)
        load_font(size)  # fail now, not on the first frame
        self.x, self.y, self.fmt, self.size = x, y, fmt, size
        self.color, self.background, self.alpha = color, background, alpha
        self._text = ""
        self._overlay: Image | None = None

    def overlay_at(self, when: datetime) -> Image:
        text = when.strftime(self.fmt)
        if self._overlay is None or text != self._text:
            self._overlay = render_text(text, self.size, self.color, self.background, self.alpha)
            self._text = text
        return self._overlay

    def paint_onto(self, frame: Image, when: datetime) -> None:
        paint(frame, self.overlay_at(when), self.x, self.y)


@dataclass
class Watermarks:
    """All of an output's watermarks; ``paint_onto`` paints images, then texts, then the
    timestamp, so the timestamp stays readable."""

    timestamp: TimestampWatermark | None = None
    texts: tuple[TextWatermark, ...] = ()
    images: tuple[ImageWatermark, ...] = ()

    def paint_onto(self, frame: Image, when: datetime) -> None:
        for image in self.images:
            image.paint_onto(frame)
        for text in self.texts:
            text.paint_onto(frame)
        if self.timestamp is not None:
            self.timestamp.paint_onto(frame, when)
