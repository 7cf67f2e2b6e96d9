"""RTMP abuse against a real ``cloudrec serve``: its memory stays bounded, its API answers.

Issue 11, item 2: before any authorisation a client could set chunk size 1 and leave unfinished
messages of up to 16 MiB on up to 65,536 chunk streams, each 1-byte chunk kept as its own
``bytes`` object: 8 MB sent held 38-220 MB in ``cloudrec serve``, 16 MB held 278 MB.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from cloudrec.config import Settings
from cloudrec.media.ingest import messages
from tests.media import APP, RtmpTestClient
from tests.service import Service

SOURCE = "127.0.0.2"  # loopback, but not an address exempt from the per-address cap
ATTACKERS = 4
TOTAL_BYTES = 16 * 1024 * 1024
HEALTH_EVERY_BYTES = 1024 * 1024
FIRST_CSID, LAST_CSID = 64, 65599  # every two- and three-byte chunk stream id
MIB = 1024 * 1024
DEFAULTS = Settings()
# What the defaults let one attack connection hold: every unfinished message together
# (rtmp_max_command_bytes before a publish is accepted), the state of its chunk streams
# (rtmp_max_chunk_streams, well under 1 KiB each) and its unread replies
# (rtmp_max_reply_backlog_bytes).  Even the per-address cap's worth of them is a few MiB; the
# cap below leaves room for the interpreter's own growth (HTTP requests, lazy imports).
PER_CONNECTION_BYTES = (
    DEFAULTS.rtmp_max_command_bytes
    + DEFAULTS.rtmp_max_chunk_streams * 1024
    + DEFAULTS.rtmp_max_reply_backlog_bytes
)
RSS_GROWTH_CAP = 32 * MIB
assert DEFAULTS.rtmp_max_connections_per_address * PER_CONNECTION_BYTES < 4 * MIB


def basic_header(fmt: int, csid: int) -> bytes:
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    return bytes([fmt << 6 | 1]) + struct.pack("<H", csid - 64)


@dataclass(frozen=True)
class Attack:
    """Blocks of chunks: first a format 0 chunk of a ``length``-byte message on every chunk
    stream id from 64 up, then round after round of format 3 continuations on all of them."""

    first: list[bytes]
    rounds: list[bytes]

    @classmethod
    def build(cls, chunk: int, length: int, type_id: int) -> Attack:
        payload = b"x" * chunk
        ids = range(FIRST_CSID, LAST_CSID + 1)
        head = bytes(3) + length.to_bytes(3, "big") + bytes([type_id]) + struct.pack("<I", 1)
        first = [basic_header(0, c) + head + payload for c in ids]
        cont = [basic_header(3, c) + payload for c in ids]
        step = 1024
        return cls(
            [b"".join(first[i : i + step]) for i in range(0, len(first), step)],
            [b"".join(cont[i : i + step]) for i in range(0, len(cont), step)],
        )

    def blocks(self) -> Iterator[bytes]:
        yield from self.first
        while True:
            yield from self.rounds


@dataclass
class Flood:
    sent: int = 0
    connections: int = 0
    health: list[int] = field(default_factory=list)
    clients: list[RtmpTestClient] = field(default_factory=list)
    error: BaseException | None = None


def flood(svc: Service, chunk: int, attack: Attack, budget: int, out: Flood) -> None:
    """Send ``budget`` bytes of unfinished messages, reconnecting whenever the server closes,
    and ask the HTTP API for /healthz after every MiB."""
    next_health = HEALTH_EVERY_BYTES
    try:
        with httpx.Client(base_url=svc.http, timeout=10) as api:
            while out.sent < budget:
                assert out.connections < 20_000, "the server never let the flood through"
                client = RtmpTestClient("127.0.0.1", svc.rtmp_port, APP, source=SOURCE)
                client.sock.settimeout(60)
                out.clients.append(client)
                out.connections += 1
                try:
                    client.send(messages.set_chunk_size(chunk), 2)
                    for block in attack.blocks():
                        client.sock.sendall(block)
                        out.sent += len(block)
                        if out.sent >= next_health:
                            out.health.append(api.get("/healthz").status_code)
                            next_health += HEALTH_EVERY_BYTES
                        if out.sent >= budget:
                            break
                except OSError:
                    pass  # refused: the server closed this connection; open the next one
    except BaseException as exc:
        out.error = exc


def still_open(client: RtmpTestClient) -> bool:
    """Ping; True once the pong is back (everything sent before it has been read), False if
    the server has closed the connection."""
    try:
        client.send(messages.UserControl(messages.PING_REQUEST, 7).message(), 2)
        while True:
            msg = client.next_message()
            if msg.type_id == messages.USER_CONTROL:
                event = messages.UserControl.parse(msg.payload)
                if event.event == messages.PING_RESPONSE:
                    return True
    except (OSError, ValueError):
        return False


def status_kib(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as f:
        return {
            k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f) if k[:2] == "Vm"
        }


@pytest.mark.parametrize(
    ("chunk", "length", "type_id", "limit"),
    [
        (1, 0xFFFFFF, messages.VIDEO, "min_chunk_size"),
        (DEFAULTS.rtmp_min_chunk_size, 0xFFFFFF, messages.VIDEO, "max_command_bytes"),
        (DEFAULTS.rtmp_min_chunk_size, 1000, messages.COMMAND_AMF0, "max_unfinished_messages"),
    ],
    ids=["1-byte-chunks", "min-size-chunks-16MiB-messages", "min-size-chunks-small-messages"],
)
def test_16_mb_of_tiny_chunks_over_thousands_of_chunk_streams_leave_serve_memory_bounded(
    data_dir: Path, chunk: int, length: int, type_id: int, limit: str
) -> None:
    """Bug (issue 11): unfinished messages in 1-byte chunks on 65,536 chunk streams before
    any authorisation; 16 MB sent held 278 MB.  Now serve's peak RSS grows by less than
    RSS_GROWTH_CAP, every attack connection is refused (one ``rtmp.refused`` line naming the
    limit) and /healthz answers throughout."""
    svc = Service(data_dir).start()
    assert svc.proc is not None
    floods = [Flood() for _ in range(ATTACKERS)]
    attack = Attack.build(chunk, length, type_id)
    try:
        assert httpx.get(svc.http + "/healthz", timeout=10).status_code == 200
        before = status_kib(svc.proc.pid)["VmRSS"]
        with open(f"/proc/{svc.proc.pid}/clear_refs", "w") as f:
            f.write("5")  # VmHWM = VmRSS: the peak is measured from here
        threads = [
            threading.Thread(target=flood, args=(svc, chunk, attack, TOTAL_BYTES // ATTACKERS, out))
            for out in floods
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        for out in floods:
            assert out.error is None, out.error
        clients = [c for out in floods for c in out.clients]
        open_after = sum(still_open(c) for c in clients)  # the server has read everything
        peak = status_kib(svc.proc.pid)["VmHWM"]
        final = httpx.get(svc.http + "/healthz", timeout=10)
    finally:
        for out in floods:
            for c in out.clients:
                c.close()
        svc.stop()

    growth = (peak - before) * 1024
    sent = sum(out.sent for out in floods)
    health = [code for out in floods for code in out.health]
    print(f"sent {sent} B on {len(clients)} connections; serve RSS {before} KiB, peak +{growth} B")
    assert sent >= TOTAL_BYTES
    assert growth < RSS_GROWTH_CAP, f"serve's RSS grew by {growth / MIB:.1f} MiB"
    assert len(health) >= TOTAL_BYTES // HEALTH_EVERY_BYTES - ATTACKERS
    assert set(health) == {200}
    assert final.status_code == 200
    assert open_after == 0
    refusals = [e for e in svc.log_events() if e.get("event") == "rtmp.refused"]
    assert len(refusals) == len(clients)  # once per connection
    assert {e["limit"] for e in refusals} == {limit}
    assert all(e["peer"].startswith(SOURCE + ":") and e["reason"] for e in refusals)
