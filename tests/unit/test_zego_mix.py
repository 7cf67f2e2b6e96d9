"""ZEGO MixConfig and UpdateLayout bodies into cloudrec's mix spec, and what the worker and
the mixer make of ZEGO's layouts (MixMode 2-5, MixMaxResolutionStreamId, FillMode, up to 25
MixInputList views)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from cloudrec.api.zego.schemas import parse_layout, parse_mix
from cloudrec.core.errors import CloudrecError
from cloudrec.core.mixing import MixSpec
from cloudrec.core.tasks import Media
from cloudrec.media.compositor.layout import Placement, Rect
from cloudrec.media.recorder.mixer import Mixer
from cloudrec.media.recorder.mixinput import InputReader
from cloudrec.media.recorder.mixpipe import large_region_key


def mix(**over: Any) -> MixSpec:
    raw = {
        "MixOutputStreamId": "out",
        "MixOutputVideoConfig": {"Width": 640, "Height": 360, "Fps": 15, "Bitrate": 500_000},
        **over,
    }
    return parse_mix(raw, Media.AUDIO_VIDEO, "room")


def view(n: int, layer: int) -> dict[str, int]:
    return {"Top": 0, "Left": 20 * n, "Bottom": 40, "Right": 20 * n + 20, "Layer": layer}


@pytest.mark.parametrize(
    ("mode", "layout"), [(2, "grid"), (3, "horizontal"), (4, "vertical"), (5, "floating")]
)
def test_mix_modes_2_to_5_are_zegos_own_layouts_not_jocloud_templates(
    mode: int, layout: str
) -> None:
    spec = mix(MixMode=mode)
    assert (spec.auto_layout, spec.template_id, spec.inputs) == (layout, None, ())
    assert spec.extra["MixMode"] == mode


def test_mix_mode_defaults_to_the_grid_and_fill_mode_to_crop() -> None:
    spec = mix()
    assert (spec.auto_layout, spec.crop, spec.main_stream_id) == ("grid", "fill", None)


def test_fill_mode_2_scales_the_regions_to_fit() -> None:
    assert mix(MixMode=3, FillMode=2).crop == "fit"
    with pytest.raises(CloudrecError, match=r"FillMode must be in \[1, 2\], not 3"):
        mix(FillMode=3)


@pytest.mark.parametrize("mode", [3, 4, 5])
def test_mix_max_resolution_stream_id_names_the_large_region_of_modes_3_to_5(mode: int) -> None:
    assert mix(MixMode=mode, MixMaxResolutionStreamId="cam-2").main_stream_id == "cam-2"


def test_mix_max_resolution_stream_id_is_a_stream_id_and_means_nothing_to_modes_1_and_2() -> None:
    with pytest.raises(CloudrecError, match=r"MixMaxResolutionStreamId 'a b' must be 1 to 128"):
        mix(MixMode=3, MixMaxResolutionStreamId="a b")
    assert mix(MixMode=2, MixMaxResolutionStreamId="cam-2").main_stream_id is None
    custom = mix(MixMode=1, MixInputList=[view(0, 1)], MixMaxResolutionStreamId="cam-2")
    assert custom.main_stream_id is None and custom.auto_layout is None


def test_up_to_25_views_keep_their_layer_order_as_ranks_0_to_24() -> None:
    layers = [(n * 7) % 25 - 12 for n in range(25)]  # 25 distinct layers, any integers
    spec = mix(MixMode=1, MixInputList=[view(n, layer) for n, layer in enumerate(layers)])
    ranks = {i.box.x // 20: i.z for i in spec.inputs if i.box is not None}
    assert sorted(ranks.values()) == list(range(25))
    assert sorted(range(25), key=lambda n: ranks[n]) == sorted(range(25), key=lambda n: layers[n])
    with pytest.raises(CloudrecError, match="has 26 views; at most 25 are allowed"):
        mix(MixMode=1, MixInputList=[view(n % 25, 1) for n in range(26)])


def test_update_layout_describes_the_whole_layout_and_names_its_own_fields() -> None:
    fields = parse_layout({"MixMode": 5, "MixMaxResolutionStreamId": "s1"}, "", "room", 640, 360)
    assert (fields["auto_layout"], fields["main_stream_id"]) == ("floating", "s1")
    # No MixMaxResolutionStreamId: the large region goes back to the first to join.
    assert parse_layout({"MixMode": 3}, "", "room", 640, 360)["main_stream_id"] is None
    assert parse_layout({}, "", "room", 640, 360)["auto_layout"] == "grid"
    with pytest.raises(CloudrecError, match=r"^MixMode must be in \[1, 5\], not 6$"):
        parse_layout({"MixMode": 6}, "", "room", 640, 360)
    with pytest.raises(CloudrecError, match=r"^MixInputList must be a non-empty array"):
        parse_layout({"MixMode": 1}, "", "room", 640, 360)


def test_the_new_fields_survive_the_task_row_and_old_rows_load_without_them() -> None:
    spec = mix(MixMode=4, MixMaxResolutionStreamId="cam-2", FillMode=2)
    assert MixSpec.from_json(spec.to_json()) == spec
    old = spec.to_json()
    for key in ("auto_layout", "main_stream_id", "crop"):
        del old[key]
    loaded = MixSpec.from_json(old)
    assert (loaded.auto_layout, loaded.main_stream_id, loaded.crop) == (None, None, "fill")


def test_the_worker_keys_the_large_region_by_user_and_a_stream_never_seen_by_no_input() -> None:
    seen = {"s1": "room/u1", "s2": "room/u2"}  # a stream that left stays here
    spec = mix(MixMode=3, MixMaxResolutionStreamId="s2")
    assert large_region_key(spec, "room", seen) == "room/u2"
    assert large_region_key(spec, "room", {"s1": "room/u1"}) == "room/s:s2"  # never published
    assert large_region_key(mix(MixMode=3), "room", seen) is None  # the first to join


def mixer_layers(spec: MixSpec, keys: list[str], main_key: str | None = None) -> list[Any]:
    mixer = Mixer(spec, [], {}, lambda out, ms: 0, lambda file_id, fields: None)
    mixer.main_key = main_key
    readers = [InputReader(k, f"rtmp://x/{k}") for k in keys]  # not started
    return mixer._layers(spec, readers, {}, keys)


def test_the_mixer_draws_auto_layouts_with_the_main_key_in_the_large_region() -> None:
    spec = mix(MixMode=3)
    keys = ["room/u1", "room/u2", "room/u3"]
    placements = [p for p, _ in mixer_layers(spec, keys, "room/u2")]
    assert placements[0].key == "room/u2" and placements[0].rect == Rect(0, 44, 640, 316)
    assert [p.key for p in placements[1:]] == ["room/u1", "room/u3"]
    missing = [p for p, _ in mixer_layers(spec, keys, "room/s:gone")]
    assert [p.key for p in missing] == keys and all(p.rect.h == 44 for p in missing)


def test_the_mixer_stacks_25_custom_views_by_their_ranked_layers() -> None:
    """Regression: ZEGO's ranks past 16 were refused by JoCloud's zOrder check in the mixer."""
    layers = [(n * 7) % 25 for n in range(25)]
    spec = mix(MixMode=1, MixInputList=[view(n, layer) for n, layer in enumerate(layers)])
    placements = [p for p, _ in mixer_layers(spec, [])]
    assert len(placements) == 25
    assert [p.z for p in placements] == list(range(25))


def test_a_stream_whose_ended_reader_was_replaced_before_it_left_keeps_its_last_picture() -> None:
    """Regression (the e2e FillBlank test's one-in-two failure): the room still listed a
    stream whose pull had ended, so the mixer started a new reader for it; the stream then
    left and the new reader, which never showed a picture, was what the mixer kept: the
    departed view showed the background instead of its last picture."""
    spec = dataclasses.replace(mix(), fill_blank=True, frame_fill=1)
    mixer = Mixer(spec, [], {}, lambda out, ms: 0, lambda file_id, fields: None)
    old = InputReader("room/u1", "rtmp://127.0.0.1:1/live/u1")  # never started
    picture = object()
    old.buffer.shown = picture
    old.ended.set()
    mixer.inputs["room/u1"], mixer.order = old, ["room/u1"]
    mixer.update(spec, {"room/u1": old.url})  # still in the room: a new reader replaces it
    new = mixer.inputs["room/u1"]
    assert new is not old
    new.stop()
    new.join(10)
    mixer.update(spec, {})  # and now it has left
    placement = Placement(key="room/u1", rect=Rect(0, 0, 320, 180))
    assert mixer._stand_in(spec, placement, None, None) is picture
    # A reader that is live but has no picture yet (camera off) shows it too.
    assert mixer._stand_in(spec, placement, new, None) is picture


def test_a_zego_mix_lays_out_streams_and_is_named_by_its_output_stream_id() -> None:
    spec = mix()
    assert (spec.by_stream, spec.output_id) == (True, "out")
    assert "MixOutputStreamId" not in spec.extra  # a field now, not a vendor word in extra
