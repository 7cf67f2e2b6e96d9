"""Watermarks: colours, text (with CJK) and timestamps, images, blending onto a frame."""

from __future__ import annotations

import re
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from cloudrec.media.compositor.overlay import (
    ImageWatermark,
    TextWatermark,
    TimestampWatermark,
    Watermarks,
    find_cjk_font,
    paint,
    parse_color,
    render_text,
    text_padding,
)

Image = npt.NDArray[np.uint8]


def solid(w: int, h: int, color: tuple[int, ...]) -> Image:
    img = np.empty((h, w, len(color)), dtype=np.uint8)
    img[:] = color
    return img


def test_colours_parse_from_upper_or_lower_case_hex() -> None:
    assert parse_color("FF8000") == (255, 128, 0)
    assert parse_color("0a0b0c") == (10, 11, 12)


@pytest.mark.parametrize("bad", ["Ff0000", "FF00", "#FF0000", "GG0000", "FF00000", ""])
def test_colours_in_mixed_case_or_not_six_hex_digits_are_rejected(bad: str) -> None:
    message = f"colour must be 6 hex digits RRGGBB, all upper or all lower case, got {bad!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_color(bad)


def test_text_watermark_pixels_match_an_independent_pillow_rendering() -> None:
    size, pad, x, y = 24, text_padding(24), 30, 20
    frame = solid(320, 120, (40, 60, 80))
    TextWatermark(x, y, "Hello 12:34", size, (255, 255, 0), (0, 0, 128)).paint_onto(frame)

    font = ImageFont.truetype(str(find_cjk_font()), size, index=2)
    expected = PILImage.new("RGB", (320, 120), (40, 60, 80))
    draw = ImageDraw.Draw(expected)
    _, _, right, bottom = draw.textbbox((0, 0), "Hello 12:34", font=font)
    draw.rectangle((x, y, x + right + 2 * pad - 1, y + bottom + 2 * pad - 1), fill=(0, 0, 128))
    draw.text((x + pad, y + pad), "Hello 12:34", font=font, fill=(255, 255, 0))
    diff = np.abs(frame.astype(int) - np.asarray(expected).astype(int))
    assert diff.max() <= 2
    assert (frame[y + pad : y + bottom, x + pad : x + right] == (255, 255, 0)).all(axis=2).any()


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
    frame = solid(200, 60, (10, 20, 30))
    paint(frame, render_text("I", 40, (255, 255, 255), None, 1.0), 0, 0)
    assert (frame[:, -100:] == (10, 20, 30)).all()
    assert (frame == (255, 255, 255)).all(axis=2).any()


def test_text_alpha_half_blends_the_background_box_to_the_mean() -> None:
    frame = solid(200, 60, (100, 100, 100))
    paint(frame, render_text(".", 20, (255, 255, 255), (200, 0, 50), 0.5), 0, 0)
    assert frame[0, 0].tolist() == [150, 50, 75]


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
    frame = solid(10, 10, (0, 0, 0))
    paint(frame, solid(6, 6, (255, 0, 0, 255)), 7, -3)
    assert (frame[:3, 7:] == (255, 0, 0)).all()
    assert frame[3:].sum() == 0 and frame[:, :7].sum() == 0
    paint(frame, solid(6, 6, (255, 0, 0, 255)), 20, 20)  # entirely outside: no error


def test_image_watermark_stretches_or_zooms_and_crops_with_alpha() -> None:
    logo = solid(40, 10, (0, 0, 255, 255))
    logo[:, :5] = (255, 0, 0, 255)  # red left edge, cropped away when zoomed to a square
    frame = solid(100, 100, (0, 0, 0))
    ImageWatermark(0, 0, 20, 20, logo, stretch=True).paint_onto(frame)
    ImageWatermark(50, 0, 20, 20, logo, stretch=False, alpha=0.5).paint_onto(frame)
    assert frame[10, 0].tolist() == [255, 0, 0]
    assert frame[10, 50].tolist() == [0, 0, 128]
    assert frame[50, 50].tolist() == [0, 0, 0]


def test_watermarks_paint_images_then_texts_then_the_timestamp_on_top() -> None:
    frame = solid(300, 100, (0, 0, 0))
    marks = Watermarks(
        timestamp=TimestampWatermark(0, 0, "%H:%M:%S", 20, background=(0, 255, 0)),
        texts=(TextWatermark(0, 0, "text", 20, background=(255, 0, 0)),),
        images=(ImageWatermark(0, 0, 300, 100, solid(3, 1, (0, 0, 255))),),
    )
    marks.paint_onto(frame, datetime(2026, 1, 1, 8, 0, 0))
    assert frame[1, 1].tolist() == [0, 255, 0]
    assert frame[90, 290].tolist() == [0, 0, 255]


def test_alpha_outside_zero_to_one_and_font_sizes_outside_1_to_100_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"^alpha must be in \[0, 1\], got 1\.5$"):
        TimestampWatermark(0, 0, "%H:%M:%S", 20, alpha=1.5)
    with pytest.raises(ValueError, match=r"^font size must be in \(0, 100\], got 101$"):
        render_text("x", 101, (255, 255, 255), None, 1.0)
