"""Agora request bodies → cloudrec's spec and storage target: what each field maps onto, and
every refusal naming its parameter (code 2 unless the document names another)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cloudrec.api.agora import codes
from cloudrec.api.agora.resources import issue, redeem
from cloudrec.api.agora.schemas import (
    WEB_REFUSAL,
    check_mode,
    parse_acquire,
    parse_start,
    parse_stop,
    parse_update,
)
from cloudrec.api.agora.storage import region_id
from cloudrec.core.errors import CloudrecError
from cloudrec.core.mixing import Box, MixSpec
from cloudrec.core.tasks import FileFormat, Media, RecordMode
from cloudrec.media.recorder.mixpipe import large_region_key


def body(**client: Any) -> dict[str, Any]:
    """start.mdx's example request, with ``client`` merged into its clientRequest."""
    request = {
        "cname": "httpClient463224",
        "uid": "527841",
        "clientRequest": {
            "recordingConfig": {
                "channelType": 1,
                "streamTypes": 2,
                "streamMode": "default",
                "videoStreamType": 0,
                "maxIdleTime": 30,
                "subscribeAudioUids": ["123", "456"],
                "subscribeVideoUids": ["123", "456"],
                "subscribeUidGroup": 0,
            },
            "recordingFileConfig": {"avFileType": ["hls"]},
            "storageConfig": {
                "vendor": 2,
                "region": 3,
                "bucket": "xxxxx",
                "accessKey": "xxxxx",
                "secretKey": "xxxxx",
                "fileNamePrefix": ["directory1", "directory2"],
            },
        },
    }
    request["clientRequest"].update(client)
    return request


def refused(mode: str, request: dict[str, Any]) -> CloudrecError:
    with pytest.raises(CloudrecError) as caught:
        parse_start(mode, request)
    return caught.value


def test_the_documents_individual_example_records_two_users_as_separate_hls_files():
    cname, uid, spec, storage = parse_start("individual", body())
    assert (cname, uid) == ("httpClient463224", "527841")
    assert spec.room_id == "httpClient463224" and spec.mode is RecordMode.SINGLE
    assert spec.user_ids == ("123", "456")
    assert spec.media is Media.SEPARATE  # streamMode default: audio and video apart
    assert spec.formats == (FileFormat.HLS,) and spec.hls_segment_s == 15
    assert spec.idle_timeout_s == 30 and spec.dialect == "agora"
    assert spec.output_prefix == ("directory1", "directory2")
    assert spec.extra == {
        "cname": "httpClient463224",
        "uid": "527841",
        "mode": "individual",
        "avFileType": ["hls"],
    }
    assert (storage.vendor, storage.region, storage.bucket) == ("aliyun-oss", "cn-beijing", "xxxxx")
    assert storage.endpoint == "oss-cn-beijing.aliyuncs.com"


def test_stream_mode_and_types_choose_the_media():
    def media(**rc: Any) -> Media:
        request = body()
        request["clientRequest"]["recordingConfig"].update(rc)
        return parse_start("individual", request)[2].media

    assert media(streamMode="standard") is Media.AUDIO_VIDEO
    assert media(streamTypes=0) is Media.AUDIO
    assert media(streamTypes=1) is Media.VIDEO
    assert media(streamTypes=0, streamMode="original") is Media.AUDIO


def test_subscription_lists_choose_users_and_media():
    def spec(**rc: Any) -> tuple[Media, tuple[str, ...]]:
        request = body()
        config = request["clientRequest"]["recordingConfig"]
        config.pop("subscribeAudioUids")
        config.pop("subscribeVideoUids")
        config.update(streamMode="standard", **rc)
        s = parse_start("individual", request)[2]
        return s.media, s.user_ids

    assert spec() == (Media.AUDIO_VIDEO, ())
    assert spec(subscribeAudioUids=["#allstream#"], subscribeVideoUids=["#allstream#"]) == (
        Media.AUDIO_VIDEO,
        (),
    )
    # "If a subscription list is set for only one media type, the service will not subscribe
    # to the other type."
    assert spec(subscribeVideoUids=["7"]) == (Media.VIDEO, ("7",))
    assert spec(subscribeAudioUids=["7", "8"]) == (Media.AUDIO, ("7", "8"))
    # A list of a type streamTypes leaves out does not apply.
    assert spec(streamTypes=0, subscribeVideoUids=["7"]) == (Media.AUDIO, ())


