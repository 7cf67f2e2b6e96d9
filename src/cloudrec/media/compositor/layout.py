"""Where each input goes on the output canvas: the five JoCloud layout templates, ZEGO's four
layouts (grid, horizontal, vertical, floating) and custom layouts.

Pure geometry, no pixels. All coordinates are pixels with the origin at the canvas's top-left
corner, x rightward, y downward. Template and ZEGO rectangles have even positions and sizes
(yuv420p subsamples chroma by 2 in both directions); custom rectangles are taken as given. See
``docs/layouts.md`` for pictures of each layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

CropMode = Literal["fit", "fill"]
"""How a source fills its rectangle: ``fit`` scales it to fit inside, keeping its aspect ratio,
centred, with black bars on the sides left over; ``fill`` scales it to cover the rectangle,
keeping its aspect ratio, and crops what sticks out, centred."""

TEMPLATE_IDS = (1, 2, 3, 4, 5)
MAX_INPUTS = 16
"""JoCloud mixes at most 16 inputs (zOrder 0..16); templates accept up to this many keys."""
MAX_Z = 16
TEMPLATE5_MAX_INPUTS = 5

AutoLayout = Literal["grid", "horizontal", "vertical", "floating"]
ZEGO_LAYOUTS: tuple[AutoLayout, ...] = ("grid", "horizontal", "vertical", "floating")
ZEGO_MAX_INPUTS = 25
"""ZEGO's layouts show up to 25 users (set-the-mixed-flow-layout)."""
ZEGO_BAND = 8
"""Small regions per row (horizontal, floating) or per column (vertical)."""


@dataclass(frozen=True, slots=True)
class Rect:
    """A rectangle in pixels: top-left corner ``(x, y)``, width ``w``, height ``h``."""

    x: int
    y: int
    w: int
    h: int

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    def intersection(self, other: Rect) -> Rect | None:
        """The overlap of two rectangles, or ``None`` if they do not overlap (touching edges
        do not overlap)."""
        x0, y0 = max(self.x, other.x), max(self.y, other.y)
        x1, y1 = min(self.right, other.right), min(self.bottom, other.bottom)
        if x1 <= x0 or y1 <= y0:
            return None
        return Rect(x0, y0, x1 - x0, y1 - y0)


@dataclass(frozen=True, slots=True)
class Placement:
    """One input on the canvas.

    ``key`` names the input (e.g. ``"room/uid"``); ``rect`` is where it goes on the canvas (it
    may reach past the canvas: the compositor clips); ``z`` is its layer, painted bottom (0) to
    top, ties in list order; ``crop_mode`` says how the source fills ``rect``; ``source_crop``,
    if set, cuts this region out of the source first (in source pixels, clipped to the source);
    ``alpha`` is its opacity, 1.0 opaque, 0.0 invisible.
    """

    key: str
    rect: Rect
    z: int = 0
    crop_mode: CropMode = "fill"
    source_crop: Rect | None = None
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if self.rect.w <= 0 or self.rect.h <= 0:
            raise ValueError(f"placement {self.key!r}: width and height must be positive")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"placement {self.key!r}: alpha must be in [0, 1], got {self.alpha}")


