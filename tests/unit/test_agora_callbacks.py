"""The Agora dialect's NCS callbacks (issue 16): the envelope of ncs-request-header-body.mdx,
the event types of ncs-event-types-cloud-recording.mdx for cloudrec's events, and the two
signature headers checked with the code of ncs-signature-verification-python.mdx."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from cloudrec.api.agora.callbacks import AgoraCallbacks, signatures
from cloudrec.callbacks.formats import callback_formats
from cloudrec.core.apps import App
from cloudrec.core.callbacks import epoch_ms
from cloudrec.core.delivery import DeliveryPolicy, DeliveryService
from cloudrec.core.tasks import (
    END_IDLE,
    END_RECORDER_FAILED,
    END_STOPPED,
    Callback,
    Desired,
    FileFormat,
    FileStatus,
    RecordedFile,
    RecordingSpec,
    RecordMode,
    Task,
    TaskState,
    TrackType,
)
from tests.agora import ncs_signatures_verify
from tests.fakes import FakeClock, FakeDeliveryWorld

SID = "0123456789abcdef0123456789abcdef"
SECRET = "ncs-secret"
# The request body of ncs-signature-verification-python.mdx, byte for byte.
DOC_BODY = (
    b'{"eventType":10,"noticeId":"4eb720f0-8da7-11e9-a43e53f411c2761f",'
    b'"notifyMs":1560408533119,"payload":{"a":"1","b":2},"productId":1}'
)


def agora_task(clock: FakeClock, **kw: Any) -> Task:
    spec = RecordingSpec(
        room_id="class7",
        formats=(FileFormat.HLS, FileFormat.MP4),
        dialect="agora",
        callback_url="https://ncs.example/cb",
        extra={"cname": "class7", "uid": "527841", "mode": "individual"},
    )
    return Task(SID, 5, spec, kw.pop("state", TaskState.UPLOADING), Desired.STOPPED, clock(), **kw)


def a_file(name: str, fmt: FileFormat, status: FileStatus, user: str = "123") -> RecordedFile:
    return RecordedFile(
        SID,
        f"rec/{name}",
        f"/spool/{name}",
        fmt,
        status,
        f"cam{user}",
        user,
        TrackType.AUDIO_VIDEO,
        1_700_000_000_123,
    )


class FakeUow:
    """What a format reads and the core writes: the task's callbacks (``sequence`` counts
    those stored so far)."""

    def __init__(self, stored: int = 0) -> None:
        self.delivery = self
        self.rows: list[Any] = [object()] * stored

    def callback_count(self, task_id: str) -> int:
        return len(self.rows)

    def add_callback(self, cb: Callback) -> None:
        self.rows.append(cb)


def made(task: Task, event: str, files: list[RecordedFile], stored: int = 0, **extra: Any):
    clock = FakeClock()
    out = AgoraCallbacks().body(FakeUow(stored), task, event, files, clock(), "m1", extra)  # type: ignore[arg-type]
    return out or []


def kinds(bodies: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(b["eventType"], b["payload"]["details"]["msgName"]) for b in bodies]


def test_the_signatures_are_the_documents_hmac_sha1_and_sha256_of_the_raw_body():
    """The document's printed results (033c62f4…, 6d3320c6…) are not what its own code
    computes for its own body and secret: its code is the contract, so the values here are
    that code's, and the receiver's check below is that code too."""
    headers = signatures("secret", DOC_BODY)
    assert headers == {
        "Agora-Signature": "92ea60c5249b641f80de046d11e1cb2d15f1d1b2",
        "Agora-Signature-V2": "6ba85d7c1122f6c51143cce7765f06c601c0fbd691987f4510e45b943b2639e8",
    }
    assert ncs_signatures_verify("secret", DOC_BODY, headers)
    assert not ncs_signatures_verify("other", DOC_BODY, headers)
    assert not ncs_signatures_verify("secret", DOC_BODY + b" ", headers)


def test_a_notification_has_the_documented_envelope_and_payload():
    clock = FakeClock()
    task = agora_task(clock, started_at=clock())
    [body] = made(task, "task_started", [], stored=3)
    assert list(body) == ["noticeId", "productId", "eventType", "notifyMs", "sid", "payload"]
    assert body["noticeId"] == "m1" and body["productId"] == 3 and body["sid"] == SID
    assert body["eventType"] == 40 and body["notifyMs"] == epoch_ms(clock())
    assert body["payload"] == {
        "cname": "class7",
        "uid": "527841",
        "sid": SID,
        "sequence": 3,
        "sendts": epoch_ms(clock()),
        "serviceType": 1,
        "details": {"msgName": "recorder_started", "status": 0},
    }


def test_each_attempt_sends_its_own_notify_ms_signed_over_the_exact_bytes_sent():
    clock = FakeClock()
    [body] = made(agora_task(clock), "task_started", [])
    stored = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    later = clock() + timedelta(seconds=10)
    sent, headers = AgoraCallbacks().sign(stored, SECRET, later)
    data = json.loads(sent)
    assert data["notifyMs"] == epoch_ms(later) == body["notifyMs"] + 10_000
    assert {k: v for k, v in data.items() if k != "notifyMs"} == {
        k: v for k, v in body.items() if k != "notifyMs"
    }
    assert data["payload"]["sendts"] == body["payload"]["sendts"]  # when the event happened
    assert ncs_signatures_verify(SECRET, sent, headers)
    assert not ncs_signatures_verify(SECRET, stored, headers)


def test_the_end_of_an_uploaded_recording_is_recorder_leave_then_uploaded_then_session_exit():
    clock = FakeClock()
    task = agora_task(clock, end_reason=END_STOPPED)
    files = [
        a_file("a.m3u8", FileFormat.HLS, FileStatus.UPLOADED),
        a_file("a_00000.ts", FileFormat.TS, FileStatus.UPLOADED),
        a_file("a.mp4", FileFormat.MP4, FileStatus.UPLOADED),
    ]
    [leave] = made(task, "task_stopped", files)
    assert kinds([leave]) == [(41, "recorder_leave")]
    assert leave["payload"]["details"]["leaveCode"] == 2
    assert leave["payload"]["serviceType"] == 1
    uploaded, exited = made(replace(task, state=TaskState.COMPLETED), "task_completed", files, 1)
    assert kinds([uploaded, exited]) == [(31, "uploaded"), (11, "session_exit")]
    assert [uploaded["noticeId"], exited["noticeId"]] == ["m1", "m1-1"]
    assert [uploaded["payload"]["sequence"], exited["payload"]["sequence"]] == [1, 2]
    assert uploaded["payload"]["serviceType"] == 2 and exited["payload"]["serviceType"] == 0
    assert uploaded["payload"]["details"] == {
        "msgName": "uploaded",
        "status": 0,
        "fileList": [
            {
                "fileName": name,
                "trackType": "audio_and_video",
                "uid": "123",
                "mixedAllUser": False,
                "isPlayable": True,
                "sliceStartTime": 1_700_000_000_123,
            }
            for name in ("rec/a.m3u8", "rec/a.mp4")
        ],
    }
    assert exited["payload"]["details"] == {"msgName": "session_exit", "exitStatus": 0}


def test_a_mix_lists_its_files_as_every_users_with_uid_0():
    clock = FakeClock()
    task = agora_task(clock, end_reason=END_STOPPED)
    task = replace(task, spec=replace(task.spec, mode=RecordMode.MIXED))
    files = [a_file("mix.m3u8", FileFormat.HLS, FileStatus.UPLOADED, user="")]
    uploaded, _ = made(task, "task_completed", files)
    [entry] = uploaded["payload"]["details"]["fileList"]
    assert entry["uid"] == "0" and entry["mixedAllUser"] is True


def test_files_some_in_the_backup_store_end_with_backuped_and_one_warning_each():
    clock = FakeClock()
    task = agora_task(clock, end_reason=END_STOPPED)
    kept = a_file("b.mp4", FileFormat.MP4, FileStatus.BACKED_UP)
    [warning] = made(task, "file_backed_up", [kept])
    assert kinds([warning]) == [(2, "cloud_recording_warning")]
    assert warning["payload"]["details"] == {
        "msgName": "cloud_recording_warning",
        "module": 1,
        "warnCode": 32,
    }
    files = [a_file("a.mp4", FileFormat.MP4, FileStatus.UPLOADED), kept]
    done = made(task, "task_completed", files)
    assert kinds(done) == [(32, "backuped"), (11, "session_exit")]
    assert done[1]["payload"]["details"]["exitStatus"] == 0


def test_a_file_given_up_on_is_an_upload_error_and_the_exit_is_abnormal_without_uploaded():
    clock = FakeClock()
    task = agora_task(clock, end_reason=END_STOPPED)
    lost = a_file("b.mp4", FileFormat.MP4, FileStatus.FAILED)
    [error] = made(task, "file_upload_failed", [lost])
    details = error["payload"]["details"]
    assert error["eventType"] == 1 and details["msgName"] == "cloud_recording_error"
    assert (details["module"], details["errorCode"], details["errorLevel"]) == (1, 47, 4)
    assert "rec/b.mp4" in details["errorMsg"]
    files = [a_file("a.mp4", FileFormat.MP4, FileStatus.UPLOADED), lost]
    [exited] = made(task, "task_completed", files)
    assert exited["payload"]["details"] == {"msgName": "session_exit", "exitStatus": 1}


@pytest.mark.parametrize(
    ("reason", "leave_code", "exit_status"),
    [(END_IDLE, 4, 0), (END_STOPPED, 2, 0), (END_RECORDER_FAILED, 2, 1)],
)
def test_a_recording_with_nothing_to_upload_leaves_and_exits_at_once(
    reason, leave_code, exit_status
):
    clock = FakeClock()
    task = agora_task(clock, state=TaskState.COMPLETED, end_reason=reason)
    leave, exited = made(task, "task_stopped", [])
    assert kinds([leave, exited]) == [(41, "recorder_leave"), (11, "session_exit")]
    assert leave["payload"]["details"]["leaveCode"] == leave_code
    assert exited["payload"]["details"]["exitStatus"] == exit_status


def test_a_failover_and_a_failed_task_have_their_events():
    clock = FakeClock()
    task = agora_task(clock, state=TaskState.RECORDING)
    [moved] = made(task, "task_failover", [], attempt=2, from_node="a", to_node="b")
    assert moved["eventType"] == 12
    assert moved["payload"]["details"] == {"msgName": "session_failover", "newUid": 527841}
    [exited] = made(replace(task, state=TaskState.FAILED), "task_failed", [])
    assert exited["payload"]["details"] == {"msgName": "session_exit", "exitStatus": 1}


@pytest.mark.parametrize(
    "event",
    ["file_uploaded", "task_uploading", "playlist_started", "task_paused", "image_failed"],
)
def test_events_agora_has_no_words_for_send_nothing(event):
    assert (
        AgoraCallbacks().body(FakeUow(), agora_task(FakeClock()), event, [], FakeClock()(), "m", {})
        is None
    )  # type: ignore[arg-type]


def test_one_event_stored_as_two_callbacks_in_order_with_their_own_message_ids():
    clock = FakeClock()
    uow = FakeUow()
    task = agora_task(clock, end_reason=END_STOPPED)
    files = [a_file("a.mp4", FileFormat.MP4, FileStatus.UPLOADED)]
    callback_formats().enqueue(uow, clock(), task, "task_completed", files)  # type: ignore[arg-type]
    first, second = uow.rows
    assert (first.event, second.event) == ("task_completed", "task_completed")
    assert second.message_id == first.message_id + "-1"
    bodies = [json.loads(c.body) for c in (first, second)]
    assert [b["eventType"] for b in bodies] == [31, 11]
    assert [b["noticeId"] for b in bodies] == [first.message_id, second.message_id]


def test_the_delivery_sends_an_agora_tasks_callback_with_both_signature_headers():
    """Through the durable delivery (DeliveryService.send), keyed with the app's callback
    secret: a receiver checking as the document does accepts it."""
    clock = FakeClock()
    world = FakeDeliveryWorld(clock)
    world.tasks.task = agora_task(clock)
    world.apps.add(App(5, "server-secret", "callback-secret", "publish-secret", clock()))
    sent: list[tuple[str, bytes, dict[str, str]]] = []

    class Sender:
        def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
            sent.append((url, body, headers))
            return 200

    svc = DeliveryService(
        world, clock, None, world.backup, Sender(), world.spool, DeliveryPolicy(),
        callbacks=callback_formats(),
    )  # fmt: skip
    [body] = made(world.tasks.task, "task_started", [])
    stored = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    cb = Callback(7, SID, 5, "https://ncs.example/cb", "task_started", "m1", stored,
                  "pending", 0, clock(), clock())  # fmt: skip
    world.delivery.pending[7] = cb
    clock.advance(2.5)
    assert svc.send(cb) is True
    [(url, raw, headers)] = sent
    assert url == "https://ncs.example/cb" and headers["Content-Type"] == "application/json"
    assert json.loads(raw)["notifyMs"] == body["notifyMs"] + 2500
    assert ncs_signatures_verify("callback-secret", raw, headers)
    assert not ncs_signatures_verify("server-secret", raw, headers)
