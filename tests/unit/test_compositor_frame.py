"""Compositing, checked by pixels on solid-colour and striped generated pictures.

The compositor paints in yuv420p; each output is looked at as a player shows it, converted to
RGB (``to_rgb``). A colour that goes through yuv420p and back comes out within 2 units per
channel of what it was (BT.601 limited range rounding: pure red is 253, 0, 0), so exact
comparisons of the RGB era are ``close`` to the colour within 2, and chroma subsampling blurs
colour edges over one 2 x 2 block (pixels are sampled away from edges).
"""

from __future__ import annotations

import av
import numpy as np
import numpy.typing as npt
import pytest

from cloudrec.media.compositor.frame import (
    Canvas,
    PatchMode,
    Source,
    fit_into,
    patch_frame,
    to_rgb,
)
from cloudrec.media.compositor.frame import compose as compose_yuv
from cloudrec.media.compositor.layout import Placement, Rect, auto_layout, template_layout
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


def all_close(region: Image, color: tuple[int, int, int], tol: int = 2) -> bool:
    return bool(np.all(np.abs(region.astype(int) - np.array(color)) <= tol))


def compose(canvas: Canvas, layers: list[tuple[Placement, Source | None]]) -> Image:
    """The composed yuv420p frame as a player shows it."""
    frame = compose_yuv(canvas, layers)
    assert frame.format.name == "yuv420p" and (frame.width, frame.height) == (
        canvas.width,
        canvas.height,
    )
    return to_rgb(frame)


def test_fit_keeps_aspect_ratio_and_centres_with_bars_for_a_wider_source() -> None:
    scaled, (dx, dy) = fit_into(solid(640, 360, RED), 320, 320, "fit")
    assert (scaled.width, scaled.height, dx, dy) == (320, 180, 0, 70)


def test_fit_keeps_aspect_ratio_and_centres_with_bars_for_a_taller_source() -> None:
    scaled, (dx, dy) = fit_into(solid(360, 640, RED), 320, 320, "fit")
    assert (scaled.width, scaled.height, dx, dy) == (180, 320, 70, 0)


def test_fill_covers_the_rectangle_and_crops_the_sides_of_a_wider_source() -> None:
    # 400x100 source into 100x100: only the centre 100x100 is kept, so the red side stripes
    # (10 px wide) are cut off while the blue top and bottom stripes stay.
    frame, offset = fit_into(striped(400, 100, 10), 100, 100, "fill")
    scaled = to_rgb(frame)
    assert scaled.shape == (100, 100, 3) and offset == (0, 0)
    assert close(scaled[50, 0], WHITE) and close(scaled[50, 99], WHITE)
    assert close(scaled[2, 50], BLUE) and close(scaled[97, 50], BLUE)


def test_fill_crops_top_and_bottom_of_a_taller_source() -> None:
    scaled = to_rgb(fit_into(striped(100, 400, 10), 100, 100, "fill")[0])
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
        assert all_close(tile, c), (p.key, r)


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
    assert close(out[5, 1], (150, 50, 75))
    assert close(out[5, 8], (100, 100, 100))


def test_a_cut_out_shows_only_the_chosen_region_of_the_source() -> None:
    source = solid(200, 100, RED)
    source[20:60, 100:180] = GREEN  # an 80x40 green region in a red picture
    place = Placement("a", Rect(0, 0, 160, 80), crop_mode="fill", source_crop=Rect(100, 20, 80, 40))
    out = compose(Canvas(160, 80), [(place, source)])
    assert all_close(out, GREEN)


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
    assert all_close(out[50:, :50], BLUE)
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
    filled = to_rgb(Canvas(100, 100, background_image=background).blank())
    stretched = to_rgb(
        Canvas(100, 100, background_image=background, background_scale="stretch").blank()
    )
    assert close(filled[50, 2], WHITE)  # side stripes cropped away
    assert close(stretched[50, 2], RED)


