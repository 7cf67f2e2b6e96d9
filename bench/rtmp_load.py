"""The ingest benchmark's load generator: N RTMP publishers and N players in one asyncio process.

Run by ``bench/ingest.py`` as ``python bench/rtmp_load.py`` with a JSON job on stdin; prints one
JSON result line on stdout.  The job names the FLV file, the streams (RTMP app + stream name
to publish and to play), the server's pid, the warm-up and the measurement window.

Publishers send the FLV's tags paced by their timestamps, looping with increasing timestamps;
start times are spread over one GOP so that key frames of different streams do not coincide.
Players parse the chunks they receive and count media messages and payload bytes.  During the
window the generator samples the server's CPU time (``/proc/PID/stat``), its own, the whole
machine's, media bytes published and delivered, and how late each tag was written (pacing lag).

The RTMP client uses cloudrec's sans-I/O modules (handshake, chunks, messages, AMF0).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flvfile import TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO, Tag, read_tags

from cloudrec.media.ingest import amf0, messages
from cloudrec.media.ingest.chunks import ChunkReader, Message, encode_message
from cloudrec.media.ingest.handshake import ClientHandshake

CHUNK_SIZE = 4096
CSID_CONTROL = 2
CSID_COMMAND = 3
CSID_AUDIO = 4
CSID_VIDEO = 6
CSID_STREAM = 8
TICK_S = 0.005
SETUP_CONCURRENCY = 20
SETUP_TIMEOUT_S = 60.0
CLIENT_WINDOW_ACK_SIZE = 5_000_000
CLK_TCK = os.sysconf("SC_CLK_TCK")


class RtmpError(Exception):
    """The server refused a command or closed the connection."""


class RtmpClient(asyncio.Protocol):
    """One RTMP client connection: handshake, commands, and counting of the media it receives."""

    def __init__(self, app: str, tc_url: str) -> None:
        loop = asyncio.get_running_loop()
        self.app = app
        self.tc_url = tc_url
        self.transport: asyncio.Transport | None = None
        self.handshake = ClientHandshake()
        self.handshaken: asyncio.Future[None] = loop.create_future()
        self.reader = ChunkReader()
        self.out_chunk_size = 128
        self.next_txn = 1.0
        self.pending: dict[float, asyncio.Future[messages.Command]] = {}
        self.statuses: list[dict[str, Any]] = []
        self.status_changed: asyncio.Future[None] = loop.create_future()
        self.lost: BaseException | None = None
        self.received = 0
        self.acked = 0
        self.window = 0
        self.media_msgs = 0
        self.media_bytes = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.handshake.start())

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or RtmpError("connection closed by the server")
        for fut in [self.handshaken, self.status_changed, *self.pending.values()]:
            if not fut.done():
                fut.set_exception(self.lost)
                fut.exception()  # retrieved here: nobody may be waiting on it

    def data_received(self, data: bytes) -> None:
        if not self.handshake.done:
            c2 = self.handshake.feed(data)
            if not self.handshake.done:
                return
            self.write(c2)
            self.handshaken.set_result(None)
            data = self.handshake.leftover
            if not data:
                return
        self.received += len(data)
        if self.window and self.received - self.acked >= self.window:
            self.acked = self.received
            self.send(messages.acknowledgement(self.received), CSID_CONTROL)
        for msg in self.reader.feed(data):
            type_id = msg.type_id
            if type_id == messages.VIDEO or type_id == messages.AUDIO:
                self.media_msgs += 1
                self.media_bytes += len(msg.payload)
            elif type_id == messages.COMMAND_AMF0:
                self._on_command(messages.Command.parse(msg.payload))
            elif type_id == messages.WINDOW_ACK_SIZE:
                self.window = messages.parse_u32(msg.payload, "Window Acknowledgement Size")
            elif type_id == messages.USER_CONTROL:
                event = messages.UserControl.parse(msg.payload)
                if event.event == messages.PING_REQUEST:
                    pong = messages.UserControl(messages.PING_RESPONSE, event.value)
                    self.send(pong.message(), CSID_CONTROL)

    def _on_command(self, cmd: messages.Command) -> None:
        if cmd.name in ("_result", "_error"):
            fut = self.pending.pop(cmd.transaction_id, None)
            if fut is not None and not fut.done():
                if cmd.name == "_error":
                    fut.set_exception(RtmpError(f"{cmd.args!r}"))
                else:
                    fut.set_result(cmd)
        elif cmd.name == "onStatus" and cmd.args and isinstance(cmd.args[0], dict):
            self.statuses.append(cmd.args[0])
            if not self.status_changed.done():
                self.status_changed.set_result(None)

    # Sending
    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def send(self, msg: Message, csid: int = CSID_COMMAND) -> None:
        self.write(encode_message(msg, csid, self.out_chunk_size))

    async def call(self, name: str, command_object: Any = None, *args: Any) -> messages.Command:
        txn = self.next_txn
        self.next_txn += 1
        fut = self.pending[txn] = asyncio.get_running_loop().create_future()
        self.send(messages.Command(name, txn, command_object, list(args)).message())
        return await fut

    async def wait_status(self, code: str) -> dict[str, Any]:
        """The first ``onStatus`` info with ``code``; RtmpError on an error-level status."""
        seen = 0
        while True:
            for info in self.statuses[seen:]:
                if info.get("code") == code:
                    return info
                if info.get("level") == "error":
                    raise RtmpError(f"{info.get('code')}: {info.get('description')}")
            seen = len(self.statuses)
            self.status_changed = asyncio.get_running_loop().create_future()
            await self.status_changed

    async def open_stream(self) -> int:
        """Handshake, Set Chunk Size, connect and createStream; return the message stream id."""
        await self.handshaken
        self.send(messages.set_chunk_size(CHUNK_SIZE), CSID_CONTROL)
        self.out_chunk_size = CHUNK_SIZE
        self.send(messages.window_ack_size(CLIENT_WINDOW_ACK_SIZE), CSID_CONTROL)
        reply = await self.call(
            "connect",
            {
                "app": self.app,
                "type": "nonprivate",
                "flashVer": "FMLE/3.0 (compatible; cloudrec-bench)",
                "tcUrl": self.tc_url,
            },
        )
        code = reply.args[0].get("code") if reply.args and isinstance(reply.args[0], dict) else None
        if code != "NetConnection.Connect.Success":
            raise RtmpError(f"connect: {reply.args!r}")
        reply = await self.call("createStream", None)
        return int(reply.args[0])

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class Media:
    """The FLV's metadata, sequence headers, and the loop of media tags (timestamps in ms)."""

    metadata: bytes
    headers: list[Tag]
    loop: list[Tag]
    period_ms: int

    @classmethod
    def load(cls, path: Path) -> Media:
        tags = read_tags(path)
        script = [t for t in tags if t.type_id == TAG_SCRIPT]
        headers = [t for t in tags if t.type_id in (TAG_AUDIO, TAG_VIDEO) and _is_header(t)]
        media = [t for t in tags if t.type_id in (TAG_AUDIO, TAG_VIDEO) and not _is_header(t)]
        # End the loop just before the last key frame, so that the next loop starts on one.
        keys = [t.timestamp for t in media if t.type_id == TAG_VIDEO and t.body[0] >> 4 == 1]
        period = keys[-1]
        return cls(
            amf0.encode("@setDataFrame") + script[0].body if script else b"",
            headers,
            [t for t in media if t.timestamp < period],
            period,
        )

    @property
    def bits_per_second(self) -> float:
        return sum(len(t.body) for t in self.loop) * 8 * 1000 / self.period_ms


