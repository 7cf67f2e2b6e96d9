"""Delivery rules with fakes: retries, backup, retention, callbacks; and the signatures."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from cloudrec.api.jocloud.callbacks import body as jocloud_body
from cloudrec.api.zego.callbacks import body as zego_body
from cloudrec.api.zego.callbacks import signature as zego_callback_signature
from cloudrec.callbacks.formats import callback_formats
from cloudrec.core.apps import App
from cloudrec.core.delivery import DeliveryPolicy, DeliveryService, hmac_sha256
from cloudrec.core.errors import CloudrecError
from cloudrec.core.tasks import (
    Callback,
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


def test_hmac_signature_is_hmac_sha256_in_lower_case_hex():
    # The well-known HMAC-SHA256 example (key "key"), computed elsewhere, not by this code.
    assert hmac_sha256("key", b"The quick brown fox jumps over the lazy dog") == (
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


class RecordingSender:
    """A callback receiver that answers ``statuses`` in turn and keeps what it was sent."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        self.sent.append((url, body, headers))
        return self.statuses.pop(0) if self.statuses else 200


def _callback(clock: FakeClock, attempts: int = 0) -> Callback:
    body = json.dumps({"event": "task_completed", "recordid": "t1"})
    return Callback(7, "t1", 5, "http://cb.example/x", "task_completed", "m1", body,
                    "pending", attempts, clock(), clock())  # fmt: skip


def _callback_service(sender: RecordingSender, policy: DeliveryPolicy | None = None):
    clock = FakeClock()
    world = FakeDeliveryWorld(clock)
    world.apps.add(App(5, "server-secret", "callback-secret", "publish-secret", clock()))
    svc = DeliveryService(
        world,
        clock,
        None,
        world.backup,
        sender,
        world.spool,
        policy or DeliveryPolicy(),
        callbacks=callback_formats(),
    )
    return svc, world, clock


def test_a_callback_is_signed_with_the_apps_callback_secret_over_the_exact_body():
    """Regression (issue 12): a signature keyed with another of the app's secrets passed the
    unit tests, which only checked that the signature was 64 characters long."""
    sender = RecordingSender(200)
    svc, world, clock = _callback_service(sender)
    cb = _callback(clock)
    world.delivery.pending[cb.id] = cb
    assert svc.send(cb) is True
    [(url, body, headers)] = sender.sent
    assert url == cb.url and body == cb.body.encode()
    expected = hmac.new(b"callback-secret", body, hashlib.sha256).hexdigest()
    assert headers["X-Cloudrec-Signature"] == "sha256=" + expected
    assert headers["X-Cloudrec-Message-Id"] == "m1"
    [(cb_id, fields)] = world.delivery.callback_updates
    assert cb_id == 7 and fields == {"status": "delivered", "attempts": 1, "delivered_at": clock()}


@pytest.mark.parametrize(
    ("attempts_before", "delay_s"), [(0, 5.0), (1, 10.0), (2, 20.0), (5, 160.0), (6, 300.0)]
)
def test_a_failed_callback_is_tried_again_after_a_doubling_wait_capped_at_the_maximum(
    attempts_before, delay_s
):
    policy = DeliveryPolicy(
        callback_attempts=99, callback_backoff_s=5.0, callback_backoff_max_s=300.0
    )
    svc, world, clock = _callback_service(RecordingSender(500), policy)
    cb = _callback(clock, attempts_before)
    world.delivery.pending[cb.id] = cb
    assert svc.send(cb) is False
    [(_, fields)] = world.delivery.callback_updates
    assert fields == {
        "attempts": attempts_before + 1,
        "next_at": clock() + timedelta(seconds=delay_s),
    }
    [attempt] = world.delivery.callback_attempts
    assert (attempt.http_status, attempt.error) == (500, "HTTP 500")


def test_a_callback_fails_for_good_after_its_last_attempt():
    svc, world, clock = _callback_service(RecordingSender(503), DeliveryPolicy(callback_attempts=3))
    cb = _callback(clock, attempts=2)
    world.delivery.pending[cb.id] = cb
    assert svc.send(cb) is False
    assert world.delivery.callback_updates == [(7, {"status": "failed", "attempts": 3})]


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
        world,
        clock,
        store,
        world.backup,
        world.sender,
        world.spool,
        policy,
        sleep=sleeps.append,
        callbacks=callback_formats(),
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


def test_a_zego_task_whose_recorder_kept_failing_ends_abnormally_with_quit_reason_1001():
    """A live stream's recorder that failed with its restarts spent ends the task: event 2
    (abnormal end), 1001 "unknown recording error", not event 5 (stopped as asked)."""
    from dataclasses import replace

    from cloudrec.core.tasks import END_RECORDER_FAILED

    task = replace(_zego_task(FileFormat.MP4), end_reason=END_RECORDER_FAILED)
    body = zego_body(task, "task_stopped", [], FakeClock()(), "secret", 1)
    assert body is not None and body["event_type"] == 2
    assert body["detail"] == {"quit_reason": 1001}
    assert body["message"] == END_RECORDER_FAILED


class DiskBackup:
    """A backup store on disk: keeping a file moves it, as the real one does."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def keep(self, app_id: int, task_id: str, key: str, path: str, segments: bool = True) -> str:
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, dest)
        return str(dest)

    def where(self, app_id: int, task_id: str, key: str) -> str:
        return str(self.root / key)

    def discard(self, path: str) -> None:
        Path(path).unlink()


class ReadingStore:
    """An object store that reads the file at the path it is given (failing while ``down``)."""

    def __init__(self) -> None:
        self.down = True
        self.objects: dict[str, bytes] = {}

    def put(self, target, key, path, segments=True):
        if self.down:
            raise CloudrecError.unavailable("storage says 503", reason="server_error")
        self.objects[key] = Path(path).read_bytes()
        return f"https://bucket/{key}"


def test_a_backed_up_file_is_uploaded_again_from_its_backup_copy(tmp_path):
    """Regression (issue 12): a re-upload that read the spool path (gone once the file moved
    to the backup store) passed, because the fake store ignored the path it was given."""
    clock = FakeClock()
    world = FakeDeliveryWorld(clock)
    spooled = tmp_path / "spool" / "a.mp4"
    spooled.parent.mkdir()
    spooled.write_bytes(b"the recording")
    f = dataclasses.replace(world.file, path=str(spooled))
    world.tasks.rows[f.id] = f
    store = ReadingStore()
    policy = DeliveryPolicy(upload_attempts=2, upload_backoff_s=0.0)
    svc = DeliveryService(
        world, clock, store, DiskBackup(tmp_path / "backup"), None, world.spool, policy,
        sleep=lambda s: None, callbacks=callback_formats(),
    )  # fmt: skip
    assert svc.deliver_file(f) is FileStatus.BACKED_UP
    kept = world.tasks.rows[f.id]
    assert kept.backup_path == str(tmp_path / "backup" / "a.mp4") and not spooled.exists()
    store.down = False
    clock.advance(policy.backup_retry_s)
    assert svc.deliver_file(kept) is FileStatus.UPLOADED
    assert store.objects == {"a.mp4": b"the recording"}
    assert world.spool.removed == [kept.backup_path]  # the copy it uploaded, and only that
    assert world.tasks.rows[f.id].backup_path is None
