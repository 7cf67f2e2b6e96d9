"""ZEGO StartRecord bodies into cloudrec's spec: the screenshot parameters, the audio formats
and sound waves."""

from __future__ import annotations

from typing import Any

import pytest

from cloudrec.api.zego.schemas import parse_start
from cloudrec.core.errors import CloudrecError, Kind
from cloudrec.core.mixing import MixSpec
from cloudrec.core.tasks import FileFormat, Media, RecordingSpec, RecordMode, SoundWaveKey


def _body(stream_type: int = 3, mode: int = 1, **out: Any) -> dict[str, Any]:
    inp: dict[str, Any] = {"RecordMode": mode, "StreamType": stream_type}
    if mode == 2:
        inp["MixConfig"] = {
            "MixOutputStreamId": "mixout",
            "MixOutputVideoConfig": {"Width": 640, "Height": 360, "Fps": 15, "Bitrate": 500_000},
        }
    return {
        "RoomId": "room1",
        "RecordInputParams": inp,
        "RecordOutputParams": {"OutputFileFormat": "jpg", **out},
        "StorageParams": {
            "Vendor": 2,
            "Region": "oss-x",
            "Bucket": "b",
            "AccessKeyId": "a",
            "AccessKeySecret": "s",
        },
    }


@pytest.mark.parametrize("mode", [1, 2])
def test_jpg_asks_for_screenshots_every_10_seconds_by_default(mode):
    spec, _ = parse_start(_body(mode=mode))
    assert spec.formats == (FileFormat.JPG,) and spec.screenshots
    assert spec.snapshot_interval_s == 10
    assert spec.mode is (RecordMode.MIXED if mode == 2 else RecordMode.SINGLE)
    spec, _ = parse_start(_body(mode=mode, SnapshotInterval=3600))
    assert spec.snapshot_interval_s == 3600


@pytest.mark.parametrize(
    ("interval", "words"), [(4, "[5, 3600]"), (3601, "[5, 3600]"), ("5", "integer")]
)
def test_a_snapshot_interval_outside_5_to_3600_seconds_is_refused(interval, words):
    with pytest.raises(CloudrecError) as err:
        parse_start(_body(SnapshotInterval=interval))
    assert err.value.kind is Kind.INVALID_ARGUMENT and words in err.value.message


def test_jpg_of_an_audio_only_stream_is_refused_with_what_to_do_instead():
    with pytest.raises(CloudrecError) as err:
        parse_start(_body(stream_type=1))
    assert "StreamType 1 records audio only" in err.value.message


def test_snapshot_interval_is_ignored_for_recording_formats():
    spec, _ = parse_start(_body(OutputFileFormat="mp4", SnapshotInterval=1))
    assert spec.formats == (FileFormat.MP4,) and not spec.screenshots


def body(fmt: str = "mp4", mode: int = 1, stream_type: int = 3, **inp: Any) -> dict[str, Any]:
    return {
        "RoomId": "room1",
        "RecordInputParams": {"RecordMode": mode, "StreamType": stream_type, **inp},
        "RecordOutputParams": {"OutputFileFormat": fmt},
        "StorageParams": {"Vendor": 1, "Bucket": "b", "AccessKeyId": "a", "AccessKeySecret": "s"},
    }


def refused(b: dict[str, Any]) -> str:
    with pytest.raises(CloudrecError) as err:
        parse_start(b)
    assert err.value.kind is Kind.INVALID_ARGUMENT  # 300000004
    return err.value.message


@pytest.mark.parametrize(("name", "fmt"), [("mp3", FileFormat.MP3), ("ogg", FileFormat.OGG)])
def test_mp3_and_ogg_are_recording_formats(name, fmt):
    spec, _ = parse_start(body(name))
    assert spec.formats == (fmt,) and spec.media is Media.AUDIO_VIDEO
    assert fmt.audio_only and fmt.extension == name


@pytest.mark.parametrize("name", ["aac", "mp3", "ogg"])
def test_an_audio_only_format_with_stream_type_2_is_refused(name):
    message = refused(body(name, stream_type=2))
    assert f"OutputFileFormat {name} holds audio only" in message and "StreamType 2" in message


def test_a_mix_into_an_audio_only_format_composes_no_picture_and_needs_no_video_config():
    mix = {"MixOutputStreamId": "out"}
    spec, _ = parse_start(body("mp3", 2, MixConfig=mix))
    assert spec.mix is not None
    assert MixSpec.from_json(spec.mix).media is Media.AUDIO
    assert spec.extra["StreamType"] == 3  # still answered as asked
    assert "MixOutputVideoConfig" in refused(body("mp4", 2, MixConfig=mix))


def sound_wave(b: dict[str, Any]) -> SoundWaveKey | None:
    spec: RecordingSpec = parse_start(b)[0]
    return spec.sound_wave


def test_record_sound_wave_names_streams_by_stream_id_or_user_id():
    assert sound_wave(body()) is None
    assert sound_wave(body(RecordSoundWave=False, SoundWaveType=1)) is None
    assert sound_wave(body(RecordSoundWave=True)) is SoundWaveKey.STREAM
    assert sound_wave(body(RecordSoundWave=True, SoundWaveType=1)) is SoundWaveKey.USER


def test_record_sound_wave_is_read_from_mix_config_where_zegos_document_puts_it():
    video = {"Width": 640, "Height": 360, "Fps": 15, "Bitrate": 500_000}
    mix = {"MixOutputStreamId": "out", "MixOutputVideoConfig": video}
    wave = {"RecordSoundWave": True, "SoundWaveType": 1}
    assert sound_wave(body(mode=2, MixConfig={**mix, **wave})) is SoundWaveKey.USER
    # RecordMode 1 has no mix: only these two fields of a MixConfig are read.
    assert sound_wave(body(mode=1, MixConfig=wave)) is SoundWaveKey.USER
    # MixConfig wins over RecordInputParams.
    both = body(mode=1, MixConfig=wave, RecordSoundWave=True, SoundWaveType=0)
    assert sound_wave(both) is SoundWaveKey.USER


def test_a_sound_wave_with_stream_type_2_or_a_bad_value_is_refused():
    assert "StreamType 2" in refused(body(stream_type=2, RecordSoundWave=True))
    assert "RecordSoundWave must be true or false" in refused(body(RecordSoundWave=1))
    assert "SoundWaveType must be in [0, 1]" in refused(body(RecordSoundWave=True, SoundWaveType=2))


def test_screenshots_have_no_sound_wave():
    assert "jpg takes screenshots" in refused(body("jpg", RecordSoundWave=True))


def test_the_spec_keeps_the_sound_wave_through_json():
    spec, _ = parse_start(body("ogg", RecordSoundWave=True, SoundWaveType=1))
    again = RecordingSpec.from_json(spec.to_json())
    assert again == spec and again.sound_wave is SoundWaveKey.USER
    old = spec.to_json()
    del old["sound_wave"]  # a task stored before sound waves existed
    assert RecordingSpec.from_json(old).sound_wave is None