def test_files_and_screenshots():
    both = parse_start("individual", body(recordingFileConfig={"avFileType": ["hls", "mp4"]}))[2]
    assert both.formats == (FileFormat.HLS, FileFormat.MP4)
    request = body(snapshotConfig={"captureInterval": 5, "fileType": ["jpg"]})
    del request["clientRequest"]["recordingFileConfig"]
    shots = parse_start("individual", request)[2]
    assert shots.formats == (FileFormat.JPG,) and shots.snapshot_interval_s == 5
    assert shots.screenshots and shots.extra["snapshot"] is True


def test_mix_maps_transcoding_config_onto_the_mixed_picture():
    request = body(recordingFileConfig={"avFileType": ["hls", "mp4"]})
    rc = request["clientRequest"]["recordingConfig"]
    rc.update(
        audioProfile=2,
        transcodingConfig={
            "width": 640,
            "height": 360,
            "fps": 15,
            "bitrate": 800,
            "mixedVideoLayout": 3,
            "backgroundColor": "#FF0000",
            "layoutConfig": [
                {"uid": "123", "x_axis": 0, "y_axis": 0, "width": 0.5, "height": 1},
                {"x_axis": 0.5, "y_axis": 0, "width": 0.5, "height": 1, "render_mode": 1},
            ],
        },
    )
    spec = parse_start("mix", request)[2]
    assert spec.mode is RecordMode.MIXED and spec.formats == (FileFormat.HLS, FileFormat.MP4)
    mix = MixSpec.from_json(spec.mix or {})
    assert (mix.width, mix.height, mix.fps, mix.bitrate_kbps) == (640, 360, 15, 800)
    assert mix.audio_bitrate_kbps == 192
    assert mix.background_color == "FF0000" and mix.auto_layout is None
    left, right = mix.inputs
    assert (left.user_id, left.box, left.crop, left.z) == ("123", Box(0, 0, 320, 360), "fill", 0)
    assert (right.user_id, right.box, right.crop, right.z) == ("", Box(320, 0, 320, 360), "fit", 1)
    for layout, name in ((0, "floating"), (1, "grid"), (2, "vertical")):
        rc["transcodingConfig"] = {"mixedVideoLayout": layout}
        mix = MixSpec.from_json(parse_start("mix", request)[2].mix or {})
        assert mix.auto_layout == name and (mix.width, mix.height) == (360, 640)


def _with(path: str, value: Any) -> dict[str, Any]:
    request = copy.deepcopy(body())
    *parents, leaf = path.split(".")
    node = request
    for p in parents:
        node = node[p]
    if value is None:
        node.pop(leaf)
    else:
        node[leaf] = value
    return request


RC = "clientRequest.recordingConfig"
SC = "clientRequest.storageConfig"
MALFORMED = [
    ("cname", None, "cname"),
    ("uid", None, "uid"),
    ("uid", 527841, "uid"),
    ("uid", "0", "uid"),
    ("uid", "4294967296", "uid"),
    ("clientRequest", None, "clientRequest"),
    (f"{SC}", None, "storageConfig"),
    (f"{SC}.vendor", 4, "vendor"),
    (f"{SC}.vendor", 5, "Azure"),
    (f"{SC}.vendor", 8, "Baidu"),
    (f"{SC}.region", 99, "region"),
    (f"{SC}.bucket", None, "bucket"),
    (f"{SC}.fileNamePrefix", ["a/b"], "fileNamePrefix"),
    (f"{SC}.fileNamePrefix", ["a" * 60, "b" * 60, "c" * 10], "fileNamePrefix"),
    (f"{SC}.stsToken", "t", "stsToken"),
    (f"{SC}.extensionParams", {"sse": "kms", "tag": "x"}, "sse"),
    (f"{RC}.streamTypes", 3, "streamTypes"),
    (f"{RC}.streamMode", "fancy", "streamMode"),
    (f"{RC}.maxIdleTime", 4, "maxIdleTime"),
    (f"{RC}.maxIdleTime", "30", "maxIdleTime"),
    (f"{RC}.decryptionMode", 1, "decryptionMode"),
    (f"{RC}.videoStreamType", 1, "videoStreamType"),
    (f"{RC}.subscribeUidGroup", 6, "subscribeUidGroup"),
    (f"{RC}.subscribeAudioUids", ["123"], "different users"),
    (f"{RC}.subscribeVideoUids", ["x"], "subscribeVideoUids"),
    (f"{RC}.subscribeVideoUids", [str(i) for i in range(1, 34)], "at most 32"),
    (f"{RC}.unsubscribeVideoUids", ["9"], "cannot be set together"),
    (f"{RC}.transcodingConfig", {}, "composite"),
    ("clientRequest.recordingFileConfig.avFileType", ["mp4"], "alone"),
    ("clientRequest.recordingFileConfig.avFileType", ["flv"], "avFileType"),
    ("clientRequest.extensionServiceConfig", {}, "web"),
    ("clientRequest.snapshotConfig", {"fileType": ["jpg"]}, "recordingFileConfig"),
]


