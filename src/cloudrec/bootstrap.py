"""The composition root: the one place that wires adapters to the core."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from cloudrec.api.zego.auth import NONCE_WINDOW_S, LimitsNonceStore, NonceStore
from cloudrec.callbacks.formats import callback_formats
from cloudrec.callbacks.sender import HttpCallbackSender
from cloudrec.config import Settings, node_files, node_name
from cloudrec.core.callbacks import Callbacks
from cloudrec.core.delivery import DeliveryPolicy, DeliveryService
from cloudrec.core.errors import CloudrecError
from cloudrec.core.ports import TaskWatch, UnitOfWork
from cloudrec.core.recording import Executor, TaskService
from cloudrec.core.rooms import EMBEDDED, PublishRequest, StreamMeta
from cloudrec.core.service import AppService, Clock, PublishTarget, RoomService
from cloudrec.db.engine import make_engine, upgrade
from cloudrec.db.nonces import DatabaseNonceStore
from cloudrec.db.repositories import uow_factory
from cloudrec.db.tasks import SqlTaskWatch
from cloudrec.executor import HostExecutor, LocalExecutor
from cloudrec.outbound import OutboundPolicy, resolve_target
from cloudrec.secretbox import FernetSecretBox, load_key
from cloudrec.storage.backup import LocalBackupStore, LocalSpool
from cloudrec.storage.s3 import S3ObjectStore

if TYPE_CHECKING:
    from cloudrec.media.ingest.server import RtmpServer

log = logging.getLogger("cloudrec.ingest")

# A publisher quiet for longer than this is not taken back by a woken node (it may be half
# open, its publisher gone elsewhere); one merely behind in its reads is taken at the next beat.
READOPT_IDLE_S = 5.0


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Container:
    settings: Settings
    engine: Engine
    uow: Callable[[], UnitOfWork]
    apps: AppService
    rooms: RoomService
    tasks: TaskService
    delivery: DeliveryService
    executor: Executor
    clock: Clock
    nonces: NonceStore
    callbacks: Callbacks
    watch: TaskWatch  # what a worker reads every tick

    def check_target(self, what: str, url: str) -> None:
        """Refuse a URL a request gives (callback, image, storage endpoint) that resolves to a
        private, loopback, link-local or metadata address, unless the deployment allows
        private targets.  A name that does not resolve now is accepted: delivery retries it,
        and checks again when it connects."""
        policy = OutboundPolicy(allow_private=self.settings.allow_private_targets)
        try:
            resolve_target(url, policy)
        except CloudrecError as exc:
            if exc.reason == "target_unresolvable":
                return
            raise CloudrecError.invalid_argument(f"{what}: {exc.message}", exc.reason) from exc

    def rtmp_pull_url(self, app_id: int, room_id: str, stream_id: str) -> str:
        s = self.settings
        return f"rtmp://{s.rtmp_pull_host}:{s.rtmp_port}/{app_id}/{room_id}/{stream_id}"


def spool_free_bytes(settings: Settings) -> int:
    """Free bytes on the spool's own disk (the data dir's until the spool exists)."""
    spool = settings.spool_dir
    return shutil.disk_usage(spool if spool.exists() else settings.data_dir).free


def bootstrap(
    settings: Settings,
    clock: Clock = utc_now,
    migrate: bool = True,
    executor: Executor | None = None,
) -> Container:
    """Open the database (migrating it to head) and build the services."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database)
    if migrate:
        upgrade(engine)
    box = FernetSecretBox(load_key(settings.secret_key, settings.data_dir))
    uow = uow_factory(engine, box)
    callbacks = callback_formats()
    if executor is None and settings.executor == "ray":
        from cloudrec.cluster.executor import RayExecutor  # Ray only where it is asked for

        executor = RayExecutor(settings)
    if executor is None:
        executor = (
            HostExecutor(settings, settings.tasks_per_host)
            if settings.executor == "host"
            else LocalExecutor(settings)
        )
    return Container(
        settings=settings,
        engine=engine,
        uow=uow,
        apps=AppService(uow, clock),
        rooms=RoomService(
            uow,
            clock,
            node_name(settings),
            timedelta(seconds=settings.ingest_lease_s),
            settings.pull_secret,
            settings.loopback_plays,
        ),
        tasks=TaskService(
            uow,
            clock,
            executor,
            settings.max_tasks_per_app,
            timedelta(seconds=settings.resource_ttl_s),
            spool_free=lambda: spool_free_bytes(settings),
            min_free_bytes=settings.min_free_spool_mb * 2**20,
        ),
        delivery=DeliveryService(
            uow,
            clock,
            store=S3ObjectStore(
                settings.storage_endpoint_override,
                read_timeout_s=settings.storage_timeout_s,
                policy=OutboundPolicy(allow_private=settings.allow_private_targets),
            ),
            backup=LocalBackupStore(settings.backup_dir),
            sender=HttpCallbackSender(
                OutboundPolicy(
                    allow_private=settings.allow_private_targets,
                    connect_timeout_s=3.0,
                    read_timeout_s=5.0,
                    total_timeout_s=10.0,
                )
            ),
            spool=LocalSpool(),
            policy=DeliveryPolicy(
                upload_attempts=settings.upload_attempts,
                upload_backoff_s=settings.upload_backoff_s,
                backup_retry_s=settings.backup_retry_s,
                backup_retention=timedelta(seconds=settings.backup_retention_s),
                kept_retention=timedelta(seconds=settings.kept_retention_s),
                callback_attempts=settings.callback_attempts,
                callback_backoff_s=settings.callback_backoff_s,
                callback_backoff_max_s=settings.callback_backoff_max_s,
            ),
            callbacks=callbacks,
            remote=node_files(settings),
        ),
        executor=executor,
        clock=clock,
        nonces=nonce_store(settings, engine, clock),
        callbacks=callbacks,
        watch=SqlTaskWatch(engine),
    )


