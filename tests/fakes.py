"""In-memory fakes of the core's ports, for unit tests of the service layer."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudrec.core.apps import App
from cloudrec.core.errors import CloudrecError
from cloudrec.core.rooms import LiveStream, RoomEvent, StreamMeta
from cloudrec.core.tasks import (
    Desired,
    FileFormat,
    FileStatus,
    RecordedFile,
    RecordingSpec,
    StorageTarget,
    Task,
    TaskState,
    TrackType,
)


class FakeClock:
    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeApps:
    def __init__(self) -> None:
        self.rows: dict[int, App] = {}

    def add(self, app: App) -> None:
        self.rows[app.app_id] = app

    def get(self, app_id: int) -> App | None:
        return self.rows.get(app_id)

    def list(self) -> list[App]:
        return [self.rows[k] for k in sorted(self.rows)]

    def set_secret(self, app_id: int, kind: str, secret: str) -> None:
        self.rows[app_id] = dataclasses.replace(self.rows[app_id], **{f"{kind}_secret": secret})

    def set_callback_url(self, app_id: int, url: str | None) -> None:
        self.rows[app_id] = dataclasses.replace(self.rows[app_id], callback_url=url)


class FakeRooms:
    def __init__(self) -> None:
        self.streams: dict[tuple[int, str, str], LiveStream] = {}
        self.ended: list[tuple[LiveStream, str]] = []
        self.events: list[RoomEvent] = []
        self.seen: dict[str, datetime] = {}  # ingest nodes' last beats

    def open(self, stream: LiveStream) -> None:
        key = (stream.app_id, stream.room_id, stream.stream_id)
        if key in self.streams:
            raise CloudrecError.conflict("already live", reason="stream_live")
        self.streams[key] = stream

    def close(
        self,
        app_id: int,
        room_id: str,
        stream_id: str,
        at: datetime,
        reason: str,
        node: str | None = None,
    ) -> bool:
        key = (app_id, room_id, stream_id)
        stream = self.streams.get(key)
        if stream is None or (node is not None and stream.node != node):
            return False
        self.ended.append((self.streams.pop(key), reason))
        return True

    def close_all(self, source: str, node: str, at: datetime, reason: str) -> int:
        keys = [k for k, s in self.streams.items() if s.source == source and s.node in (node, "")]
        for k in keys:
            self.ended.append((self.streams.pop(k), reason))
        return len(keys)

    def beat(self, node: str, at: datetime) -> None:
        self.seen[node] = at

    def lost(self, source: str, before: datetime, alive: str) -> list[LiveStream]:
        return [
            s
            for s in self.streams.values()
            if s.source == source and s.node != alive and self.seen.get(s.node, before) < before
        ]

    def live_keys(self, source: str, node: str) -> set[tuple[int, str, str]]:
        return {k for k, s in self.streams.items() if s.source == source and s.node == node}

    def is_live(self, app_id: int, room_id: str, stream_id: str) -> bool:
        return (app_id, room_id, stream_id) in self.streams

    def live(self, app_id: int, room_id: str | None = None) -> list[LiveStream]:
        return [
            s for s in self.streams.values() if s.app_id == app_id and room_id in (None, s.room_id)
        ]

    def live_by_url(self, source: str, pull_url: str) -> LiveStream | None:
        for s in self.streams.values():
            if s.source == source and s.pull_url == pull_url:
                return s
        return None

    def update_meta(self, app_id: int, room_id: str, stream_id: str, meta: StreamMeta) -> None:
        key = (app_id, room_id, stream_id)
        self.streams[key] = dataclasses.replace(self.streams[key], meta=meta)

    def add_event(self, event: RoomEvent) -> None:
        self.events.append(event)


class FakeUnitOfWork:
    """Shares its repositories across units; counts commits."""

    def __init__(self) -> None:
        self.apps = FakeApps()
        self.rooms = FakeRooms()
        self.commits = 0

    def __enter__(self) -> FakeUnitOfWork:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def commit(self) -> None:
        self.commits += 1

    def __call__(self) -> FakeUnitOfWork:
        return self


class _FakeTaskRows:
    def __init__(self, task: Any, target: Any, file: Any, events: list[tuple[Any, ...]]) -> None:
        self.task, self.target, self.events = task, target, events
        self.rows = {file.id: file}
        self.claims: dict[int, datetime | None] = {}

    def claim_file(self, file_id: int, now: datetime, until: datetime) -> Any:
        held = self.claims.get(file_id)
        if held is not None and held >= now:
            return None
        self.claims[file_id] = until
        return self.rows[file_id]

    def get(self, task_id: str) -> Any:
        return self.task

    def storage(self, task_id: str) -> Any:
        return self.target

    def update_file(self, file_id: int, **fields: Any) -> None:
        if "claim_until" in fields:
            self.claims[file_id] = fields.pop("claim_until")
        self.rows[file_id] = dataclasses.replace(self.rows[file_id], **fields)

    def add_event(self, *args: Any) -> None:
        self.events.append(args)

    def files(self, task_id: str) -> list[Any]:
        return list(self.rows.values())


class _FakeDeliveryRows:
    def __init__(self) -> None:
        self.attempts: list[Any] = []
        self.callbacks: list[Any] = []
        self.callback_attempts: list[Any] = []
        self.callback_updates: list[tuple[int, dict[str, Any]]] = []
        self.pending: dict[int, Any] = {}  # callbacks a sender may claim, by id

    def add_upload_attempt(self, attempt: Any) -> None:
        self.attempts.append(attempt)

    def add_callback(self, cb: Any) -> None:
        self.callbacks.append(cb)

    def add_callback_attempt(self, attempt: Any) -> None:
        self.callback_attempts.append(attempt)

    def update_callback(self, callback_id: int, **fields: Any) -> None:
        fields.pop("claim_until", None)  # the claim is let go with every update
        self.callback_updates.append((callback_id, fields))

    def claim_callback(self, callback_id: int, now: datetime, until: datetime) -> Any:
        """The pending callback the test put in ``pending`` (taken once)."""
        return self.pending.pop(callback_id, None)


class _FakeBackup:
    def __init__(self) -> None:
        self.discarded: list[str] = []

    def keep(self, app_id: int, task_id: str, key: str, path: str, segments: bool = True) -> str:
        return f"/backup/{key}"

    def where(self, app_id: int, task_id: str, key: str) -> str:
        return f"/backup/{key}"

    def discard(self, path: str) -> None:
        self.discarded.append(path)


class _FakeSpool:
    def __init__(self) -> None:
        self.removed: list[str] = []

    def exists(self, path: str) -> bool:
        return path not in self.removed

    def remove(self, path: str, segments: bool = True) -> None:
        self.removed.append(path)

    def finished_segments(self, playlist: str, final: bool = False) -> list[Any]:
        return []


class FakeDeliveryWorld:
    """A unit of work, backup store and spool for the delivery service: one task (with a
    storage target and a callback URL) and one recorded file."""

    def __init__(self, clock: FakeClock) -> None:
        spec = RecordingSpec(room_id="r1", callback_url="http://cb.example/x")
        task = Task("t1", 5, spec, TaskState.UPLOADING, Desired.STOPPED, clock())
        self.file = RecordedFile(
            "t1",
            "a.mp4",
            "/spool/a.mp4",
            FileFormat.MP4,
            FileStatus.RECORDED,
            "s1",
            "u1",
            TrackType.AUDIO_VIDEO,
            0,
            id=1,
        )
        self.events: list[tuple[Any, ...]] = []
        self.tasks = _FakeTaskRows(
            task, StorageTarget("s3", "e", "b", "ak", "sk"), self.file, self.events
        )
        self.delivery = _FakeDeliveryRows()
        self.apps = FakeApps()
        self.backup = _FakeBackup()
        self.spool = _FakeSpool()
        self.sender = None

    def __call__(self) -> FakeDeliveryWorld:
        return self

    def __enter__(self) -> FakeDeliveryWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def commit(self) -> None:
        pass


class FakeExecutor:
    """An executor that starts nothing: it remembers each start, and says of each handle
    what the test decides (``alive``: True, False once ``died`` is called, None for unknown)."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, int]] = []
        self.dead: set[str] = set()
        self.killed: list[str] = []
        self.reaps = 0

    def start(self, task_id: str, attempt: int = 1, units: int = 1) -> str:
        self.starts.append((task_id, attempt))
        return f"fake:{len(self.starts)}"

    def died(self, handle: str) -> None:
        self.dead.add(handle)

    def room_for(self, units: int) -> str | None:
        return None

    def alive(self, handle: str) -> bool | None:
        if not handle.startswith("fake:"):
            return None
        return handle not in self.dead

    def exit_detail(self, handle: str) -> str:
        return "worker killed by signal 9 (SIGKILL)"

    def kill(self, handle: str) -> None:
        self.killed.append(handle)
        self.dead.add(handle)

    def reap(self) -> None:
        self.reaps += 1


# An executor that starts no worker: for tests that stop at the API or the delivery.
NoWorkers = FakeExecutor
