"""The service layer: apps, publish authorisation and the room directory.

Methods are synchronous and each opens one unit of work (one transaction); callers on an event
loop run them in a thread.  Time comes from the injected ``clock`` (aware UTC datetimes).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cloudrec.core.apps import MAX_APP_ID, SECRET_KINDS, App, check_app_id, new_secret
from cloudrec.core.errors import CloudrecError
from cloudrec.core.ports import UnitOfWork
from cloudrec.core.rooms import (
    EMBEDDED,
    LiveStream,
    PublishRequest,
    RoomAddress,
    RoomEvent,
    StreamMeta,
    StreamName,
    check_id,
)
from cloudrec.core.tokens import make_publish_token, verify_publish_token

log = logging.getLogger("cloudrec.rooms")

Clock = Callable[[], datetime]


def is_loopback(addr: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


@dataclass(frozen=True)
class PublishTarget:
    """Who publishes what, once a publish request has been understood."""

    address: RoomAddress
    stream_id: str
    user_id: str
    token: str | None
    pull: str | None = None  # a recorder's internal credential (``RoomService`` pull_secret)


def _event_fields(event: RoomEvent) -> dict[str, object]:
    return {k: v for k, v in vars(event).items() if v not in (None, "") and k != "at"}


class AppService:
    def __init__(self, uow: Callable[[], UnitOfWork], clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    def create(self, app_id: int) -> App:
        app = App.create(app_id, self._clock())
        with self._uow() as uow:
            if uow.apps.get(app_id) is not None:
                raise CloudrecError.conflict(f"app {app_id} already exists")
            uow.apps.add(app)
            uow.commit()
        return app

    def get(self, app_id: int) -> App:
        app = None
        if 1 <= app_id <= MAX_APP_ID:  # no other exists (nor fits the database's integer)
            with self._uow() as uow:
                app = uow.apps.get(app_id)
        if app is None:
            raise CloudrecError.not_found(f"app {app_id} does not exist", reason="app_unknown")
        return app

    def list(self) -> list[App]:
        with self._uow() as uow:
            return uow.apps.list()

    def rotate_secret(self, app_id: int, kind: str) -> App:
        if kind not in SECRET_KINDS:
            raise CloudrecError.invalid_argument(
                f"secret kind {kind!r} is not one of {', '.join(SECRET_KINDS)}"
            )
        with self._uow() as uow:
            if uow.apps.get(app_id) is None:
                raise CloudrecError.not_found(f"app {app_id} does not exist", reason="app_unknown")
            uow.apps.set_secret(app_id, kind, new_secret())
            uow.commit()
            app = uow.apps.get(app_id)
        assert app is not None
        return app

    def set_callback_url(self, app_id: int, url: str | None) -> App:
        """The app's own callback URL (None or "": none), for dialects whose requests name
        none; tasks started afterwards use it."""
        with self._uow() as uow:
            app = uow.apps.get(app_id)
            if app is None:
                raise CloudrecError.not_found(f"app {app_id} does not exist", reason="app_unknown")
            uow.apps.set_callback_url(app_id, app.with_callback_url(url).callback_url)
            uow.commit()
            app = uow.apps.get(app_id)
        assert app is not None
        return app

    def authenticate(self, app_id: int, secret: str) -> App:
        """The app whose server secret is ``secret``; ``unauthenticated`` otherwise (an app id
        outside 1..MAX_APP_ID too, unread: issue 11, a 30-digit AppId answered HTTP 500
        before any credential was checked)."""
        app = None
        if 1 <= app_id <= MAX_APP_ID:
            with self._uow() as uow:
                app = uow.apps.get(app_id)
        if app is None or not hmac.compare_digest(app.server_secret, secret):
            raise CloudrecError.unauthenticated("wrong app id or server secret")
        return app

    def publish_token(self, app_id: int, room_id: str, stream_id: str, ttl_s: int) -> str:
        app = self.get(app_id)
        check_id("room id", room_id)
        check_id("stream id", stream_id)
        if ttl_s <= 0:
            raise CloudrecError.invalid_argument(
                f"ttl {ttl_s} must be a positive number of seconds"
            )
        expires = int(self._clock().timestamp()) + ttl_s
        return make_publish_token(app.publish_secret, app_id, room_id, stream_id, expires)


class RoomService:
    """Decides who may publish and play, and keeps the room directory.

    ``node`` names this ingest node: the embedded ingest's streams are its own, and the
    streams of another node that has not beaten for ``lease`` are ended (:meth:`beat`).
    """

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        clock: Clock,
        node: str = "",
        lease: timedelta = timedelta(seconds=10),
        pull_secret: str = "",
        loopback_plays: bool = True,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._node = node
        self._lease = lease
        self._pull_secret = pull_secret
        self._loopback_plays = loopback_plays
        self._beaten_at: datetime | None = None  # this node's last beat that got through
        self._judge_from: datetime | None = None  # after a late beat: the others' grace

    def understand(self, app_id: int, room_id: str, stream_name: str) -> PublishTarget:
        name = StreamName.parse(stream_name)
        check_app_id(app_id)
        check_id("room id", room_id)
        check_id("stream id", name.stream_id)
        user_id = check_id("user id", name.args.get("uid") or name.stream_id)
        return PublishTarget(
            RoomAddress(app_id, room_id),
            name.stream_id,
            user_id,
            name.args.get("token"),
            name.args.get("pull"),
        )

    def target_of(self, req: PublishRequest) -> PublishTarget:
        address = RoomAddress.parse(req.app_path)
        return self.understand(address.app_id, address.room_id, req.stream_name)

    def authorize_publish(self, target: PublishTarget, remote_addr: str) -> None:
        """Refuse (raise) a publish with no, a bad or an expired token, an unknown app, or a
        stream id already live in the room; log and store every refusal."""
        try:
            self._check_token(target)
            a = target.address
            if self._is_live(a, target.stream_id) and self._still_held(a, target.stream_id):
                raise CloudrecError.conflict(
                    f"stream {target.stream_id!r} is already live in room {a.room_id!r}",
                    reason="stream_live",
                )
        except CloudrecError as exc:
            self.refused(
                target.address.app_id,
                target.address.room_id,
                target.stream_id,
                target.user_id,
                remote_addr,
                exc,
            )
            raise

    def _is_live(self, a: RoomAddress, stream_id: str) -> bool:
        with self._uow() as uow:
            return uow.rooms.is_live(a.app_id, a.room_id, stream_id)

    def _still_held(self, a: RoomAddress, stream_id: str) -> bool:
        """Whether a live id stays live once the streams of lost nodes end: a publisher of a
        lost node reconnecting here is taken at once, not when the next beat sweeps."""
        self._end_lost()
        return self._is_live(a, stream_id)

    def authorize_play(self, target: PublishTarget, remote_addr: str) -> None:
        """Players need a valid publish token; recorders sign with the internal pull
        credential instead, or (``loopback_plays``) play from loopback without one."""
        try:
            if target.pull is not None:
                if not self._pull_secret:
                    raise CloudrecError.unauthenticated(
                        "a pull credential, but this ingest has no pull_secret", "pull_invalid"
                    )
                a = target.address
                verify_publish_token(
                    self._pull_secret,
                    a.app_id,
                    a.room_id,
                    target.stream_id,
                    target.pull,
                    self._clock().timestamp(),
                )
                return
            if self._loopback_plays and is_loopback(remote_addr):
                return
            self._check_token(target)
        except CloudrecError as exc:
            self.refused(
                target.address.app_id,
                target.address.room_id,
                target.stream_id,
                target.user_id,
                remote_addr,
                exc,
                action="play",
            )
            raise

    def _check_token(self, target: PublishTarget) -> None:
        a = target.address
        with self._uow() as uow:
            app = uow.apps.get(a.app_id)
        if app is None:
            raise CloudrecError.not_found(f"app {a.app_id} does not exist", reason="app_unknown")
        verify_publish_token(
            app.publish_secret,
            a.app_id,
            a.room_id,
            target.stream_id,
            target.token,
            self._clock().timestamp(),
        )

    def refused(
        self,
        app_id: int | None,
        room_id: str | None,
        stream_id: str | None,
        user_id: str | None,
        remote_addr: str,
        error: CloudrecError,
        action: str = "publish",
    ) -> None:
        event = RoomEvent(
            kind=f"{action}_refused",
            app_id=app_id,
            room_id=room_id,
            stream_id=stream_id,
            user_id=user_id,
            at=self._clock(),
            remote_addr=remote_addr,
            detail=error.reason or error.kind.value,
        )
        log.warning(
            "stream.%s_refused",
            action,
            extra={"fields": {**_event_fields(event), "reason": error.message}},
        )
        with self._uow() as uow:
            uow.rooms.add_event(event)
            uow.commit()

    def published(
        self,
        target: PublishTarget,
        meta: StreamMeta,
        pull_url: str,
        source: str,
        remote_addr: str,
    ) -> LiveStream:
        a = target.address
        stream = LiveStream(
            app_id=a.app_id,
            room_id=a.room_id,
            stream_id=target.stream_id,
            user_id=target.user_id,
            meta=meta,
            started_at=self._clock(),
            pull_url=pull_url,
            source=source,
            node=self._node if source == EMBEDDED else "",
        )
        event = RoomEvent(
            "published",
            a.app_id,
            a.room_id,
            target.stream_id,
            target.user_id,
            stream.started_at,
            remote_addr,
            detail=source,
        )
        try:
            self._open(stream, event)
        except CloudrecError as exc:
            # Taken since it was authorized, maybe by a node that has died since.
            if exc.reason != "stream_live" or self._still_held(a, target.stream_id):
                raise
            self._open(stream, event)
        log.info(
            "stream.published",
            extra={
                "fields": {
                    **_event_fields(event),
                    "pull_url": pull_url,
                    **{k: v for k, v in vars(meta).items() if v is not None},
                }
            },
        )
        return stream

    def unpublished(
        self, target: PublishTarget, reason: str, remote_addr: str = "", node: str | None = None
    ) -> bool:
        """The stream has ended; with ``node``, only if that ingest node holds it."""
        a = target.address
        at = self._clock()
        event = RoomEvent(
            "unpublished",
            a.app_id,
            a.room_id,
            target.stream_id,
            target.user_id,
            at,
            remote_addr or None,
            detail=reason,
        )
        with self._uow() as uow:
            was_live = uow.rooms.close(a.app_id, a.room_id, target.stream_id, at, reason, node)
            if was_live:
                uow.rooms.add_event(event)
            uow.commit()
        if was_live:
            log.info("stream.unpublished", extra={"fields": _event_fields(event)})
        return was_live

    def unpublished_here(self, target: PublishTarget, reason: str, remote_addr: str) -> bool:
        """The embedded ingest of this node saw the publisher leave: ends the stream if this
        node still holds it (after a stall, another node may hold it now)."""
        return self.unpublished(target, reason, remote_addr, node=self._node)

    def unpublished_by_url(self, source: str, pull_url: str, reason: str, remote_addr: str) -> bool:
        """An external media server says the stream it serves at ``pull_url`` has ended."""
        with self._uow() as uow:
            stream = uow.rooms.live_by_url(source, pull_url)
        if stream is None:
            return False
        target = PublishTarget(
            RoomAddress(stream.app_id, stream.room_id), stream.stream_id, stream.user_id, None
        )
        return self.unpublished(target, reason, remote_addr)

    def update_meta(self, target: PublishTarget, meta: StreamMeta) -> None:
        a = target.address
        with self._uow() as uow:
            uow.rooms.update_meta(a.app_id, a.room_id, target.stream_id, meta)
            uow.commit()

    def close_stale(self, source: str, reason: str) -> int:
        """At start-up: the streams this node's previous process left open can no longer be
        live (another ingest node's are its own)."""
        with self._uow() as uow:
            count = uow.rooms.close_all(source, self._node, self._clock(), reason)
            uow.commit()
        if count:
            log.info("streams.closed_stale", extra={"fields": {"count": count, "reason": reason}})
        return count

    def beat(self) -> int:
        """This ingest node is alive; the embedded streams of nodes that have not said so for
        the lease end now (their publishers went with them and reconnect elsewhere). Returns
        how many ended."""
        now = self._clock()
        with self._uow() as uow:
            uow.rooms.beat(self._node, now)
            uow.commit()
        before, self._beaten_at = self._beaten_at, now
        if before is not None and now - before > self._lease:
            # This node could not beat for a lease either (the database was unreachable, or
            # this process stalled): the others' beats were most likely lost the same way.
            # It judges them again once they have had a lease to beat.
            log.warning(
                "streams.beat_late",
                extra={"fields": {"late_s": round((now - before).total_seconds(), 1)}},
            )
            self._judge_from = now + self._lease
            return 0
        return self._end_lost()

    def held_here(self) -> set[tuple[int, str, str]]:
        """(app id, room id, stream id) of every embedded stream live on this node."""
        with self._uow() as uow:
            return uow.rooms.live_keys(EMBEDDED, self._node)

    def readopt(
        self, target: PublishTarget, meta: StreamMeta, pull_url: str, remote_addr: str
    ) -> bool:
        """A publisher still connected to this node whose stream is no longer live here: this
        node stalled (frozen, or cut off from the database) past its lease and another node
        ended its streams.  The stream is live here again, as a new session, unless its id
        is live elsewhere now (False: the publisher came back on another node, or another
        took the id; this connection is to be dropped)."""
        try:
            self.published(target, meta, pull_url, EMBEDDED, remote_addr)
        except CloudrecError as exc:
            if exc.reason == "stream_live":
                return False
            raise
        return True

    def _end_lost(self) -> int:
        """End the streams of the nodes past their lease; none while this node itself has not
        beaten within a lease (it cannot tell their silence from its own)."""
        now = self._clock()
        if self._beaten_at is None or now - self._beaten_at > self._lease:
            return 0
        if self._judge_from is not None and now < self._judge_from:
            return 0
        with self._uow() as uow:
            lost = uow.rooms.lost(EMBEDDED, now - self._lease, self._node)
        ended = 0
        for stream in lost:
            target = PublishTarget(
                RoomAddress(stream.app_id, stream.room_id), stream.stream_id, stream.user_id, None
            )
            # Only that node's row: the publisher may already be live again on another node.
            ended += self.unpublished(target, f"ingest node {stream.node} lost", node=stream.node)
        return ended

    def _open(self, stream: LiveStream, event: RoomEvent) -> None:
        with self._uow() as uow:
            uow.rooms.open(stream)
            uow.rooms.add_event(event)
            uow.commit()

    def live(self, app_id: int, room_id: str | None = None) -> list[LiveStream]:
        with self._uow() as uow:
            return uow.rooms.live(app_id, room_id)
