"""Compositing, checked by pixels on solid-colour and striped generated pictures."""

from __future__ import annotations

import av
import numpy as np
import numpy.typing as npt
import pytest

from cloudrec.media.compositor.frame import Canvas, PatchMode, compose, fit_into, patch_frame
from cloudrec.media.compositor.layout import Placement, Rect, template_layout, zego_layout
from cloudrec.media.compositor.preview import (
    PALETTE,
    colour_of,
    render_template_preview,
    render_zego_preview,
)

Image = npt.NDArray[np.uint8]
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def solid(w: int, h: int, color: tuple[int, int, int]) -> Image:
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = color
    return img


def striped(w: int, h: int, stripe: int) -> Image:
    """White picture with a red stripe on the left and right edges and blue on top and bottom."""
    img = solid(w, h, WHITE)
    img[:, :stripe] = RED
    img[:, -stripe:] = RED
    img[:stripe, stripe:-stripe] = BLUE
    img[-stripe:, stripe:-stripe] = BLUE
    return img


def close(pixel: Image, color: tuple[int, int, int], tol: int = 2) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(color)) <= tol))


def test_fit_keeps_aspect_ratio_and_centres_with_bars_for_a_wider_source() -> None:
    scaled, (dx, dy) = fit_into(solid(640, 360, RED), 320, 320, "fit")
    assert scaled.shape == (180, 320, 3) and (dx, dy) == (0, 70)


def test_fit_keeps_aspect_ratio_and_centres_with_bars_for_a_taller_source() -> None:
    scaled, (dx, dy) = fit_into(solid(360, 640, RED), 320, 320, "fit")
    assert scaled.shape == (320, 180, 3) and (dx, dy) == (70, 0)


def test_fill_covers_the_rectangle_and_crops_the_sides_of_a_wider_source() -> None:
    # 400x100 source into 100x100: only the centre 100x100 is kept, so the red side stripes
    # (10 px wide) are cut off while the blue top and bottom stripes stay.
    scaled, offset = fit_into(striped(400, 100, 10), 100, 100, "fill")
    assert scaled.shape == (100, 100, 3) and offset == (0, 0)
    assert close(scaled[50, 0], WHITE) and close(scaled[50, 99], WHITE)
    assert close(scaled[2, 50], BLUE) and close(scaled[97, 50], BLUE)


def test_fill_crops_top_and_bottom_of_a_taller_source() -> None:
    scaled, _ = fit_into(striped(100, 400, 10), 100, 100, "fill")
    assert close(scaled[0, 50], WHITE) and close(scaled[99, 50], WHITE)
    assert close(scaled[50, 2], RED) and close(scaled[50, 97], RED)


def test_solid_inputs_land_in_their_template_rectangles() -> None:
    canvas = Canvas(640, 360, background_color=(9, 9, 9))
    colors = [RED, GREEN, BLUE, WHITE]
    placements = template_layout(3, ["a", "b", "c", "d"], 640, 360)
    out = compose(canvas, [(p, solid(160, 90, c)) for p, c in zip(placements, colors, strict=True)])
    for p, c in zip(placements, colors, strict=True):
        r = p.rect
        tile = out[r.y : r.bottom, r.x : r.right]
        assert (tile == np.array(c, np.uint8)).all(), (p.key, r)


def test_fit_leaves_black_bars_inside_the_rectangle_over_the_background() -> None:
    canvas = Canvas(400, 200, background_color=(0, 80, 0))
    place = Placement("a", Rect(100, 0, 200, 200), crop_mode="fit")
    out = compose(canvas, [(place, solid(200, 100, RED))])
    assert close(out[100, 200], RED)
    assert close(out[10, 200], (0, 0, 0)) and close(out[190, 200], (0, 0, 0))  # bars
    assert close(out[100, 50], (0, 80, 0)) and close(out[100, 350], (0, 80, 0))  # background


def test_the_higher_z_wins_where_placements_overlap_whatever_the_list_order() -> None:
    canvas = Canvas(100, 100)
    high = Placement("high", Rect(0, 0, 60, 60), z=2)
    low = Placement("low", Rect(40, 40, 60, 60), z=1)
    out = compose(canvas, [(high, solid(60, 60, RED)), (low, solid(60, 60, BLUE))])
    assert close(out[50, 50], RED)
    assert close(out[80, 80], BLUE)


def test_alpha_half_blends_to_the_mean_and_zero_is_invisible() -> None:
    canvas = Canvas(10, 10, background_color=(100, 100, 100))
    half = Placement("a", Rect(0, 0, 5, 10), alpha=0.5)
    none = Placement("b", Rect(5, 0, 5, 10), alpha=0.0)
    out = compose(canvas, [(half, solid(5, 10, (200, 0, 50))), (none, solid(5, 10, RED))])
    assert out[5, 2].tolist() == [150, 50, 75]
    assert out[5, 7].tolist() == [100, 100, 100]


def test_a_cut_out_shows_only_the_chosen_region_of_the_source() -> None:
    source = solid(200, 100, RED)
    source[20:60, 100:180] = GREEN  # an 80x40 green region in a red picture
    place = Placement("a", Rect(0, 0, 160, 80), crop_mode="fill", source_crop=Rect(100, 20, 80, 40))
    out = compose(Canvas(160, 80), [(place, source)])
    assert (out == np.array(GREEN, np.uint8)).all()


def test_a_cut_out_past_the_source_is_clipped_and_one_outside_paints_nothing() -> None:
    source = solid(100, 100, RED)
    partly = Placement("a", Rect(0, 0, 10, 10), source_crop=Rect(90, 90, 50, 50))
    outside = Placement("b", Rect(10, 0, 10, 10), source_crop=Rect(200, 200, 5, 5))
    out = compose(Canvas(20, 10), [(partly, source), (outside, source)])
    assert close(out[5, 5], RED)
    assert (out[:, 10:] == 0).all()


