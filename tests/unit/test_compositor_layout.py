"""Layout geometry: the five JoCloud templates, ZEGO's four layouts and custom layouts."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from cloudrec.media.compositor.layout import (
    ZEGO_LAYOUTS,
    AutoLayout,
    CropMode,
    CustomInput,
    Placement,
    Rect,
    auto_layout,
    custom_layout,
    template_layout,
)

W, H = 1280, 720


def keys(n: int) -> list[str]:
    return [f"room/u{i}" for i in range(n)]


def rects(template_id: int, n: int, width: int = W, height: int = H) -> list[Rect]:
    return [p.rect for p in template_layout(template_id, keys(n), width, height)]


@pytest.mark.parametrize("template_id", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize(("width", "height"), [(1280, 720), (640, 480), (360, 640), (1916, 1080)])
def test_every_template_tile_is_inside_the_canvas_with_even_position_and_size(
    template_id: int, n: int, width: int, height: int
) -> None:
    for r in rects(template_id, n, width, height):
        assert r.x >= 0 and r.y >= 0 and r.right <= width and r.bottom <= height, r
        assert r.x % 2 == r.y % 2 == r.w % 2 == r.h % 2 == 0, r


@pytest.mark.parametrize("template_id", [1, 2, 3, 5])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_tiling_templates_never_overlap(template_id: int, n: int) -> None:
    for a, b in itertools.combinations(rects(template_id, n), 2):
        assert a.intersection(b) is None, (a, b)


@pytest.mark.parametrize("n", range(17))
def test_every_template_gives_one_placement_per_key_up_to_16_and_5_for_template_5(n: int) -> None:
    for template_id in (1, 2, 3, 4):
        placements = template_layout(template_id, keys(n), W, H)
        assert [p.key for p in placements] == keys(n)
    assert [p.key for p in template_layout(5, keys(n), W, H)] == keys(min(n, 5))


def test_template_1_puts_equal_full_height_columns_side_by_side() -> None:
    assert rects(1, 2) == [Rect(0, 0, 640, 720), Rect(640, 0, 640, 720)]
    # 1280 / 3 = 426.7 -> 426 px columns; the 2 px left over are split evenly: 0 left, 2 right
    assert rects(1, 3) == [Rect(0, 0, 426, 720), Rect(426, 0, 426, 720), Rect(852, 0, 426, 720)]


def test_template_2_stacks_equal_full_width_rows() -> None:
    assert rects(2, 2) == [Rect(0, 0, 1280, 360), Rect(0, 360, 1280, 360)]
    assert rects(2, 3) == [Rect(0, 0, 1280, 240), Rect(0, 240, 1280, 240), Rect(0, 480, 1280, 240)]


def test_template_3_makes_a_square_ish_grid_and_centres_the_last_row() -> None:
    assert rects(3, 1) == [Rect(0, 0, 1280, 720)]
    assert rects(3, 4) == [
        Rect(0, 0, 640, 360),
        Rect(640, 0, 640, 360),
        Rect(0, 360, 640, 360),
        Rect(640, 360, 640, 360),
    ]
    # 5 inputs: 3 columns, 2 rows; the 2 cells of the last row are centred
    five = rects(3, 5)
    assert [r.w for r in five] == [426] * 5 and [r.h for r in five] == [360] * 5
    assert [r.y for r in five] == [0, 0, 0, 360, 360]
    assert five[3].x == (1280 - 2 * 426) // 2 and five[4].x == five[3].x + 426


def test_template_4_covers_the_canvas_with_the_first_and_corners_the_rest_above_it() -> None:
    placements = template_layout(4, keys(6), W, H)
    assert placements[0].rect == Rect(0, 0, 1280, 720)
    assert [p.rect for p in placements[1:]] == [
        Rect(960, 540, 320, 180),
        Rect(640, 540, 320, 180),
        Rect(320, 540, 320, 180),
        Rect(0, 540, 320, 180),
        Rect(960, 360, 320, 180),  # fifth small tile wraps to the row above
    ]
    assert all(p.z > placements[0].z for p in placements[1:])


def test_template_5_has_a_main_tile_on_the_left_and_a_column_of_four_on_the_right() -> None:
    assert rects(5, 1) == [Rect(0, 0, 1280, 720)]
    assert rects(5, 7) == [
        Rect(0, 0, 960, 720),
        Rect(960, 0, 320, 180),
        Rect(960, 180, 320, 180),
        Rect(960, 360, 320, 180),
        Rect(960, 540, 320, 180),
    ]


def test_no_inputs_give_no_placements() -> None:
    assert all(template_layout(t, [], W, H) == [] for t in (1, 2, 3, 4, 5))


def test_unknown_templates_and_more_than_16_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"template id must be one of 1\.\.5, got 6"):
        template_layout(6, keys(1), W, H)
    with pytest.raises(ValueError, match="at most 16 inputs, got 17"):
        template_layout(3, keys(17), W, H)


def test_templates_apply_the_requested_crop_mode() -> None:
    assert {p.crop_mode for p in template_layout(3, keys(3), W, H)} == {"fill"}
    assert {p.crop_mode for p in template_layout(3, keys(3), W, H, crop_mode="fit")} == {"fit"}


def test_custom_layout_maps_jocloud_fields_and_orders_by_z_order() -> None:
    top = CustomInput(
        key="r/b",
        layout_x=400,
        layout_y=300,
        layout_w=200,
        layout_h=150,
        z_order=1,
        crop=1,
        crop_x=10,
        crop_y=20,
        crop_w=100,
        crop_h=50,
        alpha=0.5,
    )
    bottom = CustomInput(key="r/a", layout_x=0, layout_y=0, layout_w=640, layout_h=360)
    assert custom_layout([top, bottom]) == [
        Placement("r/a", Rect(0, 0, 640, 360), z=0, crop_mode="fit"),
        Placement("r/b", Rect(400, 300, 200, 150), 1, "fill", Rect(10, 20, 100, 50), 0.5),
    ]


def test_custom_layout_keeps_request_order_for_equal_z_order() -> None:
    a = CustomInput(key="a", layout_x=0, layout_y=0, layout_w=10, layout_h=10, z_order=2)
    b = CustomInput(key="b", layout_x=0, layout_y=0, layout_w=10, layout_h=10, z_order=2)
    assert [p.key for p in custom_layout([a, b])] == ["a", "b"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"layout_w": 0}, "layoutW and layoutH must be positive"),
        ({"z_order": 17}, r"zOrder must be in \[0, 16\]"),
        ({"crop": 2}, "crop must be 0 or 1"),
        ({"crop_x": 1}, "give all of cropX, cropY, cropW, cropH or none"),
        ({"crop_x": 0, "crop_y": 0, "crop_w": 0, "crop_h": 5}, "cropW and cropH must be positive"),
        ({"alpha": 1.5}, r"alpha must be in \[0, 1\]"),
    ],
)
def test_custom_inputs_out_of_range_are_rejected(fields: dict[str, int], message: str) -> None:
    base: dict[str, int] = {"layout_x": 0, "layout_y": 0, "layout_w": 10, "layout_h": 10}
    with pytest.raises(ValueError, match=message):
        CustomInput(key="k", **(base | fields))


# -- ZEGO's layouts (MixMode 2-5) ------------------------------------------------------------
ZEGO_SIZES = [(1280, 720), (640, 360), (360, 640), (1916, 1080), (1920, 1080)]
BANDS = ("horizontal", "vertical", "floating")


def zego(layout: AutoLayout, n: int, width: int = W, height: int = H, **kw: Any) -> list[Placement]:
    return auto_layout(layout, keys(n), width, height, **kw)


def large_and_small(placements: list[Placement]) -> tuple[Placement, list[Placement]]:
    """The large region (the biggest) and the others, checking the large one is unique."""
    by_area = sorted(placements, key=lambda p: p.rect.w * p.rect.h, reverse=True)
    if len(by_area) > 1:
        assert by_area[0].rect.w * by_area[0].rect.h > by_area[1].rect.w * by_area[1].rect.h
    return by_area[0], by_area[1:]


@pytest.mark.parametrize("layout", ZEGO_LAYOUTS)
@pytest.mark.parametrize("n", range(1, 26))
@pytest.mark.parametrize(("width", "height"), ZEGO_SIZES)
def test_every_zego_region_is_inside_the_canvas_with_even_position_and_size(
    layout: AutoLayout, n: int, width: int, height: int
) -> None:
    placements = zego(layout, n, width, height)
    assert sorted(p.key for p in placements) == sorted(keys(n))
    for p in placements:
        r = p.rect
        assert r.x >= 0 and r.y >= 0 and r.right <= width and r.bottom <= height, (p, n)
        assert r.x % 2 == r.y % 2 == r.w % 2 == r.h % 2 == 0, r


@pytest.mark.parametrize("layout", ["grid", "horizontal", "vertical"])
@pytest.mark.parametrize("n", range(1, 26))
@pytest.mark.parametrize(("width", "height"), ZEGO_SIZES)
def test_zego_regions_never_overlap_except_in_floating(
    layout: AutoLayout, n: int, width: int, height: int
) -> None:
    for a, b in itertools.combinations(zego(layout, n, width, height), 2):
        assert a.rect.intersection(b.rect) is None, (a, b)


@pytest.mark.parametrize("n", range(2, 26))
def test_floating_small_regions_lie_over_the_whole_canvas_and_never_over_each_other(
    n: int,
) -> None:
    large, small = large_and_small(zego("floating", n))
    assert large.rect == Rect(0, 0, W, H) and large.z == 0
    assert {p.rect.w for p in small} == {160} and {p.rect.h for p in small} == {90}
    assert all(p.z == 1 for p in small)
    for a, b in itertools.combinations(small, 2):
        assert a.rect.intersection(b.rect) is None, (a, b)


@pytest.mark.parametrize("layout", BANDS)
@pytest.mark.parametrize("n", range(1, 26))
def test_the_first_to_join_gets_the_large_region_scaled_to_fit_the_others_equal_small_ones(
    layout: AutoLayout, n: int
) -> None:
    large, small = large_and_small(zego(layout, n))
    assert large.key == keys(n)[0] and large.crop_mode == "fit"
    assert [p.key for p in small] == keys(n)[1:]  # in the order they joined
    assert len({(p.rect.w, p.rect.h) for p in small}) <= 1
    assert {p.crop_mode for p in small} <= {"fill"}


@pytest.mark.parametrize("layout", BANDS)
@pytest.mark.parametrize("n", [2, 3, 9, 17, 25])
def test_the_main_key_takes_the_large_region_and_the_rest_keep_their_order(
    layout: AutoLayout, n: int
) -> None:
    main = keys(n)[1]
    placements = zego(layout, n, main_key=main)
    large, small = large_and_small(placements)
    assert large.key == main
    assert large.rect == large_and_small(zego(layout, n))[0].rect  # the same region
    assert [p.key for p in small] == [k for k in keys(n) if k != main]


@pytest.mark.parametrize("layout", BANDS)
@pytest.mark.parametrize("n", [1, 2, 8, 16, 24, 25])
def test_a_main_key_that_is_not_publishing_leaves_the_large_region_to_the_background(
    layout: AutoLayout, n: int
) -> None:
    placements = zego(layout, n, main_key="room/absent")
    assert [p.key for p in placements] == keys(n)[:24]  # every one of them in a small region
    # The same small regions as when the main stream publishes, and nothing in the large one.
    present = auto_layout(layout, ["room/main", *keys(min(n, 24))], W, H, main_key="room/main")
    assert [p.rect for p in placements] == [p.rect for p in present[1:]]
    large = present[0].rect
    assert all(p.rect != large for p in placements)
    if layout != "floating":
        assert all(p.rect.intersection(large) is None for p in placements)


@pytest.mark.parametrize("crop_mode", ["fill", "fit"])
def test_fill_mode_applies_to_grid_cells_and_small_regions_never_to_the_large_one(
    crop_mode: CropMode,
) -> None:
    assert {p.crop_mode for p in zego("grid", 7, crop_mode=crop_mode)} == {crop_mode}
    for layout in BANDS:
        large, small = large_and_small(zego(layout, 7, crop_mode=crop_mode))
        assert large.crop_mode == "fit" and {p.crop_mode for p in small} == {crop_mode}


GRID_SHAPES = [(1, 1, 1), (2, 2, 1), (3, 2, 2), (4, 2, 2), (5, 3, 2), (6, 3, 2), (7, 3, 3)]
GRID_SHAPES += [(9, 3, 3), (10, 4, 3), (12, 4, 3), (13, 4, 4), (16, 4, 4), (17, 5, 4)]
GRID_SHAPES += [(20, 5, 4), (21, 5, 5), (25, 5, 5)]


@pytest.mark.parametrize(("n", "cols", "rows"), GRID_SHAPES)
def test_the_zego_grid_adds_a_column_before_a_row_and_fills_row_by_row(
    n: int, cols: int, rows: int
) -> None:
    cells = [p.rect for p in zego("grid", n)]
    cw, ch = (W // cols) // 2 * 2, (H // rows) // 2 * 2
    assert {(r.w, r.h) for r in cells} == {(cw, ch)}
    x0, y0 = cells[0].x, cells[0].y
    # Row by row from the top-left; the cells of a short last row stay in their columns and
    # the ones not taken show the background.
    assert [((r.x - x0) // cw, (r.y - y0) // ch) for r in cells] == [
        (i % cols, i // cols) for i in range(n)
    ]


@pytest.mark.parametrize(("width", "height"), ZEGO_SIZES)
def test_the_zego_grid_is_centred_on_the_canvas_to_the_pixel(width: int, height: int) -> None:
    """Regression (issue 12): a grid shifted 2 px off centre passed the 1251 geometry cases,
    none of which looked at the margins.  The margins left and right (top and bottom) are
    equal, or the far one is 2 px wider when the leftover is not a multiple of 4 (positions
    are even)."""
    for n in range(1, 26):
        cells = [p.rect for p in zego("grid", n, width, height)]
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        left, top = min(r.x for r in cells), min(r.y for r in cells)
        cw, ch = cells[0].w, cells[0].h
        right, bottom = width - (left + cols * cw), height - (top + rows * ch)
        assert right - left in (0, 2) and left % 2 == 0, (n, width, left, right)
        assert bottom - top in (0, 2) and top % 2 == 0, (n, height, top, bottom)


def test_the_zego_grid_shows_the_first_25() -> None:
    assert [p.key for p in zego("grid", 30)] == keys(25)


def test_horizontal_puts_the_large_region_on_the_bottom_and_rows_of_eight_on_top() -> None:
    five = [p.rect for p in zego("horizontal", 5)]
    assert five[0] == Rect(0, 90, 1280, 630)
    assert five[1:] == [Rect(160 * i, 0, 160, 90) for i in range(4)]
    seventeen = [p.rect for p in zego("horizontal", 17)]
    assert seventeen[0] == Rect(0, 180, 1280, 540)  # two rows: the large region shrinks
    assert seventeen[9:] == [Rect(160 * i, 90, 160, 90) for i in range(8)]


def test_horizontal_past_two_rows_goes_down_the_right_edge_with_smaller_regions() -> None:
    placements = [p.rect for p in zego("horizontal", 25)]
    tw, th = 142, 80  # even(1280 / 9), even(720 / 9)
    assert placements[1:17] == [Rect(tw * (i % 8), th * (i // 8), tw, th) for i in range(16)]
    assert placements[17:] == [Rect(1280 - tw, th * j, tw, th) for j in range(8)]
    assert placements[0] == Rect(0, 2 * th, 1280 - tw, 720 - 2 * th)


def test_vertical_puts_the_large_region_on_the_left_and_columns_of_eight_on_the_right() -> None:
    five = [p.rect for p in zego("vertical", 5)]
    assert five[0] == Rect(0, 0, 1120, 720)
    assert five[1:] == [Rect(1120, 90 * i, 160, 90) for i in range(4)]
    seventeen = [p.rect for p in zego("vertical", 17)]
    assert seventeen[0] == Rect(0, 0, 960, 720)  # two columns: the large region shrinks
    assert seventeen[9:] == [Rect(960, 90 * i, 160, 90) for i in range(8)]


def test_vertical_past_two_columns_goes_along_the_bottom_edge_with_smaller_regions() -> None:
    placements = [p.rect for p in zego("vertical", 25)]
    tw, th = 142, 80
    right = 1280 - tw
    assert placements[1:17] == [
        Rect(right - tw * (i // 8), th * (i % 8), tw, th) for i in range(16)
    ]
    assert placements[17:] == [Rect(tw * j, 720 - th, tw, th) for j in range(8)]
    assert placements[0] == Rect(0, 0, right - tw, 720 - th)


def test_floating_starts_in_the_bottom_right_corner_and_goes_left_then_up() -> None:
    small = [p.rect for p in zego("floating", 25)[1:]]
    assert small == [
        Rect(1280 - 160 * (i % 8 + 1), 720 - 90 * (i // 8 + 1), 160, 90) for i in range(24)
    ]


def test_a_single_input_covers_the_canvas_in_every_auto_layout() -> None:
    for layout in ZEGO_LAYOUTS:
        assert [p.rect for p in zego(layout, 1)] == [Rect(0, 0, W, H)]


def test_more_than_25_keys_show_the_main_one_and_the_first_24_others() -> None:
    placements = zego("horizontal", 30, main_key=keys(30)[27])
    assert [p.key for p in placements] == [keys(30)[27], *keys(24)]


def test_no_keys_give_no_zego_placements_and_unknown_layouts_are_rejected() -> None:
    assert all(zego(layout, 0) == [] for layout in ZEGO_LAYOUTS)
    assert zego("horizontal", 0, main_key="room/absent") == []
    with pytest.raises(ValueError, match="ZEGO layout must be one of grid, horizontal"):
        auto_layout("diagonal", keys(1), W, H)  # type: ignore[arg-type]
