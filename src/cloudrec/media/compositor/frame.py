"""Paint input pictures onto an output frame: scaling, cut-outs, z order, alpha, clipping.

Frames are composed in the encoder's pixel format, yuv420p: ``compose`` returns an
``av.VideoFrame`` (yuv420p) that goes to the encoder as it is; no picture is converted to RGB
and back. Each input is cut (cut-out, ``fill`` crop) in its planes and scaled straight to
yuv420p in one libswscale pass (``VideoFrame.reformat``, bilinear; a no-op when the size is
already right), then its planes are copied (or blended, with alpha) into the frame's planes.
The background (colour or image) is converted to yuv420p once per ``Canvas``; a picture shown
in more than one output frame (an input slower than the output, a stand-in, a patch image) is
scaled once (``Canvas`` keeps the last tile of each placement). Colours are BT.601 limited
range, as libswscale converts RGB by default.

Chroma is subsampled by 2 both ways, so everything painted from an input lies on even
pixels: each edge of a placement's rectangle, of its ``fit`` picture inside it and of a
cut-out moves to the even pixel at or before it (left/up, so rectangles that tiled the canvas
still tile it); an edge may move by one pixel. Templates and ZEGO layouts are even already.
Watermarks keep their exact pixel positions (``overlay.YuvOverlay``). The canvas's own size
must be even.

Inputs (``Source``) are RGB24 arrays or decoded ``av.VideoFrame`` objects (any pixel format).
"""

from __future__ import annotations

import functools
from typing import Literal

import av
import numpy as np
import numpy.typing as npt

from cloudrec.media.compositor.layout import CropMode, Placement, Rect

Image = npt.NDArray[np.uint8]
"""An RGB24 picture, ``(height, width, 3)`` uint8 (RGBA overlays have 4 channels)."""

Plane = npt.NDArray[np.uint8]
"""One plane of a yuv420p picture, ``(rows, columns)`` uint8 (a view of the frame's memory)."""

Source = Image | av.VideoFrame
"""An input picture: an RGB24 array or a decoded video frame (any pixel format)."""

PatchMode = Literal["none", "black", "last", "image"]
"""What to show for an input that has no frame (JoCloud ``patch`` 0, 1, 2, 3)."""

BackgroundScale = Literal["fill", "stretch"]
"""How a background image covers the canvas (JoCloud ``scale`` 0 and 1)."""

SWS_INTERPOLATION = "BILINEAR"
FORMAT = "yuv420p"
BLACK_YUV = (16, 128, 128)
"""RGB black in BT.601 limited range: the ``fit`` bars."""
_ALPHA_STEPS = 256
_CACHED_TILES = 64


def source_size(src: Source) -> tuple[int, int]:
    """``(width, height)`` of an input picture."""
    if isinstance(src, av.VideoFrame):
        return src.width, src.height
    return src.shape[1], src.shape[0]


def planes(frame: av.VideoFrame) -> tuple[Plane, Plane, Plane]:
    """The Y, U and V planes of a planar YUV ``frame`` (yuv420p, yuv444p) as numpy views of
    its memory (writable for a frame the caller made)."""
    y, u, v = (
        np.frombuffer(memoryview(p), np.uint8).reshape(p.height, p.line_size)[:, : p.width]
        for p in frame.planes
    )
    return y, u, v


def to_rgb(frame: av.VideoFrame) -> Image:
    """A frame as an RGB24 array, as a player shows it: for screenshots and checks, not on
    the path of every frame."""
    return np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)


def from_rgb(image: Image) -> av.VideoFrame:
    """An RGB24 (or RGBA: alpha dropped) array as a video frame, unconverted."""
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(image[..., :3]), format="rgb24")


def yuv_of(color: tuple[int, int, int]) -> tuple[int, int, int]:
    """An RGB colour in yuv420p, converted as libswscale converts pictures."""
    frame = from_rgb(np.full((2, 2, 3), color, dtype=np.uint8)).reformat(format=FORMAT)
    y, u, v = planes(frame)
    return int(y[0, 0]), int(u[0, 0]), int(v[0, 0])


