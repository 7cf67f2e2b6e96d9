"""The embedded RTMP server: accepts publishers and players, asks the core's gate about each.

One :class:`RtmpServer` owns a listening socket on the caller's event loop.  Each connection
(:class:`~cloudrec.media.ingest.connection.RtmpConnection`) runs the handshake, then reads
chunks into messages and answers commands (the NetConnection and NetStream commands of RTMP
specification 1.0 §7.2, as ffmpeg's rtmpproto.c, OBS and nginx-rtmp use them).  Publishing and
playing are authorized by the :class:`IngestGate` before any media flows; see
:mod:`cloudrec.media.ingest.live` for the GOP cache, the fan-out and the slow-player policy.

A player that asks for a stream that is not live yet waits up to ``play_wait_s`` for its
publisher (recorders pull right after a publish is announced), then gets
``NetStream.Play.StreamNotFound``.  When the publisher stops, its players get
``NetStream.Play.UnpublishNotify`` and are disconnected, so that pulling clients see the end.
A second publish of a stream key that is live is refused with ``NetStream.Publish.BadName``.

What a client can make the server hold before and after it is authorised is bounded by
:class:`~cloudrec.media.ingest.limits.IngestLimits`; each refusal is one ``rtmp.refused`` log
line with the peer, the reason and the limit's name.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

from cloudrec.core.ports import IngestGate
from cloudrec.media.ingest.connection import RtmpConnection
from cloudrec.media.ingest.limits import IngestLimits, normal_address
from cloudrec.media.ingest.live import LiveStream, LiveStreamInfo

CLOSE_TIMEOUT_S = 3.0

__all__ = ["IngestLimits", "LiveStreamInfo", "RtmpServer"]


class RtmpServer:
    """An asyncio RTMP server; the caller's event loop runs it and every gate call.

    ``chunk_size`` is the outgoing chunk size (bytes) announced to every client;
    ``play_wait_s`` how long a player waits for a publisher that is not live yet;
    ``idle_timeout_s`` how long a publishing (or not yet playing) connection may send nothing;
    ``player_buffer_bytes`` the unsent bytes above which a player skips to the next key frame,
    and ``player_stall_timeout_s`` how long it may stay behind before it is disconnected;
    ``limits`` what a client may make the server hold, and for how long.
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
        limits: IngestLimits | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.gate = gate
        self.host = host
        self.chunk_size = chunk_size
        self.play_wait_s = play_wait_s
        self.idle_timeout_s = idle_timeout_s
        self.player_buffer_bytes = player_buffer_bytes
        self.player_stall_timeout_s = player_stall_timeout_s
        self.limits = limits or IngestLimits()
        self.logger = logger or logging.getLogger("cloudrec.media.ingest")
        self._port = port
        self._server: asyncio.Server | None = None
        self._streams: dict[str, LiveStream] = {}
        self._stream_added = asyncio.Event()
        self.connections: set[RtmpConnection] = set()
        self.closed_bytes = 0  # what the connections that have gone received
        self._admitted = 0
        self._per_address: collections.Counter[str] = collections.Counter()
        self._closing = False
        self._watchdog: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and start accepting connections."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: RtmpConnection(self), self.host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        self._watchdog = asyncio.create_task(self._close_idle())
        self.logger.info("RTMP ingest listening on %s:%d", self.host, self._port)

    @property
    def port(self) -> int:
        """The bound TCP port (the real one after :meth:`start`, also when asked for port 0)."""
        return self._port

    def stats(self) -> tuple[int, int]:
        """Every byte the ingest has read since it started, and its open connections (for
        ``/metrics``)."""
        received = self.closed_bytes + sum(c.received for c in self.connections)
        return received, len(self.connections)

    def live_streams(self) -> dict[str, LiveStreamInfo]:
        """The streams being published now, by stream key."""
        return {key: stream.info() for key, stream in self._streams.items()}

    async def close(self) -> None:
        """Stop listening, disconnect every client and wait for their gate calls to finish.

        Every live publisher's ``gate.unpublished`` has been awaited when this returns.
        """
        self._closing = True
        self._stream_added.set()  # wake players waiting for a publisher
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._server is not None:
            self._server.close()
        conns = list(self.connections)
        for conn in conns:
            conn.close()
        if conns:
            done = [conn.finished for conn in conns]
            _, pending = await asyncio.wait(done, timeout=CLOSE_TIMEOUT_S)
            for conn in conns:
                if not conn.finished.done():
                    conn.abort()
            if pending:
                await asyncio.wait(pending, timeout=CLOSE_TIMEOUT_S)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _close_idle(self) -> None:
        # One timer for all connections: a wait_for per read costs a task per read.
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(self.idle_timeout_s / 4, 5.0))
            now = loop.time()
            for conn in list(self.connections):
                if conn.idle_for(now) > self.idle_timeout_s:
                    self.logger.info(
                        "RTMP %s: idle for %.0f s; closing", conn.label, self.idle_timeout_s
                    )
                    conn.abort()

    def admit(self, address: str) -> tuple[str, str] | None:
        """Count a new connection from ``address``, or say why not: (reason, limit name)."""
        limits = self.limits
        address = normal_address(address)
        if self._admitted >= limits.max_connections:
            return f"{limits.max_connections} connections are open", "max_connections"
        exempt = address in limits.connection_cap_exempt
        if not exempt and self._per_address[address] >= limits.max_connections_per_address:
            reason = f"{limits.max_connections_per_address} connections from {address} are open"
            return reason, "max_connections_per_address"
        self._admitted += 1
        self._per_address[address] += 1
        return None

    def release(self, address: str) -> None:
        """An admitted connection from ``address`` has ended."""
        address = normal_address(address)
        self._admitted -= 1
        self._per_address[address] -= 1
        if self._per_address[address] <= 0:
            del self._per_address[address]

    def is_live(self, key: str) -> bool:
        return key in self._streams

    def announced(self, max_idle_s: float) -> list[LiveStream]:
        """The live streams whose publish the gate has recorded and whose publisher sent
        something within ``max_idle_s`` (not one gone quiet, or half open) and is not being
        closed."""
        now = asyncio.get_running_loop().time()
        return [
            c.publishing
            for c in self.connections
            if c.publishing is not None
            and c.publishing.announced
            and not c.closing
            and c.idle_for(now) <= max_idle_s
            and self.is_current(c.publishing)
        ]

    def is_current(self, stream: LiveStream) -> bool:
        """``stream`` is still the one published under its key (its publisher has not left)."""
        return self._streams.get(stream.request.stream_key) is stream

    def drop_publisher(self, stream: LiveStream) -> None:
        """Disconnect the publisher of ``stream``."""
        for conn in list(self.connections):
            if conn.publishing is stream:
                conn.abort()

    # The stream registry, used by connections.
    def add_stream(self, stream: LiveStream) -> bool:
        key = stream.request.stream_key
        if key in self._streams:
            return False
        self._streams[key] = stream
        self._stream_added.set()
        self._stream_added = asyncio.Event()
        return True

    def remove_stream(self, stream: LiveStream) -> None:
        if self._streams.get(stream.request.stream_key) is stream:
            del self._streams[stream.request.stream_key]

    async def wait_stream(self, key: str) -> LiveStream | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.play_wait_s
        while key not in self._streams:
            if self._closing:
                return None
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stream_added.wait(), remaining)
        return self._streams[key]