@dataclass(frozen=True, slots=True)
class CustomInput:
    """One entry of a custom layout, field for field the JoCloud ``mixconfig.input`` entry.

    ``layout_*`` place it on the canvas; ``crop`` 0 is ``fit`` (centred, black sides), 1 is
    ``fill`` (cover, centred crop); ``crop_x/y/w/h`` cut a region out of the source picture
    (all four, or none); ``alpha`` 0.0 transparent .. 1.0 opaque; ``z_order`` 0 (bottom) .. 16.
    """

    key: str
    layout_x: int
    layout_y: int
    layout_w: int
    layout_h: int
    z_order: int = 0
    crop: int = 0
    crop_x: int | None = None
    crop_y: int | None = None
    crop_w: int | None = None
    crop_h: int | None = None
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if self.layout_w <= 0 or self.layout_h <= 0:
            raise ValueError(f"input {self.key!r}: layoutW and layoutH must be positive")
        if not 0 <= self.z_order <= MAX_Z:
            raise ValueError(f"input {self.key!r}: zOrder must be in [0, {MAX_Z}]")
        if self.crop not in (0, 1):
            raise ValueError(f"input {self.key!r}: crop must be 0 or 1")
        cut = (self.crop_x, self.crop_y, self.crop_w, self.crop_h)
        if any(v is not None for v in cut) and any(v is None for v in cut):
            raise ValueError(f"input {self.key!r}: give all of cropX, cropY, cropW, cropH or none")
        cut_out = self.cut_out
        if cut_out is not None and (cut_out.w <= 0 or cut_out.h <= 0):
            raise ValueError(f"input {self.key!r}: cropW and cropH must be positive")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"input {self.key!r}: alpha must be in [0, 1]")

    @property
    def cut_out(self) -> Rect | None:
        """The region of the source picture to show (cropX/Y/W/H), or ``None`` for all of it."""
        x, y, w, h = self.crop_x, self.crop_y, self.crop_w, self.crop_h
        if x is None or y is None or w is None or h is None:
            return None
        return Rect(x, y, w, h)


def custom_layout(inputs: list[CustomInput]) -> list[Placement]:
    """Placements for a custom layout, sorted bottom to top by ``z_order`` (stable: equal
    ``z_order`` keeps the request's order, the later one on top)."""
    placements = []
    for item in inputs:
        placements.append(
            Placement(
                key=item.key,
                rect=Rect(item.layout_x, item.layout_y, item.layout_w, item.layout_h),
                z=item.z_order,
                crop_mode="fill" if item.crop == 1 else "fit",
                source_crop=item.cut_out,
                alpha=item.alpha,
            )
        )
    return sorted(placements, key=lambda p: p.z)


def template_layout(
    template_id: int,
    keys: list[str],
    width: int,
    height: int,
    *,
    crop_mode: CropMode = "fill",
) -> list[Placement]:
    """Placements for JoCloud layout template ``template_id`` with inputs ``keys`` in order
    (the first is the "main" one for templates 4 and 5) on a ``width`` x ``height`` canvas.

    Every size and position is even: a length ``L`` divided into ``k`` parts gives cells of
    ``even(L / k)`` (``even`` rounds down to an even number, at least 2), and a group of cells
    is centred with an even offset, so a few pixels of background may show at the edges.

    1. horizontal: one row of ``n`` equal columns, each the full canvas height.
    2. vertical: one column of ``n`` equal rows, each the full canvas width.
    3. tiled: ``cols = ceil(sqrt(n))`` columns and ``rows = ceil(n / cols)`` rows of equal
       cells, filled left to right, top to bottom; the grid is centred, and a last row with
       fewer than ``cols`` cells is centred horizontally.
    4. corner: the first input covers the whole canvas (z 0); the others are tiles of a quarter
       of the canvas width and height (z 1, 2, ...), placed in the bottom-right corner going
       left, four to a row, then continuing on the row above going left again.
    5. five users horizontal: only the first 5 inputs are shown. One input covers the whole
       canvas; with 2..5 the first takes the left ``width - even(width / 4)`` pixels, full
       height, and the others are stacked top-down in the right quarter, each
       ``even(width / 4)`` x ``even(height / 4)``.

    Cells never overlap except in template 4 (tiles over the main input). With many inputs on
    a tiny canvas a cell cannot shrink below 2 px and may reach past the canvas (clipped when
    composing). ``keys`` may be empty (no placements); more than 16 is an error.
    """
    if template_id not in TEMPLATE_IDS:
        raise ValueError(f"template id must be one of 1..5, got {template_id}")
    if len(keys) > MAX_INPUTS:
        raise ValueError(f"at most {MAX_INPUTS} inputs, got {len(keys)}")
    if width < 2 or height < 2:
        raise ValueError(f"canvas must be at least 2x2, got {width}x{height}")
    if template_id == 1:
        rects = _grid(len(keys), cols=max(1, len(keys)), width=width, height=height)
    elif template_id == 2:
        rects = _grid(len(keys), cols=1, width=width, height=height)
    elif template_id == 3:
        rects = _grid(len(keys), cols=math.ceil(math.sqrt(len(keys))), width=width, height=height)
    elif template_id == 4:
        rects = _corner(len(keys), width, height)
    else:
        keys = keys[:TEMPLATE5_MAX_INPUTS]
        rects = _main_and_column(len(keys), width, height)
    return [
        Placement(key=k, rect=r, z=i if template_id == 4 else 0, crop_mode=crop_mode)
        for i, (k, r) in enumerate(zip(keys, rects, strict=True))
    ]


