"""One RTMP connection as an :class:`asyncio.Protocol`: handshake, commands, media.

Bytes are handled in ``data_received`` without a task switch: the chunk reader turns them into
messages and media goes straight to the live stream's players.  Only the steps that ask the
gate (publish, play, the first media message, the end of a publish) are coroutines; while one
runs, reading is paused and later messages wait in order, so no media is accepted before the
gate has answered.

Bounds (:class:`~cloudrec.media.ingest.limits.IngestLimits`): a connection over the server's
connection caps is dropped at accept; one that has no publish or play accepted within
``auth_timeout_s`` of accept (or of the end of its publish), that leaves more than
``max_reply_backlog_bytes`` of replies unread, or whose chunks go past the chunk reader's limits
is dropped too.  Each is logged once as ``rtmp.refused`` with the reason and the limit's name.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from cloudrec.core.errors import CloudrecError, Kind
from cloudrec.core.rooms import PlayRequest, PublishRequest
from cloudrec.media.ingest import flv, messages
from cloudrec.media.ingest.chunks import ChunkReader, LimitError, Message, encode_message
from cloudrec.media.ingest.handshake import ServerHandshake
from cloudrec.media.ingest.live import CSID_DATA, LiveStream, Player
from cloudrec.media.ingest.meta import build_meta

if TYPE_CHECKING:
    from cloudrec.media.ingest.server import RtmpServer

CSID_CONTROL = 2
CSID_COMMAND = 3
WINDOW_ACK_SIZE = 2_500_000
_BAD_NAME_KINDS = (Kind.INVALID_ARGUMENT, Kind.NOT_FOUND, Kind.CONFLICT)
_MEDIA = (messages.AUDIO, messages.VIDEO)


class RtmpConnection(asyncio.Protocol):
    """A client of :class:`~cloudrec.media.ingest.server.RtmpServer`: one publish or one play."""

    def __init__(self, server: RtmpServer) -> None:
        self.server = server
        self.logger = server.logger
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.remote_addr = ""
        self.label = "?"
        self.handshake: ServerHandshake | None = ServerHandshake()
        self.chunks = ChunkReader(limits=server.limits.chunks)
        self.admitted = False  # counted in the server's connection caps
        self.refused = False
        self.auth_timer: asyncio.TimerHandle | None = None
        self.pending: collections.deque[Message] = collections.deque()
        self.busy: asyncio.Task[None] | None = None
        self.finished: asyncio.Future[None] = self.loop.create_future()
        self.finishing: asyncio.Task[None] | None = None  # held: the loop keeps weak refs
        self.app = ""
        self.next_stream_id = 1
        self.received = 0
        self.acked = 0
        self.peer_window = 0
        self.closing = False
        self.last_read = self.loop.time()
        self.publishing: LiveStream | None = None
        self.publish_stream_id = 0
        self.published_called = False
        self.playing: LiveStream | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.remote_addr, self.label = str(peer[0]), f"{peer[0]}:{peer[1]}"
        self.server.connections.add(self)
        refusal = self.server.admit(self.remote_addr)
        if refusal is not None:
            self.refuse_connection(*refusal)
            return
        self.admitted = True
        self._await_authorisation()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_read = self.loop.time()
        try:
            if self.handshake is not None:
                data = self._handshake(data)
            if not data:
                return
            self.received += len(data)
            if self.peer_window and self.received - self.acked >= self.peer_window:
                self.acked = self.received
                self.send(messages.acknowledgement(self.received), CSID_CONTROL)
            msgs = self.chunks.feed(data)
        except LimitError as exc:
            self.refuse_connection(str(exc), exc.limit)
            return
        except ValueError as exc:
            self.logger.warning("RTMP %s: protocol error: %s", self.label, exc)
            self.abort()
            return
        if self.busy is None:
            self._process(msgs)
        else:
            self.pending.extend(msgs)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.logger.debug("RTMP %s: connection lost: %r", self.label, exc)
        self.finishing = self.loop.create_task(self._finish())

    # Sending and closing.
    def send(self, msg: Message, csid: int = CSID_COMMAND) -> None:
        assert self.transport is not None
        if self.refused:
            return
        self.transport.write(encode_message(msg, csid, self.server.chunk_size))
        # A player's backlog is the Player's business (skip to a key frame, then disconnect).
        backlog = self.transport.get_write_buffer_size()
        limit = self.server.limits.max_reply_backlog_bytes
        if self.playing is None and backlog > limit:
            reason = f"{backlog} bytes of replies unread (limit {limit})"
            self.refuse_connection(reason, "max_reply_backlog_bytes")

    def refuse_connection(self, reason: str, limit: str) -> None:
        """Drop the connection for going past a bound; log it once, with the reason."""
        if not self.refused:
            self.refused = True
            fields = {"peer": self.label, "reason": reason, "limit": limit}
            self.logger.warning("rtmp.refused", extra={"fields": fields})
        self.abort()

    def _await_authorisation(self) -> None:
        timeout_s = self.server.limits.auth_timeout_s
        self.auth_timer = self.loop.call_later(timeout_s, self._authorisation_expired, timeout_s)

    def _authorised(self) -> None:
        if self.auth_timer is not None:
            self.auth_timer.cancel()
            self.auth_timer = None

    def _authorisation_expired(self, timeout_s: float) -> None:
        self.auth_timer = None
        if not self.closing:
            reason = f"no publish or play accepted within {timeout_s:g} s"
            self.refuse_connection(reason, "auth_timeout_s")

    def close(self) -> None:
        """Close after the queued bytes are sent."""
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def idle_for(self, now: float) -> float:
        """Seconds since this connection last sent anything; players are never idle."""
        return 0.0 if self.playing is not None else now - self.last_read

    async def _finish(self) -> None:
        self._authorised()  # nothing left to wait for
        if self.busy is not None:
            await asyncio.gather(self.busy, return_exceptions=True)
        try:
            await self._end_publish("disconnected")
            self._end_play()
        finally:
            if self in self.server.connections:
                self.server.connections.discard(self)
                self.server.closed_bytes += self.received
            if self.admitted:
                self.admitted = False
                self.server.release(self.remote_addr)
            self.finished.set_result(None)

    def _handshake(self, data: bytes) -> bytes:
        assert self.handshake is not None
        assert self.transport is not None
        reply = self.handshake.feed(data)
        if reply:
            self.transport.write(reply)
        if not self.handshake.done:
            return b""
        data, self.handshake = self.handshake.leftover, None
        return data

    # Message dispatch.
    def _process(self, msgs: list[Message] | collections.deque[Message]) -> None:
        """Handle messages in order until one needs the gate; queue the rest behind it."""
        it = iter(msgs)
        for msg in it:
            if self.closing:
                return
            try:
                step = self._handle(msg)
            except ValueError as exc:
                self.logger.warning("RTMP %s: protocol error: %s", self.label, exc)
                self.abort()
                return
            except Exception:
                self.logger.exception("RTMP %s: internal error", self.label)
                self.abort()
                return
            if step is not None:
                self.pending.extendleft(reversed(list(it)))
                self._run(step)
                return

    def _run(self, step: Coroutine[Any, Any, None]) -> None:
        assert self.transport is not None
        self.transport.pause_reading()
        self.busy = self.loop.create_task(self._step(step))

    async def _step(self, step: Coroutine[Any, Any, None]) -> None:
        try:
            await step
        except ValueError as exc:  # a malformed command argument
            self.logger.warning("RTMP %s: protocol error: %s", self.label, exc)
            self.abort()
        except Exception:
            self.logger.exception("RTMP %s: internal error", self.label)
            self.abort()
        self.busy = None
        if self.closing:
            return
        pending, self.pending = self.pending, collections.deque()
        self._process(pending)
        if self.busy is None and not self.closing and self.transport is not None:
            self.transport.resume_reading()

    def _handle(self, msg: Message) -> Coroutine[Any, Any, None] | None:
        type_id = msg.type_id
        if type_id in _MEDIA:
            stream = self.publishing
            if stream is None or msg.stream_id != self.publish_stream_id:
                return None  # media before (or beside) an accepted publish is dropped
            if not self.published_called and not _is_header(msg):
                return self._announce(stream, msg)
            stream.on_media(msg)
        elif type_id == messages.COMMAND_AMF0 or type_id == messages.COMMAND_AMF3:
            payload = msg.payload[1:] if type_id == messages.COMMAND_AMF3 else msg.payload
            return self._on_command(messages.Command.parse(payload), msg.stream_id)
        elif type_id == messages.DATA_AMF0:
            props = messages.parse_metadata(msg.payload)
            if props is not None and self.publishing is not None:
                self.publishing.on_metadata(props, msg.timestamp)
        elif type_id == messages.USER_CONTROL:
            event = messages.UserControl.parse(msg.payload)
            if event.event == messages.PING_REQUEST:
                pong = messages.UserControl(messages.PING_RESPONSE, event.value)
                self.send(pong.message(), CSID_CONTROL)
        elif type_id == messages.WINDOW_ACK_SIZE:
            self.peer_window = messages.parse_u32(msg.payload, "Window Acknowledgement Size")
        # Set Chunk Size and Abort are applied by the chunk reader; Acknowledgement, Set Peer
        # Bandwidth and AMF3 data need no answer.
        return None

    async def _announce(self, stream: LiveStream, msg: Message) -> None:
        self.published_called = True
        video = stream.video_header or (msg if msg.type_id == messages.VIDEO else None)
        audio = stream.audio_header or (msg if msg.type_id == messages.AUDIO else None)
        stream.meta = build_meta(
            stream.metadata, video.payload if video else None, audio.payload if audio else None
        )
        key = stream.request.stream_key
        self.logger.info("RTMP %s: publishing %s: %s", self.label, key, stream.meta)
        await self.server.gate.published(stream.request, stream.meta)
        stream.announced = True
        stream.on_media(msg)

    def _on_command(
        self, cmd: messages.Command, stream_id: int
    ) -> Coroutine[Any, Any, None] | None:
        name = cmd.name
        if name == "connect":
            self._on_connect(cmd)
        elif name == "createStream":
            sid = self.next_stream_id
            self.next_stream_id += 1
            self._result(cmd, None, float(sid))
        elif name == "releaseStream":
            self._result(cmd, None, None)
        elif name == "FCPublish":
            info = _info("NetStream.Publish.Start", cmd.arg_str(0))
            self.send(messages.Command("onFCPublish", 0.0, None, [info]).message())
        elif name == "publish":
            return self._on_publish(cmd, stream_id)
        elif name == "play":
            return self._on_play(cmd, stream_id)
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            self._end_play()
            return self._end_publish(name)
        else:
            self.logger.debug("RTMP %s: ignoring command %r", self.label, name)
        return None

    def _result(self, cmd: messages.Command, *values: Any) -> None:
        if cmd.transaction_id:
            reply = messages.Command("_result", cmd.transaction_id, values[0], list(values[1:]))
            self.send(reply.message())

    def _on_connect(self, cmd: messages.Command) -> None:
        obj = cmd.command_object if isinstance(cmd.command_object, dict) else {}
        app = obj.get("app")
        self.app = app if isinstance(app, str) else ""
        self.send(messages.window_ack_size(WINDOW_ACK_SIZE), CSID_CONTROL)
        self.send(messages.set_peer_bandwidth(WINDOW_ACK_SIZE), CSID_CONTROL)
        self.send(messages.set_chunk_size(self.server.chunk_size), CSID_CONTROL)
        encoding = obj.get("objectEncoding", 0.0)
        self._result(
            cmd,
            {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
            _info(
                "NetConnection.Connect.Success", "Connection succeeded.", objectEncoding=encoding
            ),
        )

    def _status(self, stream_id: int, code: str, description: str, level: str = "status") -> None:
        self.send(messages.status(code, description, level).message(stream_id))

    def _refuse(self, stream_id: int, code: str, what: str, key: str, reason: str) -> None:
        self.logger.warning("RTMP %s: %s %s refused: %s", self.label, what, key, reason)
        self._status(stream_id, code, reason, "error")
        self.close()

    async def _on_publish(self, cmd: messages.Command, stream_id: int) -> None:
        req = PublishRequest(self.app, cmd.arg_str(0), self.remote_addr)
        key = req.stream_key
        bad_name = "NetStream.Publish.BadName"
        if self.publishing is not None or self.playing is not None:
            return self._refuse(stream_id, bad_name, "publish", key, "already busy")
        # The gate refuses a stream id already live (and logs it as a refusal with its reason);
        # add_stream below closes the race of two publishes authorised at once.
        try:
            await self.server.gate.authorize_publish(req)
        except CloudrecError as exc:
            code = bad_name if exc.kind in _BAD_NAME_KINDS else "NetStream.Publish.Denied"
            return self._refuse(stream_id, code, "publish", key, exc.message)
        stream = LiveStream(req)
        if self.closing:
            return None
        if not self.server.add_stream(stream):
            return self._refuse(stream_id, bad_name, "publish", key, "stream is already publishing")
        self.publishing, self.publish_stream_id = stream, stream_id
        self.chunks.publishing = True  # audio and video may now be as large as a key frame is
        self._authorised()
        self.logger.info("RTMP %s: publish %s accepted", self.label, key)
        self.send(messages.UserControl(messages.STREAM_BEGIN, stream_id).message(), CSID_CONTROL)
        self._status(stream_id, "NetStream.Publish.Start", f"{req.stream_name} is now published.")
        return None

    async def _on_play(self, cmd: messages.Command, stream_id: int) -> None:
        req = PlayRequest(self.app, cmd.arg_str(0), self.remote_addr)
        key = req.stream_key
        failed = "NetStream.Play.Failed"
        if self.publishing is not None or self.playing is not None:
            return self._refuse(stream_id, failed, "play", key, "already busy")
        try:
            await self.server.gate.authorize_play(req)
        except CloudrecError as exc:
            code = "NetStream.Play.StreamNotFound" if exc.kind is Kind.NOT_FOUND else failed
            return self._refuse(stream_id, code, "play", key, exc.message)
        self._authorised()
        stream = await self.server.wait_stream(key)
        if self.closing or self.transport is None:
            return None
        if stream is None:
            not_found = "NetStream.Play.StreamNotFound"
            return self._refuse(stream_id, not_found, "play", key, "stream is not live")
        self.send(messages.UserControl(messages.STREAM_BEGIN, stream_id).message(), CSID_CONTROL)
        self._status(stream_id, "NetStream.Play.Reset", f"Playing and resetting {req.stream_name}.")
        self._status(stream_id, "NetStream.Play.Start", f"Started playing {req.stream_name}.")
        access = messages.data_message("|RtmpSampleAccess", True, True, stream_id=stream_id)
        self.send(access, CSID_DATA)
        player = Player(
            self.transport,
            stream_id,
            self.server.chunk_size,
            self.server.player_buffer_bytes,
            self.server.player_stall_timeout_s,
            self.logger,
            self.label,
        )
        stream.attach(self, player, backlog_s=_backlog_s(req))
        self.playing = stream
        self.logger.info("RTMP %s: playing %s", self.label, key)
        return None

    async def _end_publish(self, why: str) -> None:
        stream = self.publishing
        if stream is None:
            return
        self.publishing = None
        self.chunks.publishing = False
        self.server.remove_stream(stream)
        if not self.closing:  # a connection that stays needs a new publish or play in time
            self._await_authorisation()
        self.logger.info(
            "RTMP %s: publish %s ended (%s)", self.label, stream.request.stream_key, why
        )
        for conn in list(stream.players):
            if isinstance(conn, RtmpConnection):
                conn.stop_playing()
        if self.published_called:
            self.published_called = False  # a later publish on this connection is its own
            try:
                await self.server.gate.unpublished(stream.request)
            except Exception:
                self.logger.exception("gate.unpublished failed for %s", stream.request.stream_key)

    def stop_playing(self) -> None:
        """The publisher is gone: tell this player, then disconnect it."""
        stream = self.playing
        if stream is None:
            return
        player = stream.players.pop(self, None)
        self.playing = None
        if player is not None and not self.closing:
            sid = player.stream_id
            self.send(messages.UserControl(messages.STREAM_EOF, sid).message(), CSID_CONTROL)
            self._status(sid, "NetStream.Play.UnpublishNotify", "The stream was unpublished.")
            self._status(sid, "NetStream.Play.Stop", "Stopped playing.")
        self.close()

    def _end_play(self) -> None:
        if self.playing is not None:
            self.playing.players.pop(self, None)
            self.playing = None


def _backlog_s(req: PlayRequest) -> float:
    """``?backlog_ms=N`` in a play name asks for the last N ms of whole GOPs (recorders)."""
    raw = req.name.args.get("backlog_ms", "")
    return int(raw) / 1000 if raw.isdigit() else 0.0


def _info(code: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"level": "status", "code": code, "description": description, **extra}


def _is_header(msg: Message) -> bool:
    if msg.type_id == messages.VIDEO:
        return flv.is_video_sequence_header(msg.payload)
    return flv.is_aac_sequence_header(msg.payload)