def test_rectangles_past_the_canvas_are_clipped() -> None:
    canvas = Canvas(100, 100)
    source = solid(100, 100, BLUE)
    source[:, :50] = RED  # left half red, right half blue
    place = Placement("a", Rect(-50, 50, 100, 100))  # only its right-top quarter is visible
    out = compose(canvas, [(place, source)])
    assert (out[50:, :50] == np.array(BLUE, np.uint8)).all()
    assert (out[:50] == 0).all() and (out[:, 50:] == 0).all()
    off = compose(canvas, [(Placement("b", Rect(200, 0, 10, 10)), source)])
    assert (off == 0).all()


def test_the_background_image_shows_where_no_input_is() -> None:
    background = striped(320, 180, 20)
    canvas = Canvas(640, 360, background_color=GREEN, background_image=background)
    out = compose(canvas, [(Placement("a", Rect(200, 100, 240, 160)), solid(24, 16, RED))])
    assert close(out[180, 320], RED)
    assert close(out[180, 5], RED)  # background's left stripe, scaled x2
    assert close(out[5, 320], BLUE)  # background's top stripe
    assert close(out[60, 100], WHITE)


def test_a_background_image_with_another_aspect_is_filled_or_stretched() -> None:
    background = striped(200, 100, 10)  # 2:1 onto 1:1
    filled = Canvas(100, 100, background_image=background).blank()
    stretched = Canvas(100, 100, background_image=background, background_scale="stretch").blank()
    assert close(filled[50, 2], WHITE)  # side stripes cropped away
    assert close(stretched[50, 2], RED)


def test_an_input_without_a_frame_is_skipped() -> None:
    out = compose(
        Canvas(10, 10, background_color=BLUE), [(Placement("a", Rect(0, 0, 10, 10)), None)]
    )
    assert (out == np.array(BLUE, np.uint8)).all()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("none", None), ("black", (0, 0, 0)), ("last", RED), ("image", GREEN)],
)
def test_patch_frame_gives_what_each_patch_mode_shows(
    mode: PatchMode, expected: tuple[int, int, int] | None
) -> None:
    patched = patch_frame(mode, solid(4, 4, RED), solid(4, 4, GREEN), 8, 6)
    if expected is None:
        assert patched is None
    else:
        assert isinstance(patched, np.ndarray) and close(patched[0, 0], expected)


def test_patch_frame_falls_back_to_black_without_a_last_frame_or_image() -> None:
    for mode in ("last", "image"):
        patched = patch_frame(mode, None, None, 8, 6)
        assert isinstance(patched, np.ndarray)
        assert patched.shape == (6, 8, 3) and not patched.any()


def yuv420p(picture: Image) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")


def test_a_decoded_yuv420p_frame_composes_like_the_same_rgb_picture() -> None:
    source = striped(320, 180, 20)
    placements = template_layout(3, ["a", "b", "c"], 640, 360, crop_mode="fill")
    from_rgb = compose(Canvas(640, 360), [(p, source) for p in placements])
    from_yuv = compose(Canvas(640, 360), [(p, yuv420p(source)) for p in placements])
    diff = np.abs(from_rgb.astype(int) - from_yuv.astype(int))
    assert np.median(diff) <= 2  # colour conversion rounding; stripe edges differ more
    assert close(from_yuv[90, placements[0].rect.w // 2], WHITE, tol=4)


def test_a_cut_out_of_a_yuv420p_frame_shows_only_the_chosen_region() -> None:
    source = solid(200, 100, RED)
    source[20:60, 100:180] = GREEN
    place = Placement("a", Rect(0, 0, 160, 80), crop_mode="fill", source_crop=Rect(100, 20, 80, 40))
    frame = yuv420p(source)
    green_after_yuv = frame.to_ndarray(format="rgb24")[40, 140]  # pure green is out of gamut
    out = compose(Canvas(160, 80), [(place, frame)])
    # the outermost rows and columns carry chroma bleeding from the red around the region,
    # as the uncut frame does: subsampled chroma is interpolated
    assert (np.abs(out[8:-8, 8:-8].astype(int) - green_after_yuv.astype(int)) <= 2).all()


def test_frames_in_other_pixel_formats_are_cut_through_rgb() -> None:
    source = solid(64, 32, RED)
    source[:, 32:] = BLUE
    frame = av.VideoFrame.from_ndarray(source, format="rgb24").reformat(format="yuv444p")
    place = Placement("a", Rect(0, 0, 16, 16), crop_mode="fill", source_crop=Rect(33, 0, 31, 32))
    out = compose(Canvas(16, 16), [(place, frame)])
    assert close(out[8, 8], BLUE, tol=4)


def test_the_docs_preview_paints_each_input_in_its_own_colour_in_its_cell() -> None:
    frame = render_template_preview(3, 5, 320, 180)
    for i, p in enumerate(template_layout(3, [str(k + 1) for k in range(5)], 320, 180)):
        assert close(frame[p.rect.bottom - 2, p.rect.right - 2], PALETTE[i])


def test_the_docs_zego_preview_paints_the_large_region_and_each_small_one_in_its_colour() -> None:
    frame = render_zego_preview("horizontal", 4, 320, 180, main_key="3")
    for p in zego_layout("horizontal", ["1", "2", "3", "4"], 320, 180, main_key="3"):
        r = p.rect
        x, y = (r.x + r.w // 2, r.bottom - 2) if p.key == "3" else (r.right - 2, r.bottom - 2)
        assert close(frame[y, x], colour_of(p.key)), p