def _is_header(tag: Tag) -> bool:
    # AVC sequence header (codec 7, packet type 0) and AAC sequence header (format 10, type 0).
    if tag.type_id == TAG_VIDEO:
        return tag.body[0] & 0x0F == 7 and tag.body[1] == 0
    return tag.body[0] >> 4 == 10 and tag.body[1] == 0


class Publisher:
    """Sends one stream's tags in real time from ``start`` (event loop time, seconds)."""

    def __init__(self, client: RtmpClient, stream_id: int, media: Media) -> None:
        self.client = client
        self.stream_id = stream_id
        self.media = media
        self.start = 0.0
        self.index = 0
        self.base_ms = 0
        self.next_due = float("inf")
        self.sent_bytes = 0
        self.sent_msgs = 0

    def begin(self, start: float) -> None:
        sid = self.stream_id
        if self.media.metadata:
            self.client.send(Message(messages.DATA_AMF0, sid, 0, self.media.metadata), CSID_STREAM)
        for tag in self.media.headers:
            self.client.send(Message(tag.type_id, sid, 0, tag.body), _csid(tag.type_id))
        self.start = start
        self.next_due = start + self.media.loop[0].timestamp / 1000

    def send_due(self, now: float, lags: list[float] | None) -> None:
        """Write every tag due by ``now`` (in one write); note each one's lateness in ``lags``."""
        if self.next_due > now:
            return
        loop = self.media.loop
        sid = self.stream_id
        out: list[bytes] = []
        while self.next_due <= now:
            tag = loop[self.index]
            if lags is not None:
                lags.append(now - self.next_due)
            msg = Message(tag.type_id, sid, self.base_ms + tag.timestamp, tag.body)
            out.append(encode_message(msg, _csid(tag.type_id), CHUNK_SIZE))
            self.sent_bytes += len(tag.body)
            self.sent_msgs += 1
            self.index += 1
            if self.index == len(loop):
                self.index = 0
                self.base_ms += self.media.period_ms
            self.next_due = self.start + (self.base_ms + loop[self.index].timestamp) / 1000
        self.client.write(b"".join(out))

    def backlog(self) -> int:
        transport = self.client.transport
        return transport.get_write_buffer_size() if transport is not None else 0


def _csid(type_id: int) -> int:
    return CSID_VIDEO if type_id == TAG_VIDEO else CSID_AUDIO


