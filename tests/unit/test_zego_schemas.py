"""ZEGO StartRecord bodies into cloudrec's spec: the screenshot parameters."""

from __future__ import annotations

from typing import Any

import pytest

from cloudrec.api.zego.schemas import parse_start
from cloudrec.core.errors import CloudrecError, Kind
from cloudrec.core.tasks import FileFormat, RecordMode


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