def _even(value: float) -> int:
    """``value`` rounded down to an even integer, at least 2."""
    return max(2, int(value) // 2 * 2)


def _centre(total: int, used: int) -> int:
    """Even offset that centres ``used`` pixels in ``total`` (0 if it does not fit)."""
    return max(0, (total - used) // 4 * 2)


def _grid(n: int, cols: int, width: int, height: int) -> list[Rect]:
    if n == 0:
        return []
    rows = math.ceil(n / cols)
    cw, ch = _even(width / cols), _even(height / rows)
    y0 = _centre(height, rows * ch)
    rects = []
    for i in range(n):
        row, col = divmod(i, cols)
        in_row = min(cols, n - row * cols)
        x0 = _centre(width, in_row * cw)
        rects.append(Rect(x0 + col * cw, y0 + row * ch, cw, ch))
    return rects


def _corner(n: int, width: int, height: int) -> list[Rect]:
    if n == 0:
        return []
    tw, th = _even(width / 4), _even(height / 4)
    rects = [Rect(0, 0, _even(width), _even(height))]
    for i in range(n - 1):
        row, col = divmod(i, 4)
        rects.append(Rect(width - (col + 1) * tw, height - (row + 1) * th, tw, th))
    return rects


def _main_and_column(n: int, width: int, height: int) -> list[Rect]:
    if n == 0:
        return []
    if n == 1:
        return [Rect(0, 0, _even(width), _even(height))]
    tw, th = _even(width / 4), _even(height / 4)
    main_w = _even(width - tw)
    rects = [Rect(0, 0, main_w, _even(height))]
    rects += [Rect(main_w, i * th, tw, th) for i in range(n - 1)]
    return rects


def auto_layout(
    layout: AutoLayout,
    keys: list[str],
    width: int,
    height: int,
    *,
    main_key: str | None = None,
    crop_mode: CropMode = "fill",
) -> list[Placement]:
    """Placements for one of ZEGO's layouts with inputs ``keys`` in the order they joined, on a
    ``width`` x ``height`` canvas. See ``docs/layouts.md`` for pictures and for which of these
    rules ZEGO's text fixes and which are cloudrec's reading of it.

    ``grid``: ``cols = ceil(sqrt(n))`` columns (a column is added before a row) and
    ``rows = ceil(n / cols)`` rows of equal cells filled left to right, top to bottom; cells
    not taken show the background. Every cell uses ``crop_mode``.

    ``horizontal``, ``vertical``, ``floating``: one large region and small regions of one size.
    The large region shows ``main_key``, or the first key when ``main_key`` is None; a
    ``main_key`` that is not in ``keys`` (a named stream that is not publishing) leaves the
    large region to the background. The large region scales its input to fit (``fit``, whole
    picture); the small regions use ``crop_mode``. With ``s`` small regions, each is
    ``even(width / 8)`` x ``even(height / 8)``, or ``/ 9`` when ``s > 16``.

    - ``horizontal``: the small regions run left to right along the top edge, eight to a row,
      a second row below the first; past 16 they go down the right edge from the top. The
      large region takes the rest: below the rows, left of that column.
    - ``vertical``: the small regions run top to bottom along the right edge, eight to a
      column, a second column left of the first; past 16 they go left to right along the
      bottom edge. The large region takes the rest: left of the columns, above that row.
    - ``floating``: the large region is the whole canvas (z 0); the small regions lie over it
      (z 1) from the bottom-right corner leftwards, eight to a row, then on the row above.

    Regions never overlap except in ``floating``. At most 25 keys are shown (24 small regions
    when the large one is left to the background); the others wait for a region, in order.
    """
    if layout not in ZEGO_LAYOUTS:
        raise ValueError(f"ZEGO layout must be one of {', '.join(ZEGO_LAYOUTS)}, got {layout!r}")
    if width < 2 or height < 2:
        raise ValueError(f"canvas must be at least 2x2, got {width}x{height}")
    if layout == "grid":
        shown = keys[:ZEGO_MAX_INPUTS]
        cells = _column_first_grid(len(shown), width, height)
        return [
            Placement(key=k, rect=r, crop_mode=crop_mode) for k, r in zip(shown, cells, strict=True)
        ]
    main = main_key if main_key is not None else (keys[0] if keys else None)
    small = [k for k in keys if k != main][: ZEGO_MAX_INPUTS - 1]
    if main is None:
        return []
    arrange = {"horizontal": _top_band, "vertical": _right_band, "floating": _floating}[layout]
    large, tiles = arrange(len(small), width, height)
    z = 1 if layout == "floating" else 0
    placements = [Placement(key=main, rect=large, crop_mode="fit")] if main in keys else []
    placements += [
        Placement(key=k, rect=r, z=z, crop_mode=crop_mode)
        for k, r in zip(small, tiles, strict=True)
    ]
    return placements


def _column_first_grid(n: int, width: int, height: int) -> list[Rect]:
    if n == 0:
        return []
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cw, ch = _even(width / cols), _even(height / rows)
    x0, y0 = _centre(width, cols * cw), _centre(height, rows * ch)
    return [Rect(x0 + (i % cols) * cw, y0 + (i // cols) * ch, cw, ch) for i in range(n)]


def _small_size(small: int, width: int, height: int) -> tuple[int, int]:
    per = ZEGO_BAND + 1 if small > 2 * ZEGO_BAND else ZEGO_BAND
    return _even(width / per), _even(height / per)


def _down_to_even(value: int) -> int:
    return max(0, value // 2 * 2)


def _top_band(small: int, width: int, height: int) -> tuple[Rect, list[Rect]]:
    """Horizontal: rows of small regions along the top, then a column on the right edge."""
    if small == 0:
        return Rect(0, 0, _even(width), _even(height)), []
    tw, th = _small_size(small, width, height)
    in_rows = min(small, 2 * ZEGO_BAND)
    rows = math.ceil(in_rows / ZEGO_BAND)
    tiles = [Rect((i % ZEGO_BAND) * tw, (i // ZEGO_BAND) * th, tw, th) for i in range(in_rows)]
    right = _down_to_even(width - tw)
    tiles += [Rect(right, j * th, tw, th) for j in range(small - in_rows)]
    large_w = right if small > in_rows else _even(width)
    return Rect(0, rows * th, large_w, _even(height - rows * th)), tiles


def _right_band(small: int, width: int, height: int) -> tuple[Rect, list[Rect]]:
    """Vertical: columns of small regions along the right, then a row on the bottom edge."""
    if small == 0:
        return Rect(0, 0, _even(width), _even(height)), []
    tw, th = _small_size(small, width, height)
    in_cols = min(small, 2 * ZEGO_BAND)
    cols = math.ceil(in_cols / ZEGO_BAND)
    edge = _down_to_even(width - tw)
    tiles = [
        Rect(edge - (i // ZEGO_BAND) * tw, (i % ZEGO_BAND) * th, tw, th) for i in range(in_cols)
    ]
    bottom = _down_to_even(height - th)
    tiles += [Rect(j * tw, bottom, tw, th) for j in range(small - in_cols)]
    large_h = bottom if small > in_cols else _even(height)
    return Rect(0, 0, _even(edge - (cols - 1) * tw), large_h), tiles


def _floating(small: int, width: int, height: int) -> tuple[Rect, list[Rect]]:
    """Floating: the whole canvas, and small regions over it from the bottom-right corner."""
    tw, th = _even(width / ZEGO_BAND), _even(height / ZEGO_BAND)
    right, bottom = _down_to_even(width), _down_to_even(height)
    tiles = [
        Rect(right - (i % ZEGO_BAND + 1) * tw, bottom - (i // ZEGO_BAND + 1) * th, tw, th)
        for i in range(small)
    ]
    return Rect(0, 0, _even(width), _even(height)), tiles