@pytest.mark.parametrize(("path", "value", "named"), MALFORMED)
def test_every_malformed_individual_start_is_code_2_naming_the_parameter(path, value, named):
    exc = refused("individual", _with(path, value))
    assert codes.failure_for(exc) == codes.INVALID, exc
    assert named in exc.message


def test_unsubscribe_lists_alone_are_refused_as_not_built():
    request = body()
    rc = request["clientRequest"]["recordingConfig"]
    del rc["subscribeVideoUids"]
    rc["unsubscribeVideoUids"] = ["9"]
    assert "not built" in refused("individual", request).message


def test_screenshot_refusals():
    request = body(snapshotConfig={"captureInterval": 4, "fileType": ["jpg"]})
    del request["clientRequest"]["recordingFileConfig"]
    assert "captureInterval" in refused("individual", request).message
    request["clientRequest"]["snapshotConfig"] = {"fileType": ["png"]}
    assert "fileType" in refused("individual", request).message
    request["clientRequest"]["snapshotConfig"] = {"fileType": ["jpg"]}
    request["clientRequest"]["recordingConfig"]["streamTypes"] = 0
    assert "streamTypes" in refused("individual", request).message
    assert "individual" in refused("mix", request).message


@pytest.mark.parametrize(
    ("tc", "named"),
    [
        ({"width": 1920, "height": 1920}, "1920 x 1080"),
        ({"fps": 0}, "fps"),
        ({"bitrate": 0}, "bitrate"),
        ({"mixedVideoLayout": 4}, "mixedVideoLayout"),
        ({"maxResolutionUid": "123"}, "only for mixedVideoLayout 2"),
        ({"mixedVideoLayout": 2, "maxResolutionUid": "0"}, "maxResolutionUid"),
        ({"backgroundConfig": []}, "not built"),
        ({"defaultUserBackgroundImage": "https://x/y.jpg"}, "not built"),
        ({"backgroundColor": "red"}, "backgroundColor"),
        ({"backgroundImage": "ftp://x/y.jpg"}, "backgroundImage"),
        ({"mixedVideoLayout": 3}, "layoutConfig"),
        ({"mixedVideoLayout": 3, "layoutConfig": [{"x_axis": 0, "y_axis": 0}]}, "width"),
        (
            {
                "mixedVideoLayout": 3,
                "layoutConfig": [{"x_axis": 0.8, "y_axis": 0, "width": 0.5, "height": 1}],
            },
            "inside the canvas",
        ),
        ({"mixedVideoLayout": 1, "layoutConfig": []}, "mixedVideoLayout 3"),
    ],
)
def test_every_malformed_mix_start_is_code_2_naming_the_parameter(tc, named):
    request = body()
    request["clientRequest"]["recordingConfig"]["transcodingConfig"] = tc
    exc = refused("mix", request)
    assert codes.failure_for(exc) == codes.INVALID and named in exc.message, exc


def test_web_mode_is_refused_with_the_reason():
    with pytest.raises(CloudrecError) as caught:
        check_mode("web")
    assert caught.value.message == WEB_REFUSAL and "browser" in WEB_REFUSAL
    assert codes.failure_for(caught.value).body(caught.value.message) == {
        "code": 2,
        "reason": WEB_REFUSAL,
    }
    with pytest.raises(CloudrecError):
        check_mode("composite")


def test_acquire_defaults_and_refusals():
    asked = parse_acquire({"cname": "room1", "uid": "527841", "clientRequest": {}})
    assert (asked.cname, asked.uid, asked.expired_hour) == ("room1", "527841", 72)
    ok = {"cname": "room1", "uid": "527841", "clientRequest": {"resourceExpiredHour": 24}}
    assert parse_acquire(ok).expired_hour == 24
    for change, failure in [
        ({"clientRequest": {"resourceExpiredHour": 721}}, codes.INVALID),
        ({"clientRequest": {"scene": 1}}, codes.INVALID),
        ({"clientRequest": {"region": "MARS"}}, codes.INVALID),
        ({"cname": "a room!"}, codes.INVALID_CHANNEL_NAME),
        ({"uid": "abc"}, codes.INVALID),
    ]:
        with pytest.raises(CloudrecError) as caught:
            parse_acquire({**ok, **change})
        assert codes.failure_for(caught.value) == failure, change


def test_stop_body():
    assert parse_stop({"cname": "c", "uid": "1", "clientRequest": {}}) == ("c", "1", False)
    stop = {"cname": "c", "uid": "1", "clientRequest": {"async_stop": True}}
    assert parse_stop(stop) == ("c", "1", True)
    with pytest.raises(CloudrecError):
        parse_stop({"cname": "c", "uid": "1", "clientRequest": {"async_stop": "no"}})


