"""Watermarks: colours, text (with CJK) and timestamps, images, blending onto a frame.

Watermarks are painted into yuv420p frames; each is looked at as a player shows it (``to_rgb``).
Through yuv420p a flat colour comes back within 2 units per channel, so the exact values of the
RGB era are compared within 2 (3 where two roundings add up: a blend of two colours), and
chroma subsampling blurs colour over a 2 x 2 block at an edge: glyph edges are compared on
luma-weighted pixels with a tolerance said at each place.
"""

from __future__ import annotations

import re
from datetime import datetime

import av
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from cloudrec.media.compositor.frame import Canvas, from_rgb, to_rgb
from cloudrec.media.compositor.overlay import (
    ImageWatermark,
    TextWatermark,
    TimestampWatermark,
    Watermarks,
    find_cjk_font,
    paint,
    parse_color,
    prepare,
    render_text,
    text_padding,
)

Image = npt.NDArray[np.uint8]


def solid(w: int, h: int, color: tuple[int, ...]) -> Image:
    img = np.empty((h, w, len(color)), dtype=np.uint8)
    img[:] = color
    return img


def frame_of(w: int, h: int, color: tuple[int, int, int]) -> av.VideoFrame:
    """A yuv420p frame of one colour, as the mixer paints watermarks on."""
    return Canvas(w, h, background_color=color).blank()


def close(pixel: Image, color: tuple[int, ...], tol: int = 2) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(color)) <= tol))


def test_colours_parse_from_upper_or_lower_case_hex() -> None:
    assert parse_color("FF8000") == (255, 128, 0)
    assert parse_color("0a0b0c") == (10, 11, 12)


@pytest.mark.parametrize("bad", ["Ff0000", "FF00", "#FF0000", "GG0000", "FF00000", ""])
def test_colours_in_mixed_case_or_not_six_hex_digits_are_rejected(bad: str) -> None:
    message = f"colour must be 6 hex digits RRGGBB, all upper or all lower case, got {bad!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_color(bad)


@pytest.mark.parametrize(("x", "y"), [(30, 20), (31, 21)])  # odd: exact position still
def test_text_watermark_pixels_match_an_independent_pillow_rendering(x: int, y: int) -> None:
    size, pad = 24, text_padding(24)
    yuv = frame_of(320, 120, (40, 60, 80))
    TextWatermark(x, y, "Hello 12:34", size, (255, 255, 0), (0, 0, 128)).paint_onto(yuv)
    frame = to_rgb(yuv)

    font = ImageFont.truetype(str(find_cjk_font()), size, index=2)
    expected = PILImage.new("RGB", (320, 120), (40, 60, 80))
    draw = ImageDraw.Draw(expected)
    _, _, right, bottom = draw.textbbox((0, 0), "Hello 12:34", font=font)
    draw.rectangle((x, y, x + right + 2 * pad - 1, y + bottom + 2 * pad - 1), fill=(0, 0, 128))
    draw.text((x + pad, y + pad), "Hello 12:34", font=font, fill=(255, 255, 0))
    # The reference as yuv420p carries it: converted by libswscale, as the old RGB mixer's
    # output went to the encoder. Luma is per pixel and must match at every glyph edge; chroma
    # is one sample per 2 x 2 block, averaged here where libswscale filters, so it differs on
    # edges only (up to 38 units there; within 5 in 99% of samples at an even position, 7 at
    # an odd one, where the box's top and left edges halve 2 x 2 blocks with the frame).
    reference = from_rgb(np.asarray(expected)).reformat(format="yuv420p").to_ndarray()
    ours = yuv.to_ndarray()
    assert np.array_equal(ours[:120], reference[:120])
    assert np.percentile(np.abs(ours[120:].astype(int) - reference[120:]), 99) <= 8
    ink = frame[y + pad : y + bottom, x + pad : x + right].astype(int)
    assert (np.abs(ink - (255, 255, 0)) <= 2).all(axis=2).any()


def test_a_chinese_string_renders_real_glyphs_not_tofu() -> None:
    white, no_bg = (255, 255, 255), None
    text = render_text("录制服务", 32, white, no_bg, 1.0)
    assert (text[..., 3] > 128).sum() > 200  # plenty of ink in its box

    def ink(s: str) -> Image:
        return render_text(s, 32, white, no_bg, 1.0)[:40, :40, 3]  # same-size boxes to compare

    # Missing glyphs all draw the same box ("tofu"): two unassigned code points look alike,
    # while real glyphs differ from each other and from the box.
    tofu, tofu2 = ink("\ue000"), ink("\ue001")
    assert np.array_equal(tofu, tofu2)
    a, b = ink("录"), ink("制")
    assert not np.array_equal(a, b)
    assert not np.array_equal(a, tofu) and not np.array_equal(b, tofu)


