"""Layout geometry: the five JoCloud templates and custom layouts."""

from __future__ import annotations

import itertools

import pytest

from cloudrec.media.compositor.layout import (
    CustomInput,
    Placement,
    Rect,
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
