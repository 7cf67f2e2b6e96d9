"""Ingest nodes own their streams (issue 14), on real SQLite and PostgreSQL: two services
share one database as two machines would; each ends only its own streams when it starts again,
and the streams of a node that stops beating are ended by the other once its lease runs out."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from cloudrec.bootstrap import Container, bootstrap
from cloudrec.config import SettingsError, load_settings
from cloudrec.core.errors import CloudrecError
from cloudrec.core.rooms import EMBEDDED, StreamMeta
from cloudrec.core.service import PublishTarget
from tests.fakes import FakeClock

URL = "rtmp://127.0.0.1:1935/7/room1/"


@pytest.fixture
def nodes(database_url, data_dir):
    clock = FakeClock(datetime(2026, 12, 3, tzinfo=UTC))

    def node(name: str) -> Container:
        env = {"CLOUDREC_NODE_NAME": name, "CLOUDREC_INGEST_LEASE_S": "10"}
        settings = load_settings({"data_dir": data_dir, "database_url": database_url}, env=env)
        return bootstrap(settings, clock)

    a, b = node("ingest-a"), node("ingest-b")
    a.apps.create(7)
    yield a, b, clock
    a.engine.dispose()
    b.engine.dispose()


def _publish(c: Container, stream: str, source: str = EMBEDDED) -> PublishTarget:
    target = c.rooms.understand(7, "room1", stream)
    c.rooms.published(target, StreamMeta(), URL + stream, source, "127.0.0.1")
    return target


def _live(c: Container) -> dict[str, str]:
    return {s.stream_id: s.node for s in c.rooms.live(7)}


def _ends(c: Container, events: bool = False) -> dict[str, str]:
    """Why each ended stream ended (or what the ``unpublished`` room events say)."""
    query = (
        "SELECT stream_id, detail AS why FROM room_events WHERE kind = 'unpublished'"
        if events
        else "SELECT stream_id, end_reason AS why FROM stream_sessions WHERE ended_at IS NOT NULL"
    )
    with c.engine.connect() as conn:
        return {r.stream_id: r.why for r in conn.execute(text(query))}


def test_a_restarted_node_ends_only_its_own_streams(nodes):
    a, b, _ = nodes
    a.rooms.beat(), b.rooms.beat()
    _publish(a, "s1"), _publish(b, "s2"), _publish(a, "s3", source="hook")
    assert _live(a) == {"s1": "ingest-a", "s2": "ingest-b", "s3": ""}
    assert a.rooms.close_stale(EMBEDDED, "service restarted") == 1
    assert _live(a) == {"s2": "ingest-b", "s3": ""}
    assert _ends(a) == {"s1": "service restarted"}


def beats(clock, seconds: int, *nodes: Container) -> int:
    """``seconds`` go by with ``nodes`` beating every 2 s; the streams their beats ended."""
    ended = 0
    for _ in range(seconds // 2):
        clock.advance(2)
        ended += sum(n.rooms.beat() for n in nodes)
    return ended


def test_the_streams_of_a_node_that_stops_beating_end_after_its_lease(nodes):
    a, b, clock = nodes
    a.rooms.beat(), b.rooms.beat()
    _publish(a, "s1"), _publish(b, "s2"), _publish(b, "s3", source="hook")
    assert beats(clock, 20, a, b) == 0  # both beat: each one's streams are its own
    assert beats(clock, 10, a) == 0  # b stopped (killed, or its machine gone) 10 s ago
    assert _live(a) == {"s1": "ingest-a", "s2": "ingest-b", "s3": ""}
    assert beats(clock, 2, a) == 1  # past b's lease
    # a media server's stream has no ingest node: its own hooks end it
    assert _live(a) == {"s1": "ingest-a", "s3": ""}
    assert _ends(a) == _ends(a, events=True) == {"s2": "ingest node ingest-b lost"}


def test_a_database_outage_longer_than_the_lease_ends_no_nodes_streams(nodes):
    """Nobody could beat: the first node back must not take the others' silence for death."""
    a, b, clock = nodes
    a.rooms.beat(), b.rooms.beat()
    _publish(a, "s1"), _publish(b, "s2")
    clock.advance(15)  # PostgreSQL failing over: no beat got through
    assert beats(clock, 2, a) == 0
    assert beats(clock, 8, a, b) == 0  # the others had a lease to beat again
    assert _live(a) == {"s1": "ingest-a", "s2": "ingest-b"}
    assert beats(clock, 12, a) == 1  # b did not come back: its lease ran out after all
    assert _live(a) == {"s1": "ingest-a"}


def test_a_publisher_of_a_lost_node_reconnects_at_once_and_the_old_node_cannot_end_it(nodes):
    a, b, clock = nodes
    a.rooms.beat(), b.rooms.beat()
    target = _publish(b, "s1")
    assert beats(clock, 10, a) == 0  # b's last beat is 10 s old: not yet past its lease
    clock.advance(1)  # now it is, and nobody has swept yet
    # the publisher reconnected to a: its publish is authorized and opened, not refused as live
    again = a.rooms.understand(7, "room1", f"s1?token={_token(a, 's1')}")
    a.rooms.authorize_publish(again, "127.0.0.1")
    a.rooms.published(again, StreamMeta(), URL + "s1", EMBEDDED, "127.0.0.1")
    assert _live(a) == {"s1": "ingest-a"}
    assert _ends(a) == _ends(a, events=True) == {"s1": "ingest node ingest-b lost"}
    # b was only frozen: resumed, it sees its old connection gone, and ends nothing of a's
    assert b.rooms.unpublished_here(target, "publisher left", "127.0.0.1") is False
    assert _live(a) == {"s1": "ingest-a"}
    # while a beats, the id it holds is refused elsewhere, as one live stream per id is
    beats(clock, 2, a, b)
    with pytest.raises(CloudrecError, match="already live") as refused:
        b.rooms.authorize_publish(
            b.rooms.understand(7, "room1", f"s1?token={_token(b, 's1')}"), "127.0.0.1"
        )
    assert refused.value.reason == "stream_live"
    assert _live(a) == {"s1": "ingest-a"}


def _token(c: Container, stream: str) -> str:
    return c.apps.publish_token(7, "room1", stream, 3600)


def test_the_lease_must_be_a_second_or_more():
    with pytest.raises(SettingsError, match=r"setting ingest_lease_s: 0\.5 is less than 1 s"):
        load_settings(env={"CLOUDREC_INGEST_LEASE_S": "0.5"})
