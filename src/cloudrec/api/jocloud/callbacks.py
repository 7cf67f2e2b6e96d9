"""JoCloud's callbacks: the envelope ``{msgid, product, msgtype, notifytime, context{...}}``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cloudrec.core.callbacks import epoch_ms
from cloudrec.core.ports import UnitOfWork
from cloudrec.core.tasks import RecordedFile, Task

# JoCloud message types (the public document names the envelope, not the messages).
MSGTYPE = {
    "task_paused": 1,
    "task_resumed": 1,
    "task_started": 1,
    "task_stopped": 1,
    "task_failed": 1,
    "task_completed": 1,
    "task_failover": 1,  # cloudrec's own: the recording moved to another machine
    "file_uploaded": 2,
    "file_backed_up": 2,
    "file_upload_failed": 2,
}


# The detail of a task_failover message: the new attempt and the machines it moved between.
FAILOVER = {"attempt": "attempt", "from_node": "fromnode", "to_node": "tonode"}


def body(
    task: Task,
    event: str,
    files: list[RecordedFile],
    now: datetime,
    message_id: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    first = files[0] if files else None
    started = epoch_ms(task.started_at) if task.started_at else 0
    context: dict[str, Any] = {
        "msgname": event,
        "appid": task.app_id,
        "roomid": task.spec.room_id,
        "uid": sorted({f.user_id for f in files if f.user_id} or set(task.spec.user_ids)),
        "recordid": task.task_id,
        "filetype": first.format.value if first else "",
        "duration": first.duration_ms if first else 0,
        "fileaddress": (first.url or first.name) if first else "",
        "starttime": first.begin_ms if first else started,
    }
    if task.end_reason and event.startswith("task_"):
        context["reason"] = task.end_reason
    if event == "task_failover":
        context.update({ours: (extra or {}).get(key) for key, ours in FAILOVER.items()})
    return {
        "msgid": message_id,
        "product": "recordoss",
        "msgtype": MSGTYPE.get(event, 1),
        "notifytime": epoch_ms(now),
        "context": context,
    }


class JoCloudCallbacks:
    """A :class:`~cloudrec.core.callbacks.CallbackFormat`: the events of ``MSGTYPE``."""

    def body(
        self,
        uow: UnitOfWork,
        task: Task,
        event: str,
        files: list[RecordedFile],
        now: datetime,
        message_id: str,
        extra: dict[str, Any],
    ) -> dict[str, Any] | None:
        if event not in MSGTYPE:
            return None
        return body(task, event, files, now, message_id, extra)

    def sign(self, body: bytes, secret: str, now: datetime) -> tuple[bytes, dict[str, str]]:
        """Sent as stored (a signature of the dialect's own, if any, is in the body)."""
        return body, {}