def test_text_without_background_leaves_the_frame_between_glyphs() -> None:
    yuv = frame_of(200, 60, (10, 20, 30))
    before = to_rgb(yuv)
    paint(yuv, prepare(render_text("I", 40, (255, 255, 255), None, 1.0), 0, 0))
    frame = to_rgb(yuv)
    assert (frame[:, -100:] == before[:, -100:]).all()
    assert (frame >= 253).all(axis=2).any()


def test_text_alpha_half_blends_the_background_box_to_the_mean() -> None:
    frame = frame_of(200, 60, (100, 100, 100))
    paint(frame, prepare(render_text(".", 20, (255, 255, 255), (200, 0, 50), 0.5), 0, 0))
    assert close(to_rgb(frame)[0, 0], (150, 50, 75), tol=3)


def test_the_timestamp_text_changes_when_the_second_changes_and_is_cached_within_it() -> None:
    mark = TimestampWatermark(0, 0, "%Y-%m-%d %H:%M:%S", 20)
    t0 = datetime(2026, 1, 2, 13, 0, 0, 100_000)
    first = mark.overlay_at(t0)
    assert mark.overlay_at(t0.replace(microsecond=900_000)) is first
    later = mark.overlay_at(t0.replace(second=1))
    assert later is not first and not np.array_equal(later, first)
    expected = render_text("2026-01-02 13:00:01", 20, (255, 255, 255), (0, 0, 0), 1.0)
    assert np.array_equal(later, expected)


def test_timestamp_formats_other_than_jocloud_ones_are_rejected() -> None:
    with pytest.raises(ValueError, match="timestamp format must be one of"):
        TimestampWatermark(0, 0, "%d.%m.%Y", 20)


def test_paint_clips_an_overlay_past_the_frame_edges() -> None:
    frame = frame_of(10, 10, (0, 0, 0))
    paint(frame, prepare(solid(6, 6, (255, 0, 0, 255)), 7, -3))
    rgb = to_rgb(frame)
    # rows 0-2, columns 7-9; column 7 shares its chroma with column 6, row 2 with row 3
    assert close(rgb[:2, 8:], (255, 0, 0))
    assert rgb[4:].sum() == 0 and rgb[:, :6].sum() == 0
    paint(frame, prepare(solid(6, 6, (255, 0, 0, 255)), 20, 20))  # entirely outside: no error


def test_image_watermark_stretches_or_zooms_and_crops_with_alpha() -> None:
    logo = solid(40, 10, (0, 0, 255, 255))
    logo[:, :5] = (255, 0, 0, 255)  # red left edge, cropped away when zoomed to a square
    yuv = frame_of(100, 100, (0, 0, 0))
    ImageWatermark(0, 0, 20, 20, logo, stretch=True).paint_onto(yuv)
    ImageWatermark(50, 0, 20, 20, logo, stretch=False, alpha=0.5).paint_onto(yuv)
    frame = to_rgb(yuv)
    assert close(frame[10, 0], (255, 0, 0))
    assert close(frame[10, 50], (0, 0, 128), tol=3)
    assert frame[50, 50].tolist() == [0, 0, 0]


def test_watermarks_paint_images_then_texts_then_the_timestamp_on_top() -> None:
    yuv = frame_of(300, 100, (0, 0, 0))
    marks = Watermarks(
        timestamp=TimestampWatermark(0, 0, "%H:%M:%S", 20, background=(0, 255, 0)),
        texts=(TextWatermark(0, 0, "text", 20, background=(255, 0, 0)),),
        images=(ImageWatermark(0, 0, 300, 100, solid(3, 1, (0, 0, 255))),),
    )
    marks.paint_onto(yuv, datetime(2026, 1, 1, 8, 0, 0))
    frame = to_rgb(yuv)
    assert close(frame[1, 1], (0, 255, 0))
    assert close(frame[90, 290], (0, 0, 255))


def test_alpha_outside_zero_to_one_and_font_sizes_outside_1_to_100_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"^alpha must be in \[0, 1\], got 1\.5$"):
        TimestampWatermark(0, 0, "%H:%M:%S", 20, alpha=1.5)
    with pytest.raises(ValueError, match=r"^font size must be in \(0, 100\], got 101$"):
        render_text("x", 101, (255, 255, 255), None, 1.0)
