"""One RTMP connection's state machine with a fake transport: scripted and fuzzed sessions."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudrec.core.errors import CloudrecError
from cloudrec.core.rooms import PlayRequest, PublishRequest, StreamMeta
from cloudrec.media.ingest import messages
from cloudrec.media.ingest.chunks import ChunkReader, Message, encode_message
from cloudrec.media.ingest.connection import RtmpConnection
from cloudrec.media.ingest.handshake import PACKET_SIZE, ClientHandshake
from cloudrec.media.ingest.server import RtmpServer

CAPTURED = (Path(__file__).parent.parent / "data" / "ffmpeg_publish_c2s.bin").read_bytes()
MEDIA = [
    m
    for m in ChunkReader().feed(CAPTURED[1 + 2 * PACKET_SIZE :])
    if m.type_id in (messages.AUDIO, messages.VIDEO)
]


class Gate:
    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[str] = []
        self.refuse = refuse

    async def authorize_publish(self, req: PublishRequest) -> None:
        self.calls.append("authorize_publish")
        if self.refuse:
            raise CloudrecError.permission_denied("no")

    async def published(self, req: PublishRequest, meta: StreamMeta) -> None:
        self.calls.append("published")

    async def unpublished(self, req: PublishRequest) -> None:
        self.calls.append("unpublished")

    async def authorize_play(self, req: PlayRequest) -> None:
        self.calls.append("authorize_play")


class Transport(asyncio.Transport):
    def __init__(self, conn: RtmpConnection) -> None:
        super().__init__()
        self.conn = conn
        self.out = bytearray()
        self.closed = False
        self.paused = False

    def write(self, data: Any) -> None:
        self.out += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.conn.connection_lost, None)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def chunked(msgs: list[Message]) -> bytes:
    return b"".join(encode_message(m, 3 if m.stream_id == 0 else 8, 128) for m in msgs)


def command(name: str, txn: float, *args: Any, stream_id: int = 0, obj: Any = None) -> Message:
    return messages.Command(name, txn, obj, list(args)).message(stream_id)


async def session(msgs: list[Message], gate: Gate) -> tuple[RtmpServer, Errors]:
    errors = Errors()
    logger = logging.getLogger(f"test.conn.{id(errors)}")
    logger.addHandler(errors)
    server = RtmpServer(gate, "127.0.0.1", 0, play_wait_s=0.01, logger=logger)
    conn = RtmpConnection(server)
    transport = Transport(conn)
    conn.connection_made(transport)
    client = ClientHandshake()
    conn.data_received(client.start() + bytes(PACKET_SIZE))
    data = chunked(msgs)
    for i in range(0, len(data), 1000):
        for _ in range(200):  # reading is paused while the gate is asked
            if not transport.paused or transport.closed:
                break
            await asyncio.sleep(0.001)
        conn.data_received(data[i : i + 1000])
    for _ in range(20):
        await asyncio.sleep(0)
    transport.abort()
    await asyncio.wait_for(conn.finished, 2)
    return server, errors


PUBLISH = [
    command("connect", 1.0, obj={"app": "1/room"}),
    command("createStream", 2.0),
    command("publish", 0.0, "s1", "live", stream_id=1),
]


def test_a_scripted_publish_is_authorized_announced_and_unpublished_once() -> None:
    gate = Gate()
    server, errors = asyncio.run(session([*PUBLISH, *MEDIA], gate))
    assert gate.calls == ["authorize_publish", "published", "unpublished"]
    assert errors.records == []
    assert server.live_streams() == {}


def test_a_refused_publish_accepts_no_media() -> None:
    gate = Gate(refuse=True)
    _, errors = asyncio.run(session([*PUBLISH, *MEDIA], gate))
    assert gate.calls == ["authorize_publish"]
    assert errors.records == []


NAMES = ["connect", "createStream", "publish", "play", "FCPublish", "releaseStream",
         "FCUnpublish", "deleteStream", "closeStream", "getStreamLength", "_checkbw"]  # fmt: skip
AMF_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.dictionaries(st.sampled_from(["app", "tcUrl", "objectEncoding"]), st.text(max_size=8)),
)
COMMANDS = st.builds(
    lambda name, txn, obj, args, sid: command(name, txn, *args, stream_id=sid, obj=obj),
    st.sampled_from(NAMES),
    st.sampled_from([0.0, 1.0, 2.0, 5.0]),
    AMF_VALUES,
    st.lists(AMF_VALUES, max_size=3),
    st.integers(0, 2),
)
OTHERS = st.one_of(
    st.sampled_from(MEDIA),
    st.builds(
        lambda t, p: Message(t, 0, 0, p),
        st.sampled_from([3, 4, 5, 6, 15, 17, 18]),
        st.binary(max_size=12),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(COMMANDS, OTHERS), max_size=12), st.booleans())
def test_any_sequence_of_messages_leaves_the_gate_calls_balanced(
    msgs: list[Message], publish_first: bool
) -> None:
    gate = Gate()
    server, errors = asyncio.run(session([*PUBLISH, *msgs] if publish_first else msgs, gate))
    assert errors.records == []
    assert gate.calls.count("published") == gate.calls.count("unpublished") <= 1
    assert server.live_streams() == {}
