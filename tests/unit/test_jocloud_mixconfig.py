"""JoCloud mixconfig validation: the document's ranges, roundings and spellings."""

from __future__ import annotations

import base64

import pytest

from cloudrec.api.jocloud import codes
from cloudrec.api.jocloud.mixconfig import parse_mixconfig
from cloudrec.core.errors import CloudrecError
from cloudrec.core.mixing import MixSpec
from cloudrec.core.tasks import Media


def _out(**over):
    o = {
        "streamtype": 0,
        "videowidth": 800,
        "videoheight": 600,
        "videobitrate": 600,
        "videofps": 24,
        "videogop": 72,
        "videoencode": 100,
    }
    o.update(over)
    return o


def test_the_documents_sample_mixconfig_parses_into_a_custom_layout():
    mix = parse_mixconfig(
        {
            "input": [
                {
                    "uid": "10266666",
                    "roomid": "abcabc",
                    "streamtype": 0,
                    "zOrder": 0,
                    "layoutX": 0,
                    "layoutY": 0,
                    "layoutH": 600,
                    "layoutW": 400,
                    "crop": 0,
                },
                {
                    "uid": "10277777",
                    "roomid": "efdefd",
                    "streamtype": 0,
                    "zOrder": 1,
                    "layoutX": 400,
                    "layoutY": 0,
                    "layoutH": 600,
                    "layoutW": 400,
                    "crop": 0,
                },
            ],
            "output": _out(),
        },
        "abcabc",
    )
    assert (mix.width, mix.height, mix.fps, mix.gop, mix.bitrate_kbps) == (800, 600, 24, 72, 600)
    assert [(i.user_id, i.room_id, i.z, i.box.x) for i in mix.inputs] == [
        ("10266666", "abcabc", 0, 0),
        ("10277777", "efdefd", 1, 400),
    ]
    assert MixSpec.from_json(mix.to_json()) == mix


def test_the_tables_intput_spelling_is_accepted_too():
    mix = parse_mixconfig(
        {
            "intput": [{"uid": "u", "layoutX": 0, "layoutY": 0, "layoutW": 10, "layoutH": 10}],
            "output": _out(),
        },
        "r",
    )
    assert mix.inputs[0].user_id == "u"


@pytest.mark.parametrize(
    ("over", "expect"),
    [
        ({"videowidth": 638, "videoheight": 358}, (640, 360, 24, 72)),
        ({"videowidth": 18, "videoheight": 17}, (20, 16, 24, 72)),
        ({"videofps": 75, "videogop": 100}, (800, 600, 60, 120)),
        ({"videofps": 24, "videogop": 50}, (800, 600, 24, 72)),
    ],
)
def test_sizes_round_to_multiples_of_4_fps_caps_at_60_and_gop_rounds_up(over, expect):
    mix = parse_mixconfig({"templateid": 3, "output": _out(**over)}, "r")
    assert (mix.width, mix.height, mix.fps, mix.gop) == expect


@pytest.mark.parametrize(
    ("output", "words"),
    [
        (_out(videowidth=1921), "videowidth"),
        (_out(videoheight=15), "videoheight"),
        (_out(videobitrate=0), "videobitrate"),
        (_out(videobitrate=10001), "videobitrate"),
        (_out(videofps=0), "videofps"),
        (_out(videogop=1000), "videogop"),
        (_out(audiosample=44100), "audiosample"),
        (_out(streamtype=3), "streamtype"),
        (_out(patch=3), "patchUrl"),
        (_out(watermark={"timestamp": {"x": 0, "y": 0, "format": "%s", "size": 20}}), "format"),
        (_out(watermark={"textList": [{"x": 0, "y": 0, "content": "hi", "size": 101}]}), "size"),
        (_out(watermark={"textList": [{"x": 800, "y": 0, "content": "hi", "size": 10}]}), "x"),
        (
            _out(
                watermark={
                    "textList": [{"x": 0, "y": 0, "content": "a", "size": 9, "color": "FfFfFf"}]
                }
            ),
            "color",
        ),
        (_out(background={"color": "GGGGGG"}), "color"),
        (_out(base64seidata=base64.b64encode(b"x" * 2049).decode()), "2048"),
    ],
)
def test_out_of_range_output_is_2101_naming_the_parameter(output, words):
    with pytest.raises(CloudrecError) as err:
        parse_mixconfig({"templateid": 1, "output": output}, "r")
    assert words in err.value.message


def test_h265_is_unsupported_not_invalid():
    """Regression (issue 12): 4004 answered as 2101 passed every test that was run."""
    with pytest.raises(CloudrecError) as err:
        parse_mixconfig({"templateid": 1, "output": _out(videoencode=101)}, "r")
    assert err.value.reason == "unsupported"
    assert codes.code_for(err.value) == codes.UNSUPPORTED == 4004


def test_an_out_of_range_output_is_code_2101():
    with pytest.raises(CloudrecError) as err:
        parse_mixconfig({"templateid": 1, "output": _out(videowidth=2000)}, "r")
    assert codes.code_for(err.value) == codes.INVALID_PARAMETER == 2101


def test_audio_only_mixing_needs_no_video_parameters():
    mix = parse_mixconfig({"templateid": 1, "output": {"streamtype": 2}}, "r")
    assert mix.media is Media.AUDIO


def test_a_mixconfig_with_neither_template_nor_input_is_refused():
    with pytest.raises(CloudrecError, match="templateid"):
        parse_mixconfig({"output": _out()}, "r")
