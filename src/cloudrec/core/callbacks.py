"""Callbacks: an event of a task, stored for delivery in the words of the task's dialect.

The core decides *when* an app is called back (a task started, stopped, failed; a file
uploaded); each dialect decides *what* its callback says (:class:`CallbackFormat`, in the
dialect's package), or that it has no such event.  ``bootstrap`` maps dialect names to
formats; the stored body is sent as it is, later and perhaps by another process
(:meth:`DeliveryService.send`).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cloudrec.core.ports import UnitOfWork
from cloudrec.core.tasks import Callback, RecordedFile, Task

log = logging.getLogger("cloudrec.delivery")


def epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class CallbackFormat(Protocol):
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
        """The callback's JSON body for ``event``, or None when the dialect has no such
        event.  ``extra``: the event's own detail.  Never any secret in it."""
        ...


@dataclass(frozen=True)
class Callbacks:
    """The callback formats by dialect name (``TaskSpec.dialect``)."""

    formats: Mapping[str, CallbackFormat]

    def enqueue(
        self,
        uow: UnitOfWork,
        now: datetime,
        task: Task,
        event: str,
        files: list[RecordedFile],
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Store a callback for ``event`` in the task's unit of work, if the task has a
        callback URL and its dialect has such an event."""
        url = task.spec.callback_url
        if not url:
            return
        fmt = self.formats.get(task.spec.dialect)
        if fmt is None:
            log.warning(
                "callback.no_format",
                extra={"fields": {"task_id": task.task_id, "dialect": task.spec.dialect}},
            )
            return
        message_id = secrets.token_hex(16)
        body = fmt.body(uow, task, event, files, now, message_id, dict(extra or {}))
        if body is None:
            return
        uow.delivery.add_callback(
            Callback(
                id=None,
                task_id=task.task_id,
                app_id=task.app_id,
                url=url,
                event=event,
                message_id=message_id,
                body=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                status="pending",
                attempts=0,
                next_at=now,
                created_at=now,
            )
        )
