"""The embedded RTMP server: accepts publishers and players, asks the core's gate about each.

One :class:`RtmpServer` owns a listening socket on the caller's event loop.  Each connection
runs the handshake, then reads chunks into messages and answers commands (the NetConnection
and NetStream commands of RTMP specification 1.0 §7.2, as ffmpeg's rtmpproto.c, OBS and
nginx-rtmp use them).  Publishing and playing are authorized by the :class:`IngestGate` before
any media flows; see :mod:`cloudrec.media.ingest.live` for the fan-out and slow-player policy.

A player that asks for a stream that is not live yet waits up to ``play_wait_s`` for its
publisher (recorders pull right after a publish is announced), then gets
``NetStream.Play.StreamNotFound``.  When the publisher stops, its players get
``NetStream.Play.UnpublishNotify`` and are disconnected, so that pulling clients see the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from cloudrec.core.errors import CloudrecError, Kind
from cloudrec.core.ports import IngestGate
from cloudrec.core.rooms import PlayRequest, PublishRequest
from cloudrec.media.ingest import flv, messages
from cloudrec.media.ingest.chunks import ChunkReader, Message, encode_message
from cloudrec.media.ingest.handshake import ServerHandshake
from cloudrec.media.ingest.live import LiveStream, LiveStreamInfo, Player
from cloudrec.media.ingest.meta import build_meta

CSID_CONTROL = 2
CSID_COMMAND = 3
READ_SIZE = 256 * 1024
WINDOW_ACK_SIZE = 2_500_000
HANDSHAKE_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 3.0
_BAD_NAME_KINDS = (Kind.INVALID_ARGUMENT, Kind.NOT_FOUND, Kind.CONFLICT)

__all__ = ["LiveStreamInfo", "RtmpServer"]


class RtmpServer:
    """An asyncio RTMP server; the caller's event loop runs it and every gate call.

    ``chunk_size`` is the outgoing chunk size (bytes) announced to every client;
    ``play_wait_s`` how long a player waits for a publisher that is not live yet;
    ``idle_timeout_s`` how long a publishing (or not yet playing) connection may send nothing;
    ``player_buffer_bytes`` the unsent bytes above which a player skips to the next key frame,
    and ``player_stall_timeout_s`` how long it may stay behind before it is disconnected.
    """

    def __init__(
        self,
        gate: IngestGate,
        host: str = "0.0.0.0",
        port: int = 1935,
        *,
        chunk_size: int = 4096,
        play_wait_s: float = 5.0,
        idle_timeout_s: float = 30.0,
        player_buffer_bytes: int = 4 * 1024 * 1024,
        player_stall_timeout_s: float = 30.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.gate = gate
        self.host = host
        self.chunk_size = chunk_size
        self.play_wait_s = play_wait_s
        self.idle_timeout_s = idle_timeout_s
        self.player_buffer_bytes = player_buffer_bytes
        self.player_stall_timeout_s = player_stall_timeout_s
        self.logger = logger or logging.getLogger("cloudrec.media.ingest")
        self._port = port
        self._server: asyncio.Server | None = None
        self._streams: dict[str, LiveStream] = {}
        self._stream_added = asyncio.Event()
        self._connections: dict[asyncio.Task[None], _Connection] = {}

    async def start(self) -> None:
        """Bind and start accepting connections."""
        self._server = await asyncio.start_server(self._accept, self.host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        self.logger.info("RTMP ingest listening on %s:%d", self.host, self._port)

    @property
    def port(self) -> int:
        """The bound TCP port (the real one after :meth:`start`, also when asked for port 0)."""
        return self._port

    def live_streams(self) -> dict[str, LiveStreamInfo]:
        """The streams being published now, by stream key."""
        return {key: stream.info() for key, stream in self._streams.items()}

    async def close(self) -> None:
        """Stop listening, disconnect every client and wait for their gate calls to finish.

        Every live publisher's ``gate.unpublished`` has been awaited when this returns.
        """
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections.values()):
            conn.close()
        tasks = list(self._connections)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
            for task in pending:
                self._connections[task].abort()
            if pending:
                _, pending = await asyncio.wait(pending, timeout=CLOSE_TIMEOUT_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(self, reader, writer)
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = conn
        try:
            await conn.run()
        finally:
            del self._connections[task]

    def is_live(self, key: str) -> bool:
        return key in self._streams

    # Stream registry, used by connections.
    def _add_stream(self, stream: LiveStream) -> bool:
        key = stream.request.stream_key
        if key in self._streams:
            return False
        self._streams[key] = stream
        self._stream_added.set()
        self._stream_added = asyncio.Event()
        return True

    def _remove_stream(self, stream: LiveStream) -> None:
        if self._streams.get(stream.request.stream_key) is stream:
            del self._streams[stream.request.stream_key]

    async def _wait_stream(self, key: str) -> LiveStream | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.play_wait_s
        while key not in self._streams:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stream_added.wait(), remaining)
        return self._streams[key]


class _Connection:
    """One TCP connection: handshake, then commands; at most one publish or play."""

    def __init__(
        self, server: RtmpServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.logger = server.logger
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.remote_addr = str(peer[0]) if peer else ""
        self.label = f"{self.remote_addr}:{peer[1]}" if peer else "?"
        self.chunks = ChunkReader()
        self.app = ""
        self.next_stream_id = 1
        self.received = 0
        self.acked = 0
        self.peer_window = 0
        self.closing = False
        self.publishing: LiveStream | None = None
        self.publish_stream_id = 0
        self.published_called = False
        self.playing: LiveStream | None = None

    def close(self) -> None:
        self.closing = True
        self.writer.close()

    def abort(self) -> None:
        self.closing = True
        self.writer.transport.abort()

    def send(self, msg: Message, csid: int = CSID_COMMAND) -> None:
        self.writer.write(encode_message(msg, csid, self.server.chunk_size))

    async def run(self) -> None:
        try:
            await asyncio.wait_for(self._handshake(), HANDSHAKE_TIMEOUT_S)
            await self._read_loop()
        except ValueError as exc:
            self.logger.warning("RTMP %s: protocol error: %s", self.label, exc)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
            self.logger.info("RTMP %s: connection ended: %r", self.label, exc)
        finally:
            await self._end_publish("disconnected")
            self._end_play()
            self.writer.close()

    async def _handshake(self) -> None:
        handshake = ServerHandshake()
        while not handshake.done:
            data = await self.reader.read(READ_SIZE)
            if not data:
                raise asyncio.IncompleteReadError(b"", None)
            reply = handshake.feed(data)
            if reply:
                self.writer.write(reply)
        await self._on_bytes(handshake.leftover)

    async def _read_loop(self) -> None:
        while not self.closing:
            if self.playing is None:
                data = await asyncio.wait_for(
                    self.reader.read(READ_SIZE), self.server.idle_timeout_s
                )
            else:
                data = await self.reader.read(READ_SIZE)
            if not data:
                return
            await self._on_bytes(data)

    async def _on_bytes(self, data: bytes) -> None:
        if not data:
            return
        self.received += len(data)
        if self.peer_window and self.received - self.acked >= self.peer_window:
            self.acked = self.received
            self.send(messages.acknowledgement(self.received), CSID_CONTROL)
        for msg in self.chunks.feed(data):
            if self.closing:
                return
            type_id = msg.type_id
            if type_id == messages.VIDEO or type_id == messages.AUDIO:
                stream = self.publishing
                if stream is None or msg.stream_id != self.publish_stream_id:
                    continue  # media before (or beside) an accepted publish is dropped
                if not self.published_called and not _is_header(msg):
                    await self._announce(stream, msg)
                stream.on_media(msg)
            else:
                await self._on_message(msg)

    async def _announce(self, stream: LiveStream, msg: Message) -> None:
        self.published_called = True
        first_video = stream.video_header or (msg if msg.type_id == messages.VIDEO else None)
        first_audio = stream.audio_header or (msg if msg.type_id == messages.AUDIO else None)
        stream.meta = build_meta(
            stream.metadata,
            first_video.payload if first_video else None,
            first_audio.payload if first_audio else None,
        )
        self.logger.info(
            "RTMP %s: publishing %s: %s", self.label, stream.request.stream_key, stream.meta
        )
        await self.server.gate.published(stream.request, stream.meta)

    async def _on_message(self, msg: Message) -> None:
        type_id = msg.type_id
        if type_id == messages.COMMAND_AMF0 or type_id == messages.COMMAND_AMF3:
            payload = msg.payload[1:] if type_id == messages.COMMAND_AMF3 else msg.payload
            await self._on_command(messages.Command.parse(payload), msg.stream_id)
        elif type_id == messages.DATA_AMF0:
            props = messages.parse_metadata(msg.payload)
            if props is not None and self.publishing is not None:
                self.publishing.on_metadata(props, msg.timestamp)
        elif type_id == messages.USER_CONTROL:
            event = messages.UserControl.parse(msg.payload)
            if event.event == messages.PING_REQUEST:
                self.send(
                    messages.UserControl(messages.PING_RESPONSE, event.value).message(),
                    CSID_CONTROL,
                )
        elif type_id == messages.WINDOW_ACK_SIZE:
            self.peer_window = messages.parse_u32(msg.payload, "Window Acknowledgement Size")
        # Set Chunk Size and Abort are applied by the chunk reader; Acknowledgement, Set Peer
        # Bandwidth and AMF3 data need no answer.

    async def _on_command(self, cmd: messages.Command, stream_id: int) -> None:
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
            self.send(
                messages.Command(
                    "onFCPublish", 0.0, None, [_info("NetStream.Publish.Start", cmd.arg_str(0))]
                ).message()
            )
        elif name == "publish":
            await self._on_publish(cmd, stream_id)
        elif name == "play":
            await self._on_play(cmd, stream_id)
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            await self._end_publish(name)
            self._end_play()
        else:
            self.logger.debug("RTMP %s: ignoring command %r", self.label, name)

    def _result(self, cmd: messages.Command, *values: Any) -> None:
        if cmd.transaction_id:
            self.send(
                messages.Command(
                    "_result", cmd.transaction_id, values[0], list(values[1:])
                ).message()
            )

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
        if self.publishing is not None or self.playing is not None:
            return self._refuse(
                stream_id, "NetStream.Publish.BadName", "publish", key, "already busy"
            )
        if self.server.is_live(key):
            return self._refuse(
                stream_id,
                "NetStream.Publish.BadName",
                "publish",
                key,
                "stream is already publishing",
            )
        try:
            await self.server.gate.authorize_publish(req)
        except CloudrecError as exc:
            code = (
                "NetStream.Publish.BadName"
                if exc.kind in _BAD_NAME_KINDS
                else "NetStream.Publish.Denied"
            )
            return self._refuse(stream_id, code, "publish", key, exc.message)
        stream = LiveStream(req)
        if self.closing:
            return None
        if not self.server._add_stream(stream):
            return self._refuse(
                stream_id,
                "NetStream.Publish.BadName",
                "publish",
                key,
                "stream is already publishing",
            )
        self.publishing, self.publish_stream_id = stream, stream_id
        self.logger.info("RTMP %s: publish %s accepted", self.label, key)
        self.send(messages.UserControl(messages.STREAM_BEGIN, stream_id).message(), CSID_CONTROL)
        self._status(stream_id, "NetStream.Publish.Start", f"{req.stream_name} is now published.")
        return None

    async def _on_play(self, cmd: messages.Command, stream_id: int) -> None:
        req = PlayRequest(self.app, cmd.arg_str(0), self.remote_addr)
        key = req.stream_key
        if self.publishing is not None or self.playing is not None:
            return self._refuse(stream_id, "NetStream.Play.Failed", "play", key, "already busy")
        try:
            await self.server.gate.authorize_play(req)
        except CloudrecError as exc:
            code = (
                "NetStream.Play.StreamNotFound"
                if exc.kind is Kind.NOT_FOUND
                else "NetStream.Play.Failed"
            )
            return self._refuse(stream_id, code, "play", key, exc.message)
        stream = await self.server._wait_stream(key)
        if self.closing:
            return None
        if stream is None:
            return self._refuse(
                stream_id, "NetStream.Play.StreamNotFound", "play", key, "stream is not live"
            )
        self.send(messages.UserControl(messages.STREAM_BEGIN, stream_id).message(), CSID_CONTROL)
        self._status(stream_id, "NetStream.Play.Reset", f"Playing and resetting {req.stream_name}.")
        self._status(stream_id, "NetStream.Play.Start", f"Started playing {req.stream_name}.")
        self.send(messages.data_message("|RtmpSampleAccess", True, True, stream_id=stream_id), 5)
        player = Player(
            self.writer.transport,
            stream_id,
            self.server.chunk_size,
            self.server.player_buffer_bytes,
            self.server.player_stall_timeout_s,
            self.logger,
            self.label,
        )
        stream.attach(self, player)
        self.playing = stream
        self.logger.info("RTMP %s: playing %s", self.label, key)
        return None

    async def _end_publish(self, why: str) -> None:
        stream = self.publishing
        if stream is None:
            return
        self.publishing = None
        self.server._remove_stream(stream)
        self.logger.info(
            "RTMP %s: publish %s ended (%s)", self.label, stream.request.stream_key, why
        )
        for conn in list(stream.players):
            if isinstance(conn, _Connection):
                conn._stop_playing()
        if self.published_called:
            try:
                await self.server.gate.unpublished(stream.request)
            except Exception:
                self.logger.exception("gate.unpublished failed for %s", stream.request.stream_key)

    def _stop_playing(self) -> None:
        """The publisher is gone: tell this player, then disconnect it."""
        stream = self.playing
        if stream is None:
            return
        player = stream.players.pop(self, None)
        self.playing = None
        if player is not None:
            sid = player.stream_id
            self.send(messages.UserControl(messages.STREAM_EOF, sid).message(), CSID_CONTROL)
            self._status(sid, "NetStream.Play.UnpublishNotify", "The stream was unpublished.")
            self._status(sid, "NetStream.Play.Stop", "Stopped playing.")
        self.close()

    def _end_play(self) -> None:
        if self.playing is not None:
            self.playing.players.pop(self, None)
            self.playing = None


def _info(code: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"level": "status", "code": code, "description": description, **extra}


def _is_header(msg: Message) -> bool:
    body = msg.payload
    if msg.type_id == messages.VIDEO:
        return flv.is_video_sequence_header(body)
    return flv.is_aac_sequence_header(body)
