"""Ports: what the core needs from the outside, as ``typing.Protocol``s."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from cloudrec.core.apps import App
from cloudrec.core.rooms import LiveStream, PlayRequest, PublishRequest, RoomEvent, StreamMeta
from cloudrec.core.tasks import (
    Callback,
    CallbackAttempt,
    Desired,
    FileStatus,
    RecordedFile,
    StorageTarget,
    Task,
    TaskState,
    UploadAttempt,
)


class IngestGate(Protocol):
    """What an ingest (the embedded RTMP server) asks the core.

    The ingest owns the event loop; each method is awaited on it.  ``authorize_publish`` and
    ``authorize_play`` raise :class:`cloudrec.core.errors.CloudrecError` to refuse, before any
    media is accepted.  ``published`` is awaited once per accepted publish, when the stream's
    first media message arrives (its metadata is known by then); ``unpublished`` once when the
    publisher stops or disconnects, if ``published`` was called.
    """

    async def authorize_publish(self, req: PublishRequest) -> None: ...

    async def published(self, req: PublishRequest, meta: StreamMeta) -> None: ...

    async def unpublished(self, req: PublishRequest) -> None: ...

    async def authorize_play(self, req: PlayRequest) -> None: ...


class AppRepository(Protocol):
    def add(self, app: App) -> None: ...

    def get(self, app_id: int) -> App | None: ...

    def list(self) -> list[App]: ...

    def set_secret(self, app_id: int, kind: str, secret: str) -> None: ...

    def set_callback_url(self, app_id: int, url: str | None) -> None: ...


class RoomDirectory(Protocol):
    """The live streams of every room, and their history.  Owned by a unit of work."""

    def open(self, stream: LiveStream) -> None:
        """Record a stream as live; raise ``CloudrecError.conflict`` if that id is live."""

    def close(
        self,
        app_id: int,
        room_id: str,
        stream_id: str,
        at: datetime,
        reason: str,
        node: str | None = None,
    ) -> bool:
        """Mark a live stream ended; False if it was not live (or, with ``node``, not held by
        that ingest node; "" is no node)."""

    def close_all(self, source: str, node: str, at: datetime, reason: str) -> int:
        """End the live streams of ``source`` held by ``node`` (and those of no node)."""

    def beat(self, node: str, at: datetime) -> None:
        """``node`` is alive at ``at``."""

    def lost(self, source: str, before: datetime, alive: str) -> list[LiveStream]:
        """The live streams of ``source`` whose node has not beaten since ``before``, but for
        those of ``alive`` (the node asking)."""

    def live_keys(self, source: str, node: str) -> set[tuple[int, str, str]]:
        """(app id, room id, stream id) of the live streams of ``source`` held by ``node``."""

    def is_live(self, app_id: int, room_id: str, stream_id: str) -> bool: ...

    def live(self, app_id: int, room_id: str | None = None) -> list[LiveStream]: ...

    def live_by_url(self, source: str, pull_url: str) -> LiveStream | None: ...

    def update_meta(self, app_id: int, room_id: str, stream_id: str, meta: StreamMeta) -> None: ...

    def add_event(self, event: RoomEvent) -> None: ...


class DeliveryRepository(Protocol):
    def add_upload_attempt(self, attempt: UploadAttempt) -> None: ...

    def upload_attempts(self, file_id: int) -> list[UploadAttempt]: ...

    def add_callback(self, callback: Callback) -> None: ...

    def due_callbacks(self, now: datetime) -> list[Callback]:
        """Pending callbacks due by ``now`` that nobody holds (candidates: claim each)."""

    def claim_callback(self, callback_id: int, now: datetime, until: datetime) -> Callback | None:
        """Hold a pending callback that is due for sending until ``until``: the callback as it
        is now, or None if it is not due or someone else holds it."""

    def update_callback(self, callback_id: int, **fields: object) -> None: ...

    def add_callback_attempt(self, attempt: CallbackAttempt) -> None: ...

    def callbacks(self, task_id: str) -> list[tuple[Callback, list[CallbackAttempt]]]: ...

    def callback_count(self, task_id: str) -> int:
        """How many callbacks the task has stored (a dialect's sequence numbers)."""


class UnitOfWork(Protocol):
    """One transaction; ``commit`` makes its changes durable, leaving without it rolls back."""

    apps: AppRepository
    rooms: RoomDirectory
    tasks: TaskRepository
    delivery: DeliveryRepository

    def __enter__(self) -> UnitOfWork: ...

    def __exit__(self, *exc: object) -> None: ...

    def commit(self) -> None: ...


class SecretBox(Protocol):
    """Encrypts secrets kept at rest; ``open`` raises ``CloudrecError.internal`` on a wrong key."""

    def seal(self, plaintext: str) -> str: ...

    def open(self, token: str) -> str: ...


class TaskWatch(Protocol):
    """The two things a worker does most often, each one small statement with no unit of
    work around it."""

    def read(self, task_id: str, room_id: str) -> tuple[int, ...] | None:
        """Every tick: a value that moves whenever the task's desired state, spec or
        screenshot requests change, or its room's live streams do (None: no such task)."""
        ...

    def renew(self, task_id: str, attempt: int, now: datetime, until: datetime) -> bool:
        """Every second: the heartbeat's lease renewal, as :meth:`TaskRepository.renew_lease`
        in a transaction of its own."""
        ...


class TaskRepository(Protocol):
    """Tasks, their files and events, and JoCloud-style resources.  Owned by a unit of work."""

    def add(self, task: Task, storage: StorageTarget | None) -> None: ...

    def get(self, task_id: str) -> Task | None: ...

    def storage(self, task_id: str) -> StorageTarget | None: ...

    def update(self, task_id: str, **fields: object) -> None:
        """Set columns of a task (``state``, ``desired``, ``heartbeat_at``, ...)."""

    def update_if(
        self,
        task_id: str,
        *,
        attempt: int | None = None,
        states: tuple[TaskState, ...] | None = None,
        desired_in: tuple[Desired, ...] | None = None,
        unstarted: bool = False,
        **fields: object,
    ) -> bool:
        """Compare-and-set: set ``fields`` only if the task's attempt is ``attempt``, its
        state one of ``states``, its desired state one of ``desired_in`` (each when given),
        and (``unstarted``) it has no worker; True if it did.  ``new_attempt`` in ``fields``
        sets the attempt column (``attempt`` names the one expected)."""

    def renew_lease(self, task_id: str, attempt: int, now: datetime, until: datetime) -> bool:
        """Extend attempt ``attempt``'s lease to ``until`` if it still owns the task and the
        task is still being recorded; False otherwise (the writer has lost the task)."""

    def lock_app(self, app_id: int) -> None:
        """Serialise this transaction with every other one that locks the same app."""

    def by_client_ref(self, app_id: int, ref: str, since: datetime) -> Task | None:
        """The newest task created since ``since`` with this client reference."""

    def request_snapshot(self, task_id: str) -> None:
        """Add one to the task's ``snapshot_requests``."""

    def active(self) -> list[Task]:
        """Tasks not in a terminal state."""

    def count_active(self, app_id: int) -> int: ...

    def add_file(self, file: RecordedFile) -> int: ...

    def update_file(self, file_id: int, **fields: object) -> None: ...

    def update_file_if(
        self, file_id: int, statuses: tuple[FileStatus, ...], **fields: object
    ) -> bool:
        """Set ``fields`` only if the file's status is one of ``statuses``; True if it did."""

    def claim_file(self, file_id: int, now: datetime, until: datetime) -> RecordedFile | None:
        """Hold the file for delivery until ``until``; the file as it is now, or None when
        someone else holds it."""

    def renew_file_claims(self, file_ids: list[int], until: datetime) -> None: ...

    def remove_file(self, file_id: int) -> None: ...

    def files(self, task_id: str) -> list[RecordedFile]: ...

    def file(self, file_id: int) -> RecordedFile | None: ...

    def files_to_deliver(self, now: datetime) -> list[RecordedFile]: ...

    def kept_past(self, ended_before: datetime) -> list[RecordedFile]: ...

    def in_state(self, state: TaskState) -> list[Task]: ...

    def by_resource(self, app_id: int, resource_id: str) -> Task | None: ...

    def page(
        self,
        app_id: int,
        room_id: str | None,
        active: bool,
        since: datetime,
        until: datetime,
        offset: int,
        limit: int,
    ) -> tuple[int, list[Task]]: ...

    def add_event(self, task_id: str, kind: str, at: datetime, detail: str = "") -> None: ...

    def events(self, task_id: str) -> list[tuple[str, datetime, str]]: ...

    def add_resource(
        self, resource_id: str, app_id: int, at: datetime, expires_at: datetime
    ) -> None: ...

    def resource(self, resource_id: str) -> tuple[int, datetime, str | None] | None:
        """(app id, expiry, task id or None)."""

    def use_resource(self, resource_id: str, task_id: str) -> bool:
        """Bind a resource to a task; False if it was already bound."""


class FileShipper(Protocol):
    """Where a recording node's files go off its disk while and when it writes them (the
    cluster's fragment store): the attempt's control tells it of every file."""

    def opened(self, file_id: int, path: str, fmt: str) -> None:
        """A file being written from now on (shipped as it grows, where its format allows)."""

    def finish(self, file_id: int, path: str) -> bool:
        """The file is written: make the shipped copy whole; True when it is (the node's own
        copy may then go)."""

    def forget(self, file_ids: list[int]) -> None:
        """Files whose rows are gone (merged into another): drop what was shipped of them."""


class RemoteFiles(Protocol):
    """Files another machine wrote, as the service that delivers them gets them."""

    def fetch(self, file: RecordedFile) -> str | None:
        """The file's copy in this service's spool when it was written elsewhere (or is not
        on this disk): brought here now, or earlier; None to read it where its row says."""

    def fetched(self, file: RecordedFile) -> None:
        """The file's row now names the local copy: what was shipped of it may go."""
