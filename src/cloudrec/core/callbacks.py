"""Callbacks: an event of a task, stored for delivery in the words of the task's dialect.

The core decides *when* an app is called back (a task started, stopped, failed; a file
uploaded); each dialect decides *what* its callback says (:class:`CallbackFormat`, in the
dialect's package): no callback, one, or several (one cloudrec event may be two of the
vendor's, e.g. "every file uploaded" and "the service exited").  ``bootstrap`` maps dialect
names to formats; the stored body is sent later, perhaps by another process
(:meth:`DeliveryService.send`), as the format's :meth:`CallbackFormat.sign` makes it.
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


def nth_message_id(message_id: str, n: int) -> str:
    """The message id the ``n``-th (from 0) of several bodies made for one event is stored
    with: ``message_id`` itself for the first."""
    return message_id if n == 0 else f"{message_id}-{n}"


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
    ) -> dict[str, Any] | list[dict[str, Any]] | None:
        """The callback's JSON body for ``event``, or a list of bodies (stored as that many
        callbacks, in that order, the ``n``-th with :func:`nth_message_id`), or None when
        the dialect has no such event.  ``extra``: the event's own detail.  Never any
        secret in it."""
        ...

    def sign(self, body: bytes, secret: str, now: datetime) -> tuple[bytes, dict[str, str]]:
        """What one attempt (at ``now``) sends of a stored ``body``, and the dialect's own
        headers (signatures keyed with ``secret``, the app's callback secret)."""
        ...


@dataclass(frozen=True)
class Callbacks:
    """The callback formats by dialect name (``TaskSpec.dialect``)."""

    formats: Mapping[str, CallbackFormat]

    def sign(
        self, dialect: str, body: bytes, secret: str, now: datetime
    ) -> tuple[bytes, dict[str, str]]:
        """The bytes and the dialect's own headers of one attempt (:meth:`CallbackFormat.sign`);
        a dialect without a format sends the body as stored, with no header of its own."""
        fmt = self.formats.get(dialect)
        return (body, {}) if fmt is None else fmt.sign(body, secret, now)

    def enqueue(
        self,
        uow: UnitOfWork,
        now: datetime,
        task: Task,
        event: str,
        files: list[RecordedFile],
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Store a callback (or several) for ``event`` in the task's unit of work, if the task
        has a callback URL and its dialect has such an event."""
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
        made = fmt.body(uow, task, event, files, now, message_id, dict(extra or {}))
        bodies = [] if made is None else made if isinstance(made, list) else [made]
        for n, body in enumerate(bodies):
            uow.delivery.add_callback(
                Callback(
                    id=None,
                    task_id=task.task_id,
                    app_id=task.app_id,
                    url=url,
                    event=event,
                    message_id=nth_message_id(message_id, n),
                    body=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                    status="pending",
                    attempts=0,
                    next_at=now,
                    created_at=now,
                )
            )