def test_a_resource_id_is_bound_to_its_cname_uid_and_hours():
    rid = issue("secret", "core-1", "room1", "527841", 24)
    assert redeem("secret", rid, "room1", "527841") == ("core-1", 24)
    for args in (
        ("secret", rid, "room2", "527841"),
        ("secret", rid, "room1", "1"),
        ("other", rid, "room1", "527841"),
        ("secret", rid.replace(".24.", ".48."), "room1", "527841"),
        ("secret", "JyvK8nXHuV1BE", "room1", "527841"),
    ):
        with pytest.raises(CloudrecError) as caught:
            redeem(*args)
        assert codes.failure_for(caught.value) == codes.INVALID


def test_region_names_become_the_vendors_region_ids():
    assert region_id("CN_Hangzhou") == "cn-hangzhou"
    assert region_id("US_EAST_1") == "us-east-1"
    assert region_id("AP_Shenzhen_FSI") == "ap-shenzhen-fsi"


@pytest.mark.parametrize(
    ("vendor", "region", "extension", "expected"),
    [
        (1, 0, None, ("aws-s3", "", "us-east-1")),
        (1, 25, None, ("aws-s3", "", "eu-south-1")),
        (3, 2, None, ("tencent-cos", "cos.ap-shanghai.myqcloud.com", "ap-shanghai")),
        (6, 0, None, ("gcs", "", "")),
        (7, 1, None, ("huawei-obs", "", "cn-north-4")),
        (11, 0, {"endpoint": "minio.example.com:9000"}, ("s3", "minio.example.com:9000", "")),
    ],
)
def test_each_vendor_and_region_becomes_a_storage_target(vendor, region, extension, expected):
    request = body()
    config = request["clientRequest"]["storageConfig"]
    config.update(vendor=vendor, region=region)
    if extension is not None:
        config["extensionParams"] = extension
    storage = parse_start("individual", request)[3]
    assert (storage.vendor, storage.endpoint, storage.region) == expected
    assert (storage.access_key, storage.secret_key) == ("xxxxx", "xxxxx")


def test_s3_compatible_storage_needs_its_endpoint():
    request = body()
    request["clientRequest"]["storageConfig"].update(vendor=11, region=0)
    assert "extensionParams.endpoint" in refused("individual", request).message


def test_update_subscription_lists():
    def update(media: Media = Media.AUDIO_VIDEO, current: tuple[str, ...] = (), **sub: Any):
        return parse_update({"streamSubscribe": sub}, media, current)

    audio = {"subscribeAudioUids": ["7"]}
    video = {"subscribeVideoUids": ["7"]}
    assert update(audioUidList=audio, videoUidList=video) == ("7",)
    assert update(current=("7",), audioUidList=audio) == ("7",)
    assert update(Media.AUDIO, audioUidList=audio) == ("7",)
    assert update(Media.VIDEO, videoUidList={"subscribeVideoUids": ["#allstream#"]}) == ()
    for media, current, sub, named in [
        (Media.AUDIO_VIDEO, (), {"audioUidList": audio}, "different users"),
        (Media.AUDIO, (), {"videoUidList": video}, "names no subscription list"),
        (Media.AUDIO_VIDEO, (), {"videoUidList": {"unsubscribeVideoUids": ["7"]}}, "not built"),
        (
            Media.AUDIO_VIDEO,
            (),
            {"videoUidList": {"subscribeVideoUids": ["x"]}},
            "subscribeVideoUids",
        ),
    ]:
        with pytest.raises(CloudrecError) as caught:
            update(media, current, **sub)
        assert named in caught.value.message, caught.value
    for name in ("webRecordingConfig", "rtmpPublishConfig", "storageConfig"):
        with pytest.raises(CloudrecError) as caught:
            parse_update({name: {}}, Media.AUDIO_VIDEO, ())
        assert name in caught.value.message


def test_max_resolution_uid_names_the_user_of_the_large_window():
    request = body()
    tc = {"mixedVideoLayout": 2, "maxResolutionUid": "456"}
    request["clientRequest"]["recordingConfig"]["transcodingConfig"] = tc
    mix = MixSpec.from_json(parse_start("mix", request)[2].mix or {})
    assert (mix.auto_layout, mix.main_user_id, mix.main_stream_id) == ("vertical", "456", None)
    # The worker's key of the large region: the user's (layouts keyed by user), so that a
    # user who does not publish leaves it to the background.
    assert large_region_key(mix, "room1", {"cam456": "room1/456"}) == "room1/456"
    assert large_region_key(mix, "room1", {}) == "room1/456"
