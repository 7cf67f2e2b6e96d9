"""A live stream inside the ingest: its cached headers and GOPs, and the fan-out to players.

Everything here runs on the ingest's event loop and never awaits: the publisher's connection
calls :meth:`LiveStream.on_media`, which writes to every player's transport without blocking.

A new player first gets the metadata and sequence headers, then the current GOP (from the last
video key frame), so that it starts decoding on a key frame; a player that asks for a backlog
(``?backlog_ms=N``, recorders) also gets the whole GOPs that started in the last N ms (at most
``BACKLOG_MAX_S``).  Audio-only streams have no GOP: their players start live.

Each media message is chunked once per distinct player message stream id (in practice once)
and the same bytes are written to every player.  A player whose transport buffer is above
``buffer_limit`` bytes is skipped until the next video key frame arrives with its buffer below
half the limit (so it resumes on a decodable frame); one that stays behind for
``stall_timeout_s`` is disconnected.  The cached burst sent on attach raises that player's
limit by its size, since it is not lag.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cloudrec.core.rooms import PublishRequest, StreamMeta
from cloudrec.media.ingest import flv, messages
from cloudrec.media.ingest.amf0 import EcmaArray
from cloudrec.media.ingest.chunks import Message, encode_message

CSID_DATA = 5
CSID_AUDIO = 4
CSID_VIDEO = 6
GOP_MAX_BYTES = 32 * 1024 * 1024
"""A GOP cache larger than this (no key frame for too long) is dropped."""
BACKLOG_MAX_S = 10.0
BACKLOG_MAX_BYTES = 8 * 1024 * 1024
"""Whole GOPs kept behind the current one, for players that ask for a backlog (recorders:
``?backlog_ms=N``), so that a recording can start at the keyframe nearest the moment it was
asked for even when its worker connects a few seconds later."""


def media_csid(type_id: int) -> int:
    return (
        CSID_VIDEO
        if type_id == messages.VIDEO
        else CSID_AUDIO
        if type_id == messages.AUDIO
        else CSID_DATA
    )


@dataclass(frozen=True)
class LiveStreamInfo:
    """What :meth:`RtmpServer.live_streams` reports about one live stream."""

    request: PublishRequest
    meta: StreamMeta | None
    players: int


class Player:
    """The sending side of one playing connection."""

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        stream_id: int,
        chunk_size: int,
        buffer_limit: int,
        stall_timeout_s: float,
        logger: logging.Logger,
        label: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self._clock = clock
        self.stream_id = stream_id
        self.chunk_size = chunk_size
        self.buffer_limit = buffer_limit
        self.stall_timeout_s = stall_timeout_s
        self.skipping_since: float | None = None
        self.dropped = 0
        self._logger = logger
        self._label = label

    def send(self, msg: Message, csid: int) -> None:
        self.transport.write(encode_message(msg, csid, self.chunk_size))

    def forward(self, data: bytes, key: bool) -> None:
        """Write pre-chunked media, or drop it if this player is behind (see module doc)."""
        transport = self.transport
        if transport.is_closing():
            return
        if self.skipping_since is not None:
            if key and transport.get_write_buffer_size() <= self.buffer_limit // 2:
                self._logger.info(
                    "player %s caught up after %d dropped messages", self._label, self.dropped
                )
                self.skipping_since = None
            else:
                self.dropped += 1
                if self._clock() - self.skipping_since > self.stall_timeout_s:
                    self._logger.warning("player %s stalled; disconnecting", self._label)
                    transport.abort()
                return
        elif transport.get_write_buffer_size() > self.buffer_limit:
            self._logger.warning(
                "player %s is too slow; dropping media until a key frame", self._label
            )
            self.skipping_since = self._clock()
            self.dropped += 1
            return
        transport.write(data)


class LiveStream:
    """One published stream: its request, metadata, sequence headers, GOP cache and players."""

    def __init__(self, request: PublishRequest, clock: Callable[[], float] = time.time) -> None:
        """``clock`` gives wall-clock seconds: backlogs are asked for in recorders' time."""
        self.request = request
        self._clock = clock
        self.meta: StreamMeta | None = None
        self.metadata: dict[str, Any] | None = None
        self.metadata_msg: Message | None = None
        self.video_header: Message | None = None
        self.audio_header: Message | None = None
        self.first_video: bytes | None = None
        self.first_audio: bytes | None = None
        self.gop: list[Message] = []
        self.gop_bytes = 0
        self.gop_arrived = 0.0
        # The sequence headers in effect when the current GOP began.
        self.gop_headers: tuple[Message | None, Message | None] = (None, None)
        # (arrived, GOP, bytes, the sequence headers in effect when it began)
        self.backlog: collections.deque[
            tuple[float, list[Message], int, tuple[Message | None, Message | None]]
        ] = collections.deque()
        self.backlog_bytes = 0
        self.players: dict[object, Player] = {}
        self.announced = False  # the gate has recorded its publish (the stream's row is open)

    def info(self) -> LiveStreamInfo:
        return LiveStreamInfo(self.request, self.meta, len(self.players))

    def on_metadata(self, props: dict[str, Any], timestamp: int) -> None:
        self.metadata = props
        msg = messages.data_message(
            "onMetaData", EcmaArray(props), stream_id=1, timestamp=timestamp
        )
        self.metadata_msg = msg
        self._broadcast(msg, key=False)

    def on_media(self, msg: Message) -> None:
        body = msg.payload
        key = False
        if msg.type_id == messages.VIDEO:
            if flv.is_video_sequence_header(body):
                self._keep_new_header(msg, self.video_header)
                self.video_header = msg
                self._broadcast(msg, key=False)
                return
            if self.first_video is None:
                self.first_video = body
            key = flv.is_keyframe(body)
            if key:
                self._push_backlog()
                self.gop = []
                self.gop_bytes = 0
                self.gop_arrived = self._clock()
                self.gop_headers = (self.video_header, self.audio_header)
        elif msg.type_id == messages.AUDIO:
            if flv.is_aac_sequence_header(body):
                self._keep_new_header(msg, self.audio_header)
                self.audio_header = msg
                self._broadcast(msg, key=False)
                return
            if self.first_audio is None:
                self.first_audio = body
        if key or self.gop:
            self.gop.append(msg)
            self.gop_bytes += len(body)
            if self.gop_bytes > GOP_MAX_BYTES:
                self.gop = []
                self.gop_bytes = 0
        self._broadcast(msg, key)

    def _keep_new_header(self, msg: Message, old: Message | None) -> None:
        """A new codec configuration mid-stream (a relay switching 640x360 to 1280x720):
        cached where it came, so that a player replaying the cache (a recorder's backlog)
        gets each GOP with the configuration it was coded with (issue 10 item 11)."""
        if old is not None and old.payload != msg.payload and self.gop:
            self.gop.append(msg)
            self.gop_bytes += len(msg.payload)

    def _push_backlog(self) -> None:
        """Keep the GOP that just ended; forget GOPs older or larger than the backlog allows."""
        if self.gop:
            self.backlog.append((self.gop_arrived, self.gop, self.gop_bytes, self.gop_headers))
            self.backlog_bytes += self.gop_bytes
        horizon = self._clock() - BACKLOG_MAX_S
        while self.backlog and (
            self.backlog[0][0] < horizon or self.backlog_bytes > BACKLOG_MAX_BYTES
        ):
            self.backlog_bytes -= self.backlog.popleft()[2]

    def _broadcast(self, msg: Message, key: bool) -> None:
        if not self.players:
            return
        encoded: dict[tuple[int, int], bytes] = {}
        csid = media_csid(msg.type_id)
        for player in self.players.values():
            shape = (player.stream_id, player.chunk_size)
            data = encoded.get(shape)
            if data is None:
                data = encoded[shape] = encode_message(
                    Message(msg.type_id, player.stream_id, msg.timestamp, msg.payload),
                    csid,
                    player.chunk_size,
                )
            player.forward(data, key)

    def attach(self, owner: object, player: Player, backlog_s: float = 0.0) -> None:
        """Send the cached state (metadata, sequence headers, the GOPs that started in the last
        ``backlog_s`` seconds and the current GOP), then go live."""
        horizon = self._clock() - min(backlog_s, BACKLOG_MAX_S)
        gops = [
            (g, headers)
            for arrived, g, _, headers in self.backlog
            if backlog_s > 0 and arrived >= horizon
        ]
        gops.append((self.gop, self.gop_headers))
        first, (video, audio) = next(
            ((g, h) for g, h in gops if g), ([], (self.video_header, self.audio_header))
        )
        start = first[0].timestamp if first else 0
        # The headers the first GOP sent was coded with; later ones come inside the GOPs.
        for cached in (self.metadata_msg, video or self.video_header, audio or self.audio_header):
            if cached is not None:
                player.send(
                    replace(cached, stream_id=player.stream_id, timestamp=start),
                    media_csid(cached.type_id),
                )
        burst = 0
        for gop, _ in gops:
            for msg in gop:
                player.send(replace(msg, stream_id=player.stream_id), media_csid(msg.type_id))
                burst += len(msg.payload)
        # The cached burst is not lag: it must not count against the slow-player limit.
        player.buffer_limit += burst
        self.players[owner] = player