def test_an_input_without_a_frame_is_skipped() -> None:
    out = compose(
        Canvas(10, 10, background_color=BLUE), [(Placement("a", Rect(0, 0, 10, 10)), None)]
    )
    assert all_close(out, BLUE)


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
    for p in auto_layout("horizontal", ["1", "2", "3", "4"], 320, 180, main_key="3"):
        r = p.rect
        x, y = (r.x + r.w // 2, r.bottom - 2) if p.key == "3" else (r.right - 2, r.bottom - 2)
        assert close(frame[y, x], colour_of(p.key)), p


def noise_yuv420p(w: int, h: int, seed: int) -> av.VideoFrame:
    """A yuv420p frame of random planes, as a decoder would hand one over."""
    rng = np.random.default_rng(seed)
    planar = rng.integers(16, 236, size=(h * 3 // 2, w), dtype=np.uint8)
    return av.VideoFrame.from_ndarray(planar, format="yuv420p")


def test_an_input_at_its_tile_size_reaches_the_output_planes_byte_for_byte() -> None:
    # No RGB round trip: a decoded picture that needs no scaling is copied plane by plane.
    frames = [noise_yuv420p(320, 180, seed) for seed in range(4)]
    placements = template_layout(3, ["a", "b", "c", "d"], 640, 360)
    out = compose_yuv(Canvas(640, 360), list(zip(placements, frames, strict=True)))
    got = out.to_ndarray()  # Y, then U, then V rows
    for p, frame in zip(placements, frames, strict=True):
        r, src = p.rect, frame.to_ndarray()
        assert np.array_equal(got[r.y : r.bottom, r.x : r.right], src[:180])
        for plane in (0, 1):  # U then V: each (h/2, w/2), stored as h/4 rows of w
            mine = got[360 + plane * 90 : 360 + (plane + 1) * 90].reshape(180, 320)
            theirs = src[180 + plane * 45 : 180 + (plane + 1) * 45].reshape(90, 160)
            region = mine[r.y // 2 : r.bottom // 2, r.x // 2 : r.right // 2]
            assert np.array_equal(region, theirs), (p.key, plane)


def test_odd_edges_move_to_the_even_pixel_at_or_before_them() -> None:
    # Rect x 5..14, y 3..10 -> painted at x 4..14, y 2..10 (chroma is 2 x 2 blocks).
    place = Placement("a", Rect(5, 3, 9, 7))
    out = compose(Canvas(20, 12, background_color=BLUE), [(place, solid(9, 7, RED))])
    painted = np.zeros((12, 20), dtype=bool)
    painted[2:10, 4:14] = True
    assert all_close(out[painted], RED)
    assert all_close(out[~painted], BLUE)


def test_odd_tiles_side_by_side_still_tile_without_a_gap() -> None:
    left, right = Placement("l", Rect(0, 0, 7, 8)), Placement("r", Rect(7, 0, 7, 8))
    layers: list[tuple[Placement, Source | None]] = [
        (left, solid(7, 8, RED)),
        (right, solid(7, 8, GREEN)),
    ]
    out = compose(Canvas(14, 8, background_color=BLUE), layers)
    assert all_close(out[:, :6], RED) and all_close(out[:, 6:14], GREEN)


def test_alpha_blends_in_every_plane_over_a_picture_not_just_a_colour() -> None:
    background = striped(64, 64, 16)  # red sides, blue top and bottom, white centre
    canvas = Canvas(64, 64, background_image=background)
    out = compose(canvas, [(Placement("a", Rect(0, 0, 64, 64), alpha=0.5), solid(64, 64, GREEN))])
    assert close(out[32, 4], (128, 128, 0), tol=3)  # red and green
    assert close(out[4, 32], (0, 128, 128), tol=3)  # blue and green
    assert close(out[32, 32], (128, 255, 128), tol=3)  # white and green


def test_an_odd_canvas_is_refused() -> None:
    with pytest.raises(ValueError, match="canvas size must be even"):
        Canvas(641, 360)


def test_a_picture_shown_again_is_not_scaled_again_and_a_new_one_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cloudrec.media.compositor.frame as frame_module

    scaled: list[int] = []
    real = frame_module.fit_into

    def counting(*args: object, **kwargs: object) -> object:
        scaled.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(frame_module, "fit_into", counting)
    canvas, place = Canvas(64, 36), Placement("a", Rect(0, 0, 32, 18))
    first, second = noise_yuv420p(64, 36, 1), yuv420p(solid(64, 36, RED))
    a = compose(canvas, [(place, first)])
    b = compose(canvas, [(place, first)])  # a 25 fps input in a 30 fps mix: shown twice
    assert len(scaled) == 1 and np.array_equal(a, b)
    c = compose(canvas, [(place, second)])
    assert len(scaled) == 2 and all_close(c[:18, :32], RED)
