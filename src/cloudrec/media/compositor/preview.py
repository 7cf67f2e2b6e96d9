"""Pictures of the layouts, drawn by the compositor itself, for ``docs/layouts.md``.

``python -m cloudrec.media.compositor.preview docs/img`` writes ``layout-template-N.png`` for
N = 1..5: the JoCloud template with 4 inputs (left) and with 5 inputs (right), each a 1280x720
canvas; and ``layout-zego-NAME.png`` for ZEGO's grid, horizontal, vertical and floating
layouts: four 640x360 canvases, two by two, with the numbers of inputs of ZEGO's own pictures.
Inputs are flat 16:9 colours numbered from 1 in the order they joined.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from cloudrec.media.compositor.frame import Canvas, Image, compose, to_rgb
from cloudrec.media.compositor.layout import (
    TEMPLATE_IDS,
    ZEGO_LAYOUTS,
    AutoLayout,
    Placement,
    auto_layout,
    template_layout,
)
from cloudrec.media.compositor.overlay import paint, prepare, render_text

PALETTE = (
    (0xE6, 0x4B, 0x3C),
    (0x2E, 0x86, 0xC1),
    (0x27, 0xAE, 0x60),
    (0xF3, 0x9C, 0x12),
    (0x8E, 0x44, 0xAD),
    (0x16, 0xA0, 0x85),
    (0xD8, 0x1B, 0x60),
    (0x79, 0x55, 0x48),
)
BACKGROUND = (0x30, 0x30, 0x30)
GAP_PX = 16


def render_template_preview(template_id: int, n: int, width: int, height: int) -> Image:
    """A ``width`` x ``height`` RGB frame of template ``template_id`` with ``n`` solid inputs,
    each numbered (1-based) in its top-left corner."""
    keys = [str(i + 1) for i in range(n)]
    return _render(template_layout(template_id, keys, width, height), width, height)


def render_zego_preview(
    layout: AutoLayout, n: int, width: int, height: int, main_key: str | None = None
) -> Image:
    """A ``width`` x ``height`` RGB frame of ZEGO layout ``layout`` with ``n`` solid inputs
    ``"1"``.. ``"n"`` (``main_key`` as for ``auto_layout``), each numbered in its corner."""
    keys = [str(i + 1) for i in range(n)]
    placements = auto_layout(layout, keys, width, height, main_key=main_key)
    return _render(placements, width, height)


# ZEGO draws its layouts with these numbers of users (set-the-mixed-flow-layout); the grid
# with more, to show the cells a short last row leaves to the background.
ZEGO_PREVIEW_COUNTS: dict[AutoLayout, tuple[int, ...]] = {
    "grid": (2, 5, 10, 25),
    "horizontal": (5, 9, 17, 25),
    "vertical": (5, 9, 17, 25),
    "floating": (5, 9, 17, 25),
}


def colour_of(key: str) -> tuple[int, int, int]:
    """Input ``"1"`` is red; the others take the rest of the palette in turn, so no other
    input looks like the first (the large region) and neighbours in rows of up to 8 differ."""
    n = int(key)
    return PALETTE[0] if n == 1 else PALETTE[1 + (n - 2) % (len(PALETTE) - 1)]


def _render(placements: list[Placement], width: int, height: int) -> Image:
    sources: list[Image] = []
    for p in placements:
        src = np.empty((9, 16, 3), dtype=np.uint8)
        src[:] = colour_of(p.key)
        sources.append(src)
    frame = compose(Canvas(width, height, BACKGROUND), list(zip(placements, sources, strict=True)))
    for p in placements:
        r = p.rect
        if p.crop_mode == "fit":  # the label goes on the picture, not on its black bars
            scale = min(r.w / 16, r.h / 9)
            x, y = r.x + int(r.w - 16 * scale) // 2, r.y + int(r.h - 9 * scale) // 2
            height_px = int(9 * scale)
        else:
            x, y, height_px = r.x, r.y, r.h
        size = max(8, min(100, height_px // 3))
        label = render_text(p.key, size, (255, 255, 255), None, 1.0)
        paint(frame, prepare(label, x + size // 4, y))
    return to_rgb(frame)


def write_previews(directory: Path, width: int = 1280, height: int = 720) -> list[Path]:
    """Write one PNG per JoCloud template (4 inputs and 5 inputs side by side, each
    ``width`` x ``height``) and one per ZEGO layout (four half-size canvases, two by two)
    into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for template_id in TEMPLATE_IDS:
        sheet = np.full((height, 2 * width + GAP_PX, 3), 255, dtype=np.uint8)
        sheet[:, :width] = render_template_preview(template_id, 4, width, height)
        sheet[:, width + GAP_PX :] = render_template_preview(template_id, 5, width, height)
        written.append(_save(sheet, directory / f"layout-template-{template_id}.png"))
    w, h = width // 2 // 2 * 2, height // 2 // 2 * 2
    for layout in ZEGO_LAYOUTS:
        sheet = np.full((2 * h + GAP_PX, 2 * w + GAP_PX, 3), 255, dtype=np.uint8)
        for i, n in enumerate(ZEGO_PREVIEW_COUNTS[layout]):
            x, y = (i % 2) * (w + GAP_PX), (i // 2) * (h + GAP_PX)
            sheet[y : y + h, x : x + w] = render_zego_preview(layout, n, w, h)
        written.append(_save(sheet, directory / f"layout-zego-{layout}.png"))
    return written


def _save(sheet: Image, path: Path) -> Path:
    # A palette of flat colours keeps each file small; antialiased digit edges quantise fine.
    img = PILImage.fromarray(sheet).quantize(colors=32, dither=PILImage.Dither.NONE)
    img.save(path, optimize=True)
    return path


if __name__ == "__main__":
    for written_path in write_previews(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")):
        print(written_path, written_path.stat().st_size, "bytes")
