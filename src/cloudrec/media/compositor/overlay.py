"""Watermarks painted over the composed frame: a timestamp, text, images (Pillow).

Overlays are rendered as RGBA numpy arrays ``(height, width, 4)`` uint8 with straight (not
premultiplied) alpha, then prepared once for the yuv420p frames of the mix (``YuvOverlay``:
converted by libswscale, luma and alpha at full resolution, chroma averaged over each 2 x 2
block weighted by alpha); ``paint`` blends a prepared overlay into a frame's planes.

Text uses Noto Sans CJK, the only font JoCloud accepts (``font: "NotoSansCJK"``), so Chinese,
Japanese and Korean render; on Debian it comes from the package ``fonts-noto-cjk``.
"""

from __future__ import annotations

import functools
import io
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont, UnidentifiedImageError

from cloudrec.media.compositor.frame import Image, Plane, even, from_rgb, planes

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


@dataclass(frozen=True)
class YuvOverlay:
    """An RGBA overlay prepared for yuv420p frames with its top-left corner at a pixel ``(x, y)``
    of the frame.

    It is padded with transparent pixels to start and end on even pixels (``origin``, even),
    so it keeps its exact position: luma and alpha are the overlay's own pixels; each chroma
    sample is the alpha-weighted mean of its 2 x 2 block (a transparent pixel adds no colour)
    with the block's mean alpha. Colours and alphas are stored premultiplied for painting.
    """

    origin: tuple[int, int]
    weighted: tuple[npt.NDArray[np.uint16], ...]  # Y, U, V times alpha
    keep: tuple[npt.NDArray[np.uint16], ...]  # 255 - alpha: luma, then chroma

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the padded overlay in luma pixels."""
        return self.weighted[0].shape[1], self.weighted[0].shape[0]


def prepare(overlay: Image, x: int, y: int) -> YuvOverlay:
    """RGBA ``overlay`` prepared to be painted at ``(x, y)`` (any pixel)."""
    ox, oy = even(x), even(y)
    h, w = overlay.shape[:2]
    px, py = x - ox, y - oy
    pw, ph = (w + px + 1) // 2 * 2, (h + py + 1) // 2 * 2
    padded = np.zeros((ph, pw, 4), dtype=np.uint8)
    padded[py : py + h, px : px + w] = overlay
    luma, u, v = (p.astype(np.uint32) for p in planes(from_rgb(padded).reformat(format="yuv444p")))
    alpha = padded[..., 3].astype(np.uint32)
    block = alpha.reshape(ph // 2, 2, pw // 2, 2).sum(axis=(1, 3))  # 0..1020

    def chroma(plane: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint16]:
        summed = (plane * alpha).reshape(ph // 2, 2, pw // 2, 2).sum(axis=(1, 3))
        mean: npt.NDArray[np.uint32] = np.where(
            block > 0, (summed + block // 2) // np.maximum(block, 1), 128
        )
        return np.asarray(mean * ((block + 2) // 4), dtype=np.uint16)

    return YuvOverlay(
        origin=(ox, oy),
        weighted=((luma * alpha).astype(np.uint16), chroma(u), chroma(v)),
        keep=((255 - alpha).astype(np.uint16), (255 - (block + 2) // 4).astype(np.uint16)),
    )


def paint(frame: av.VideoFrame, overlay: YuvOverlay) -> None:
    """Blend a prepared overlay into yuv420p ``frame`` in place; what falls outside the frame
    is dropped."""
    paint_planes(planes(frame), overlay)


def paint_planes(dst: tuple[Plane, Plane, Plane], overlay: YuvOverlay) -> None:
    """``paint`` onto the planes of a frame."""
    ch, cw = dst[0].shape
    (x, y), (ow, oh) = overlay.origin, overlay.size
    x0, y0, x1, y1 = max(0, x), max(0, y), min(cw, x + ow), min(ch, y + oh)
    if x1 <= x0 or y1 <= y0:
        return
    for i, plane in enumerate(dst):
        s = 1 if i == 0 else 2
        src = overlay.weighted[i][(y0 - y) // s : (y1 - y) // s, (x0 - x) // s : (x1 - x) // s]
        keep = overlay.keep[min(i, 1)][(y0 - y) // s : (y1 - y) // s, (x0 - x) // s : (x1 - x) // s]
        region = plane[y0 // s : y1 // s, x0 // s : x1 // s]
        region[:] = (src + region * keep + 127) // 255


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

    @functools.cached_property
    def prepared(self) -> YuvOverlay:
        return prepare(self.overlay, self.x, self.y)

    def paint_onto(self, frame: av.VideoFrame) -> None:
        paint(frame, self.prepared)


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

    @functools.cached_property
    def prepared(self) -> YuvOverlay:
        return prepare(self.overlay, self.x, self.y)

    def paint_onto(self, frame: av.VideoFrame) -> None:
        paint(frame, self.prepared)


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
        self._prepared: YuvOverlay | None = None

    def overlay_at(self, when: datetime) -> Image:
        text = when.strftime(self.fmt)
        if self._overlay is None or text != self._text:
            self._overlay = render_text(text, self.size, self.color, self.background, self.alpha)
            self._prepared = None
            self._text = text
        return self._overlay

    def paint_onto(self, frame: av.VideoFrame, when: datetime) -> None:
        overlay = self.overlay_at(when)
        if self._prepared is None:  # once per text: once a second at most
            self._prepared = prepare(overlay, self.x, self.y)
        paint(frame, self._prepared)


@dataclass
class Watermarks:
    """All of an output's watermarks; ``paint_onto`` paints images, then texts, then the
    timestamp, so the timestamp stays readable."""

    timestamp: TimestampWatermark | None = None
    texts: tuple[TextWatermark, ...] = ()
    images: tuple[ImageWatermark, ...] = ()

    def paint_onto(self, frame: av.VideoFrame, when: datetime) -> None:
        for image in self.images:
            image.paint_onto(frame)
        for text in self.texts:
            text.paint_onto(frame)
        if self.timestamp is not None:
            self.timestamp.paint_onto(frame, when)
