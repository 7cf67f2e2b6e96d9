"""Delivery rules with fakes: retries, backup, retention, callbacks; and the signatures."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from cloudrec.core.delivery import (
    DeliveryPolicy,
    DeliveryService,
    hmac_sha256,
    jocloud_body,
    zego_body,
    zego_callback_signature,
)
from cloudrec.core.errors import CloudrecError
from cloudrec.core.tasks import (
    Desired,
    FileFormat,
    FileStatus,
    RecordedFile,
    RecordingSpec,
    Task,
    TaskState,
    TrackType,
)
from tests.fakes import FakeClock, FakeDeliveryWorld


def test_the_zego_callback_signature_matches_the_documents_worked_example():
    assert zego_callback_signature("secret", "1470820198", "123412") == (
        "5bd59fd62953a8059fb7eaba95720f66d19e4517"
    )


def test_the_jocloud_envelope_has_the_documented_fields():
    clock = FakeClock()
    spec = RecordingSpec(room_id="r1", user_ids=("u1",), callback_url="http://x/cb")
    task = Task("t1", 5, spec, TaskState.RECORDING, Desired.RUNNING, clock())
    f = RecordedFile(
        "t1",
        "p/a.mp4",
        "/spool/a.mp4",
        FileFormat.MP4,
        FileStatus.UPLOADED,
        "s1",
        "u1",
        TrackType.AUDIO_VIDEO,
        1_700_000_000_000,
        size=10,
        duration_ms=4000,
        url="https://b/p/a.mp4",
    )
    body = jocloud_body(task, "file_uploaded", [f], clock(), "m1")
    assert set(body) == {"msgid", "product", "msgtype", "notifytime", "context"}
    assert body["msgtype"] == 2 and body["msgid"] == "m1"
    assert body["context"] == {
        "msgname": "file_uploaded",
        "appid": 5,
        "roomid": "r1",
        "uid": ["u1"],
        "recordid": "t1",
        "filetype": "mp4",
        "duration": 4000,
        "fileaddress": "https://b/p/a.mp4",
        "starttime": 1_700_000_000_000,
    }
    json.dumps(body)  # serialisable as is


def test_hmac_signature_is_hex_sha256():
    assert len(hmac_sha256("k", b"body")) == 64


class FlakyStore:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def put(self, target, key, path, segments=True):
        self.calls += 1
        if self.calls <= self.failures:
            raise CloudrecError.unavailable("storage says 500", reason="server_error")
        return f"https://bucket/{key}"


@pytest.mark.parametrize(
    ("failures", "status"), [(0, "uploaded"), (2, "uploaded"), (3, "backed_up")]
)
def test_uploads_retry_with_backoff_then_go_to_backup(failures, status):
    sleeps: list[float] = []
    store = FlakyStore(failures)
    policy = DeliveryPolicy(upload_attempts=3, upload_backoff_s=1.0)
    svc, uow, f = _service(store, policy, sleeps)
    assert svc.deliver_file(f).value == status
    assert sleeps == [1.0, 2.0][: min(failures, 2)]
    attempts = uow.delivery.attempts
    assert [a.ok for a in attempts if a.target == "bucket"] == (
        [False] * min(failures, 3) + ([True] if failures < 3 else [])
    )


def test_a_backed_up_file_fails_after_the_retention_and_its_copy_is_discarded():
    clock = FakeClock()
    store = FlakyStore(99)
    svc, uow, f = _service(store, DeliveryPolicy(backup_retention=timedelta(seconds=10)), [], clock)
    assert svc.deliver_file(f) is FileStatus.BACKED_UP
    clock.advance(11)
    f = uow.tasks.rows[f.id]
    assert svc.deliver_file(f) is FileStatus.FAILED
    assert uow.backup.discarded == [f.backup_path]
    assert uow.spool.removed == []  # nothing deleted without a confirmed upload


def _service(store, policy, sleeps, clock=None):
    clock = clock or FakeClock()
    world = FakeDeliveryWorld(clock)
    svc = DeliveryService(
        world, clock, store, world.backup, world.sender, world.spool, policy, sleep=sleeps.append
    )
    return svc, world, world.file


def _file(name: str, fmt: FileFormat, status: FileStatus = FileStatus.UPLOADED) -> RecordedFile:
    track = TrackType.VIDEO if fmt is FileFormat.JPG else TrackType.AUDIO_VIDEO
    return RecordedFile(
        "t1", f"record/{name}", f"/spool/{name}", fmt, status, "mix", "mix", track, 1, size=5
    )


def _zego_task(*formats: FileFormat) -> Task:
    spec = RecordingSpec(
        room_id="r1", formats=formats, callback_url="http://x/cb", dialect="zego", mix={}
    )
    return Task("t1", 5, spec, TaskState.RECORDING, Desired.RUNNING, FakeClock()())


def test_a_screenshot_is_announced_by_its_own_zego_event_1_when_its_upload_is_done():
    task = _zego_task(FileFormat.JPG)
    shot = _file("a_V_1.jpg", FileFormat.JPG)
    body = zego_body(task, "file_uploaded", [shot], FakeClock()(), "secret", 3)
    assert body is not None and body["event_type"] == 1 and body["sequence"] == 3
    [info] = body["detail"]["file_info"]
    assert (info["file_id"], info["output_file_format"], info["media_track_type"]) == (
        "a_V_1.jpg",
        "jpg",
        2,
    )
    assert body["detail"]["upload_status"] == 1
    backed = _file("b_V_1.jpg", FileFormat.JPG, FileStatus.BACKED_UP)
    body = zego_body(task, "file_backed_up", [backed], FakeClock()(), "secret", 4)
    assert body is not None and body["detail"]["upload_status"] == 2
    # A screenshot task's end brings no file list: every screenshot had its own.
    assert zego_body(task, "task_completed", [shot, backed], FakeClock()(), "s", 5) is None


def test_a_recording_file_upload_has_no_zego_event_and_the_final_list_leaves_screenshots_out():
    task = _zego_task(FileFormat.MP4)
    mix = _file("m_VA_1.mp4", FileFormat.MP4)
    shot = _file("m_V_2.jpg", FileFormat.JPG)
    assert zego_body(task, "file_uploaded", [mix], FakeClock()(), "secret", 1) is None
    body = zego_body(task, "task_completed", [mix, shot], FakeClock()(), "secret", 2)
    assert body is not None and body["event_type"] == 1
    assert [i["file_id"] for i in body["detail"]["file_info"]] == ["m_VA_1.mp4"]


def test_a_zego_upload_callback_lists_recordings_and_counts_their_sound_waves():
    task = _zego_task(FileFormat.MP3)
    mp3 = _file("m_A_1.mp3", FileFormat.MP3)
    wave = _file("m_A_1.sw", FileFormat.SOUND_WAVE)
    body = zego_body(task, "task_completed", [mp3, wave], FakeClock()(), "secret", 1)
    assert body is not None
    [info] = body["detail"]["file_info"]
    assert (info["file_id"], info["output_file_format"]) == ("m_A_1.mp3", "mp3")
    assert body["detail"]["upload_status"] == 1
    lost = _file("m_A_1.sw", FileFormat.SOUND_WAVE, FileStatus.BACKED_UP)
    body = zego_body(task, "task_completed", [mp3, lost], FakeClock()(), "secret", 1)
    assert body is not None and body["detail"]["upload_status"] == 2


def test_a_zego_task_ended_by_a_full_disk_says_quit_reason_1004():
    """ZEGO's recording-status-callback: quit_reason 1004, the storage space available to
    the recording service is insufficient (issue 10 #10)."""
    from dataclasses import replace

    from cloudrec.core.tasks import END_DISK_FULL

    task = replace(_zego_task(FileFormat.MP4), end_reason=END_DISK_FULL)
    body = zego_body(task, "task_stopped", [], FakeClock()(), "secret", 1)
    assert body is not None and body["event_type"] == 2
    assert body["detail"] == {"quit_reason": 1004}