def even(value: int) -> int:
    """``value`` moved to the even integer at or below it."""
    return value - (value & 1)


def even_rect(rect: Rect) -> Rect:
    """``rect`` with each edge moved left or up to an even pixel (at least 2 x 2)."""
    x0, y0 = even(rect.x), even(rect.y)
    return Rect(x0, y0, max(2, even(rect.right) - x0), max(2, even(rect.bottom) - y0))


def resize(src: Source, width: int, height: int) -> av.VideoFrame:
    """``src`` scaled to exactly ``width`` x ``height`` in yuv420p (bilinear, libswscale; the
    frame itself when it is that already)."""
    frame = src if isinstance(src, av.VideoFrame) else from_rgb(src)
    return frame.reformat(
        width=width, height=height, format=FORMAT, interpolation=SWS_INTERPOLATION
    )


def fit_into(
    src: Source, rect_w: int, rect_h: int, mode: CropMode
) -> tuple[av.VideoFrame, tuple[int, int]]:
    """Scale ``src`` for a ``rect_w`` x ``rect_h`` rectangle (even sizes), keeping its aspect
    ratio, to a yuv420p frame.

    Returns the scaled picture and its offset ``(dx, dy)`` inside the rectangle, all even.
    ``fit``: the picture fits inside, centred; the rest of the rectangle (the bars) is the
    caller's to paint (``compose`` paints it black). ``fill``: the centre of ``src`` with the
    rectangle's aspect ratio is cut out and scaled to exactly the rectangle; the offset is
    ``(0, 0)``.
    """
    sw, sh = source_size(src)
    if mode == "fill":
        # Crop first, then scale: cheaper than scaling the whole source up and cropping.
        if sw * rect_h > rect_w * sh:  # source wider than the rectangle: cut the sides
            cw = max(1, round(sh * rect_w / rect_h))
            src = crop(src, Rect((sw - cw) // 2, 0, cw, sh))
        elif sw * rect_h < rect_w * sh:  # source taller: cut top and bottom
            ch = max(1, round(sw * rect_h / rect_w))
            src = crop(src, Rect(0, (sh - ch) // 2, sw, ch))
        return resize(src, rect_w, rect_h), (0, 0)
    scale = min(rect_w / sw, rect_h / sh)
    w = min(rect_w, max(2, even(round(sw * scale))))
    h = min(rect_h, max(2, even(round(sh * scale))))
    return resize(src, w, h), (even((rect_w - w) // 2), even((rect_h - h) // 2))


class Canvas:
    """An output frame's size and background: a colour, covered by an image if one is given.

    The background is prepared once (scaled to the canvas, in yuv420p) and copied for every
    frame. The canvas also keeps the last scaled tile of each placement, for a picture shown
    again.
    """

    def __init__(
        self,
        width: int,
        height: int,
        background_color: tuple[int, int, int] = (0, 0, 0),
        background_image: Image | None = None,
        background_scale: BackgroundScale = "fill",
    ) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"canvas size must be positive, got {width}x{height}")
        if width % 2 or height % 2:
            raise ValueError(f"canvas size must be even (yuv420p), got {width}x{height}")
        self.width = width
        self.height = height
        if background_image is None:
            self._base = tuple(
                np.full_like(p, c)
                for p, c in zip(
                    planes(av.VideoFrame(width, height, FORMAT)),
                    yuv_of(background_color),
                    strict=True,
                )
            )
        else:  # converted and scaled once
            rgb = background_image[..., :3]
            if background_scale == "stretch":
                frame = resize(rgb, width, height)
            else:
                frame = fit_into(rgb, width, height, "fill")[0]
            self._base = tuple(p.copy() for p in planes(frame))
        # Placement -> (its picture, scaled, offset): the last tile painted for each placement.
        self.tiles: dict[tuple[object, ...], tuple[Source, av.VideoFrame, tuple[int, int]]] = {}

    def blank(self) -> av.VideoFrame:
        """A new yuv420p frame holding the background, for the caller to paint on."""
        frame = av.VideoFrame(self.width, self.height, FORMAT)
        for dst, src in zip(planes(frame), self._base, strict=True):
            np.copyto(dst, src)
        return frame


def compose(canvas: Canvas, layers: list[tuple[Placement, Source | None]]) -> av.VideoFrame:
    """A new yuv420p frame: the canvas background with ``layers`` painted in ``z`` order.

    Layers with equal ``z`` are painted in list order (later on top). A layer whose picture is
    ``None`` is skipped (use ``patch_frame`` to decide what stands in for a missing frame). Each
    picture is cut to ``placement.source_crop`` (clipped to the picture; nothing painted if
    that leaves nothing), scaled into ``placement.rect`` (edges moved to even pixels) by
    ``placement.crop_mode`` (``fit`` bars are black and take the layer's alpha too), blended
    with ``placement.alpha`` and clipped to the canvas.
    """
    out = canvas.blank()
    dst = planes(out)
    bounds = Rect(0, 0, canvas.width, canvas.height)
    for placement, picture in sorted(layers, key=lambda layer: layer[0].z):
        if picture is None or placement.alpha <= 0.0:
            continue
        rect = even_rect(placement.rect)
        if rect.intersection(bounds) is None:
            continue
        scaled = _scaled(canvas, picture, placement, rect)
        if scaled is None:
            continue
        frame, (dx, dy) = scaled
        inner = Rect(rect.x + dx, rect.y + dy, frame.width, frame.height)
        for bar in _bars(rect, inner):  # fit: what the picture leaves of the rectangle
            _fill(dst, bar, bounds, BLACK_YUV, placement.alpha)
        _blit(dst, inner, bounds, planes(frame), placement.alpha)
    return out


def _scaled(
    canvas: Canvas, picture: Source, placement: Placement, rect: Rect
) -> tuple[av.VideoFrame, tuple[int, int]] | None:
    """The picture cut and scaled for ``rect``, kept in ``canvas.tiles`` for the next frame:
    an input picture shown again (inputs at 25 fps in a 30 fps mix, a stand-in, a patch
    picture) is not scaled again."""
    key = (placement.key, rect, placement.crop_mode, placement.source_crop)
    hit = canvas.tiles.get(key)
    if hit is not None and hit[0] is picture:
        return hit[1], hit[2]
    source = _cut_out(picture, placement.source_crop)
    if source is None:
        return None
    frame, offset = fit_into(source, rect.w, rect.h, placement.crop_mode)
    if len(canvas.tiles) >= _CACHED_TILES:  # the keys of earlier layouts
        canvas.tiles.clear()
    canvas.tiles[key] = (picture, frame, offset)
    return frame, offset


def _bars(rect: Rect, inner: Rect) -> list[Rect]:
    """``rect`` minus ``inner`` (which lies inside it): up to four strips."""
    strips = [
        Rect(rect.x, rect.y, rect.w, inner.y - rect.y),
        Rect(rect.x, inner.bottom, rect.w, rect.bottom - inner.bottom),
        Rect(rect.x, inner.y, inner.x - rect.x, inner.h),
        Rect(inner.right, inner.y, rect.right - inner.right, inner.h),
    ]
    return [s for s in strips if s.w > 0 and s.h > 0]


def _fill(
    dst: tuple[Plane, Plane, Plane],
    rect: Rect,
    bounds: Rect,
    yuv: tuple[int, int, int],
    alpha: float,
) -> None:
    visible = rect.intersection(bounds)
    if visible is None:
        return
    a = round(alpha * _ALPHA_STEPS)
    for i, (plane, value) in enumerate(zip(dst, yuv, strict=True)):
        s = 1 if i == 0 else 2
        region = plane[visible.y // s : visible.bottom // s, visible.x // s : visible.right // s]
        if a >= _ALPHA_STEPS:
            region[:] = value
        elif a > 0:
            mixed = region.astype(np.uint16) * (_ALPHA_STEPS - a) + (value * a + _ALPHA_STEPS // 2)
            region[:] = mixed >> 8


def _blit(
    dst: tuple[Plane, Plane, Plane],
    rect: Rect,
    bounds: Rect,
    src: tuple[Plane, Plane, Plane],
    alpha: float,
) -> None:
    """Copy (blend, with ``alpha`` < 1) the planes ``src`` of a picture at ``rect`` (even)."""
    visible = rect.intersection(bounds)
    if visible is None:
        return
    for i, (plane, source) in enumerate(zip(dst, src, strict=True)):
        s = 1 if i == 0 else 2
        x0, y0 = (visible.x - rect.x) // s, (visible.y - rect.y) // s
        w, h = visible.w // s, visible.h // s
        blend_into(
            plane[visible.y // s : visible.y // s + h, visible.x // s : visible.x // s + w],
            source[y0 : y0 + h, x0 : x0 + w],
            alpha,
        )


def blend_into(dst: Plane, src: Plane, alpha: float) -> None:
    """``dst = src * alpha + dst * (1 - alpha)`` in place, in steps of 1/256, rounded."""
    a = round(alpha * _ALPHA_STEPS)
    if a >= _ALPHA_STEPS:
        dst[:] = src
        return
    if a <= 0:
        return
    mixed = src.astype(np.uint16) * a + dst.astype(np.uint16) * (_ALPHA_STEPS - a)
    mixed += _ALPHA_STEPS // 2
    dst[:] = mixed >> 8


@functools.lru_cache(maxsize=16)
def solid(width: int, height: int, color: tuple[int, int, int]) -> Image:
    """A ``width`` x ``height`` RGB picture of one colour, the same (read-only) array for the
    same arguments, so that its scaled tile is kept."""
    picture = np.empty((height, width, 3), dtype=np.uint8)
    picture[:] = color
    picture.flags.writeable = False
    return picture


def patch_frame(
    mode: PatchMode, last: Source | None, image: Image | None, width: int, height: int
) -> Source | None:
    """The picture to show for an input with no frame, by JoCloud ``patch`` mode.

    ``none``: nothing (the background shows); ``black``: a black ``width`` x ``height``
    picture; ``last``: ``last``, the input's last frame (black if it never had one);
    ``image``: ``image`` (black if none could be loaded). The result goes to ``compose``,
    which scales it like any frame.
    """
    if mode == "none":
        return None
    if mode == "last" and last is not None:
        return last
    if mode == "image" and image is not None:
        return image
    return solid(width, height, (0, 0, 0))


def crop(src: Source, rect: Rect) -> Source:
    """The part of ``src`` inside ``rect`` (which must lie inside ``src``). An array is sliced
    (no copy); a frame is cut plane by plane in yuv420p (converted first if it is in another
    format) with ``rect``'s left and top edges moved to even pixels and its right and bottom
    edges to even pixels or the picture's edge."""
    if not isinstance(src, av.VideoFrame):
        return src[rect.y : rect.bottom, rect.x : rect.right]
    if src.format.name != FORMAT:
        src = src.reformat(format=FORMAT)
    w, h = src.width, src.height
    x0, y0 = even(rect.x), even(rect.y)
    x1, y1 = min(w, (rect.right + 1) // 2 * 2), min(h, (rect.bottom + 1) // 2 * 2)
    if (x0, y0, x1, y1) == (0, 0, w, h):
        return src
    out = av.VideoFrame(x1 - x0, y1 - y0, FORMAT)
    for i, (dst, plane) in enumerate(zip(planes(out), planes(src), strict=True)):
        s = 1 if i == 0 else 2
        dst[:] = plane[y0 // s : y0 // s + dst.shape[0], x0 // s : x0 // s + dst.shape[1]]
    return out


def _cut_out(picture: Source, cut: Rect | None) -> Source | None:
    if cut is None:
        return picture
    w, h = source_size(picture)
    inside = cut.intersection(Rect(0, 0, w, h))
    if inside is None:
        return None
    return crop(picture, inside)