async def _connect(url: str) -> tuple[RtmpClient, str]:
    """Open a client for ``rtmp://host:port/app.../name?query``; return it and the name."""
    parts = urlsplit(url)
    app, _, name = parts.path.lstrip("/").rpartition("/")
    if parts.query:
        name = f"{name}?{parts.query}"
    tc_url = f"rtmp://{parts.hostname}:{parts.port}/{app}"
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: RtmpClient(app, tc_url), parts.hostname, parts.port
    )
    return client, name


async def open_publisher(url: str, media: Media) -> Publisher:
    client, name = await _connect(url)
    sid = await client.open_stream()
    client.send(messages.Command("publish", 0.0, None, [name, "live"]).message(sid), CSID_STREAM)
    await client.wait_status("NetStream.Publish.Start")
    return Publisher(client, sid, media)


async def open_player(url: str) -> RtmpClient:
    client, name = await _connect(url)
    sid = await client.open_stream()
    buffer_ms = messages.UserControl(messages.SET_BUFFER_LENGTH, sid, 1000)
    client.send(messages.Command("play", 0.0, None, [name, -2000.0]).message(sid), CSID_STREAM)
    client.send(buffer_ms.message(), CSID_CONTROL)
    await client.wait_status("NetStream.Play.Start")
    return client


def proc_cpu_s(pid: int | str) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds summed over every core since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


@dataclass
class Snapshot:
    at: float
    server_cpu_s: float
    self_cpu_s: float
    machine_busy_s: float
    machine_total_s: float
    published: list[int]
    delivered: list[int]

    @classmethod
    def take(cls, pid: int, publishers: list[Publisher], players: list[RtmpClient]) -> Snapshot:
        times = os.times()
        busy, total = machine_busy_s()
        return cls(
            time.monotonic(),
            proc_cpu_s(pid),
            times.user + times.system,
            busy,
            total,
            [p.sent_bytes for p in publishers],
            [p.media_bytes for p in players],
        )


async def _gather_limited(coros: list[Any]) -> list[Any]:
    sem = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(coro: Any) -> Any:
        async with sem:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def run(job: dict[str, Any]) -> dict[str, Any]:
    media = Media.load(Path(job["flv"]))
    pid = int(job["server_pid"])
    warmup_s, window_s = float(job["warmup_s"]), float(job["window_s"])
    gop_s = float(job.get("stagger_s", 2.0))
    loop = asyncio.get_running_loop()
    publishers: list[Publisher] = []
    players: list[RtmpClient] = []
    try:
        async with asyncio.timeout(SETUP_TIMEOUT_S):
            publishers = await _gather_limited([open_publisher(u, media) for u in job["publish"]])
            players = await _gather_limited([open_player(u) for u in job["play"]])
        n = len(publishers)
        t0 = loop.time() + 0.1
        for i, pub in enumerate(publishers):
            pub.begin(t0 + gop_s * i / n)
        window_at = t0 + gop_s + warmup_s
        end_at = window_at + window_s
        lags: list[float] = []
        first: Snapshot | None = None
        while True:
            now = loop.time()
            if first is None and now >= window_at:
                first = Snapshot.take(pid, publishers, players)
            if now >= end_at:
                break
            recording = lags if first is not None else None
            for pub in publishers:
                pub.send_due(now, recording)
            await asyncio.sleep(TICK_S)
        last = Snapshot.take(pid, publishers, players)
        assert first is not None
        lost = sum(1 for c in [*players, *(p.client for p in publishers)] if c.lost)
        return _result(media, n, first, last, lags, lost, sum(p.backlog() for p in publishers))
    finally:
        for client in [*players, *(p.client for p in publishers)]:
            client.close()
        await asyncio.sleep(0.2)


def _result(
    media: Media,
    n: int,
    first: Snapshot,
    last: Snapshot,
    lags: list[float],
    lost: int,
    backlog: int,
) -> dict[str, Any]:
    elapsed = last.at - first.at
    published = [b - a for a, b in zip(first.published, last.published, strict=True)]
    delivered = [b - a for a, b in zip(first.delivered, last.delivered, strict=True)]
    lags.sort()
    busy = last.machine_busy_s - first.machine_busy_s
    total = last.machine_total_s - first.machine_total_s
    return {
        "streams": n,
        "window_s": elapsed,
        "stream_kbps": media.bits_per_second / 1000,
        "server_cpu_s": last.server_cpu_s - first.server_cpu_s,
        "generator_cpu_s": last.self_cpu_s - first.self_cpu_s,
        "machine_busy_pct": 100 * busy / total * os.cpu_count() if total else 0.0,
        "published_bytes": sum(published),
        "delivered_bytes": sum(delivered),
        "delivered_min_stream": min(
            (d / p for d, p in zip(delivered, published, strict=True) if p), default=0.0
        ),
        "lag_p50_ms": 1000 * lags[len(lags) // 2] if lags else 0.0,
        "lag_p99_ms": 1000 * lags[int(len(lags) * 0.99)] if lags else 0.0,
        "lag_max_ms": 1000 * lags[-1] if lags else 0.0,
        "lost_connections": lost,
        "publisher_backlog_bytes": backlog,
    }


def main() -> int:
    job = json.load(sys.stdin)
    result = asyncio.run(run(job))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