def nonce_store(settings: Settings, engine: Engine, clock: Clock) -> NonceStore:
    """Signed-request nonces: in the task database, or in the shared rate-limit storage when
    one is configured (Redis); never in one process's memory, which a restart forgets."""
    if settings.rate_limit_storage.startswith("memory://"):
        return DatabaseNonceStore(engine, clock, timedelta(seconds=NONCE_WINDOW_S))
    return LimitsNonceStore(settings.rate_limit_storage, NONCE_WINDOW_S)


class EmbeddedIngestGate:
    """The core's room service as seen by the embedded RTMP server (an ``IngestGate``).

    Database work runs in a thread so that it never blocks the ingest's event loop.
    """

    SOURCE = EMBEDDED

    def __init__(self, container: Container) -> None:
        self._c = container

    async def authorize_publish(self, req: PublishRequest) -> None:
        target = await asyncio.to_thread(self._target, req)
        await asyncio.to_thread(self._c.rooms.authorize_publish, target, req.remote_addr)

    async def published(self, req: PublishRequest, meta: StreamMeta) -> None:
        target = self._target(req)
        a = target.address
        url = self._c.rtmp_pull_url(a.app_id, a.room_id, target.stream_id)
        await asyncio.to_thread(
            self._c.rooms.published, target, meta, url, self.SOURCE, req.remote_addr
        )

    async def unpublished(self, req: PublishRequest) -> None:
        target = self._target(req)
        await asyncio.to_thread(
            self._c.rooms.unpublished_here, target, "publisher left", req.remote_addr
        )

    async def readopt(self, rtmp: RtmpServer) -> int:
        """Publishers still connected to this node whose streams it no longer holds (it
        stalled past its lease, frozen or cut off from the database, and another node ended
        its streams): their streams live here again, as new sessions that recordings follow,
        or, where the id is live elsewhere now, the publisher is dropped.  Returns how many
        were live again."""
        streams = rtmp.announced(max_idle_s=READOPT_IDLE_S)
        if not streams:
            return 0
        held = await asyncio.to_thread(self._c.rooms.held_here)
        again = 0
        for stream in streams:
            req = stream.request
            target = self._target(req)
            a = target.address
            if (a.app_id, a.room_id, target.stream_id) in held or not rtmp.is_current(stream):
                continue
            url = self._c.rtmp_pull_url(a.app_id, a.room_id, target.stream_id)
            meta = stream.meta or StreamMeta()
            rooms = self._c.rooms
            if not await asyncio.to_thread(rooms.readopt, target, meta, url, req.remote_addr):
                log.warning(
                    "stream.dropped_live_elsewhere", extra={"fields": {"key": req.stream_key}}
                )
                rtmp.drop_publisher(stream)
                continue
            again += 1
            if not rtmp.is_current(stream):  # it left meanwhile: its end may have come first
                await self.unpublished(req)
        return again

    async def authorize_play(self, req: PublishRequest) -> None:
        target = await asyncio.to_thread(self._target, req)
        await asyncio.to_thread(self._c.rooms.authorize_play, target, req.remote_addr)

    def _target(self, req: PublishRequest) -> PublishTarget:
        try:
            return self._c.rooms.target_of(req)
        except CloudrecError as exc:
            self._c.rooms.refused(None, None, None, None, req.remote_addr, exc)
            raise
