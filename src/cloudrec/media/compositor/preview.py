"""Pictures of the layout templates, drawn by the compositor itself, for ``docs/layouts.md``.

``python -m cloudrec.media.compositor.preview docs/img`` writes ``layout-template-N.png`` for
N = 1..5: the template with 4 inputs (left) and with 5 inputs (right), each a 1280x720 canvas,
inputs in flat colours numbered from 1 in ``keys`` order.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from cloudrec.media.compositor.frame import Canvas, Image, compose
from cloudrec.media.compositor.layout import TEMPLATE_IDS, template_layout
from cloudrec.media.compositor.overlay import paint, render_text

PALETTE = (
    (0xE6, 0x4B, 0x3C),
    (0x2E, 0x86, 0xC1),
    (0x27, 0xAE, 0x60),
    (0xF3, 0x9C, 0x12),
    (0x8E, 0x44, 0xAD),
    (0x16, 0xA0, 0x85),
)
BACKGROUND = (0x30, 0x30, 0x30)
GAP_PX = 16


def render_template_preview(template_id: int, n: int, width: int, height: int) -> Image:
    """A ``width`` x ``height`` RGB frame of template ``template_id`` with ``n`` solid inputs,
    each numbered (1-based) in its top-left corner."""
    keys = [str(i + 1) for i in range(n)]
    placements = template_layout(template_id, keys, width, height)
    sources: list[Image] = []
    for i in range(n):
        src = np.empty((9, 16, 3), dtype=np.uint8)
        src[:] = PALETTE[i % len(PALETTE)]
        sources.append(src)
    frame = compose(Canvas(width, height, BACKGROUND), list(zip(placements, sources, strict=False)))
    for p in placements:
        size = max(8, min(100, p.rect.h // 3))
        label = render_text(p.key, size, (255, 255, 255), None, 1.0)
        paint(frame, label, p.rect.x + size // 4, p.rect.y)
    return frame


def write_previews(directory: Path, width: int = 1280, height: int = 720) -> list[Path]:
    """Write one PNG per template into ``directory``: 4 inputs and 5 inputs side by side."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for template_id in TEMPLATE_IDS:
        sheet = np.full((height, 2 * width + GAP_PX, 3), 255, dtype=np.uint8)
        sheet[:, :width] = render_template_preview(template_id, 4, width, height)
        sheet[:, width + GAP_PX :] = render_template_preview(template_id, 5, width, height)
        path = directory / f"layout-template-{template_id}.png"
        # A palette of flat colours keeps each file small; antialiased digit edges quantise fine.
        img = PILImage.fromarray(sheet).quantize(colors=32, dither=PILImage.Dither.NONE)
        img.save(path, optimize=True)
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_previews(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")):
        print(written_path, written_path.stat().st_size, "bytes")
