"""The service layer with fakes: apps, publish authorisation, the room directory."""

from __future__ import annotations

import pytest

from cloudrec.core.errors import CloudrecError, Kind
from cloudrec.core.rooms import PublishRequest, StreamMeta
from cloudrec.core.service import AppService, RoomService, is_loopback
from cloudrec.core.tokens import make_publish_token
from tests.fakes import FakeClock, FakeUnitOfWork


@pytest.fixture
def world() -> tuple[FakeUnitOfWork, FakeClock, AppService, RoomService]:
    uow, clock = FakeUnitOfWork(), FakeClock()
    return uow, clock, AppService(uow, clock), RoomService(uow, clock)


def _req(app_path: str, name: str, addr: str = "203.0.113.5") -> PublishRequest:
    return PublishRequest(app_path=app_path, stream_name=name, remote_addr=addr)


def test_an_app_gets_three_distinct_32_hex_secrets(world):
    _, _, apps, _ = world
    app = apps.create(42)
    secrets = [app.server_secret, app.callback_secret, app.publish_secret]
    assert len(set(secrets)) == 3
    assert all(len(s) == 32 and int(s, 16) >= 0 for s in secrets)


def test_creating_an_app_twice_is_a_conflict(world):
    _, _, apps, _ = world
    apps.create(42)
    with pytest.raises(CloudrecError) as err:
        apps.create(42)
    assert err.value.kind is Kind.CONFLICT


@pytest.mark.parametrize("app_id", [0, -1, 2**32])
def test_an_app_id_out_of_range_is_refused(world, app_id):
    _, _, apps, _ = world
    with pytest.raises(CloudrecError, match=r"not in 1\.\.4294967295"):
        apps.create(app_id)


def test_rotating_the_server_secret_changes_only_it_and_old_one_stops_authenticating(world):
    _, _, apps, _ = world
    old = apps.create(7)
    new = apps.rotate_secret(7, "server")
    assert new.server_secret != old.server_secret
    assert (new.callback_secret, new.publish_secret) == (old.callback_secret, old.publish_secret)
    assert apps.authenticate(7, new.server_secret).app_id == 7
    with pytest.raises(CloudrecError) as err:
        apps.authenticate(7, old.server_secret)
    assert err.value.kind is Kind.UNAUTHENTICATED


def test_a_valid_token_lets_a_stream_publish_and_the_directory_lists_it(world):
    uow, _, apps, rooms = world
    app = apps.create(7)
    token = apps.publish_token(7, "room1", "s1", ttl_s=60)
    req = _req("7/room1", f"s1?uid=alice&token={token}")
    target = rooms.target_of(req)
    rooms.authorize_publish(target, req.remote_addr)
    meta = StreamMeta(video_codec="h264", audio_codec="aac", width=320, height=240, fps=25.0)
    rooms.published(target, meta, "rtmp://127.0.0.1:1935/7/room1/s1", "embedded", "1.2.3.4")
    [live] = rooms.live(7, "room1")
    assert (live.stream_id, live.user_id, live.meta.width) == ("s1", "alice", 320)
    assert uow.rooms.events[-1].kind == "published"
    assert app.publish_secret not in repr(uow.rooms.events)


def test_the_user_id_defaults_to_the_stream_id(world):
    _, _, apps, rooms = world
    apps.create(7)
    target = rooms.target_of(_req("7/room1", "s9?token=x"))
    assert target.user_id == "s9"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("s1", "token_missing"),
        ("s1?token=", "token_missing"),
        ("s1?token=garbage", "token_invalid"),
        ("s1?token=99999999999.deadbeef", "token_invalid"),
    ],
)
def test_a_publish_without_a_good_token_is_refused_and_recorded(world, name, reason):
    uow, _, apps, rooms = world
    apps.create(7)
    target = rooms.target_of(_req("7/room1", name))
    with pytest.raises(CloudrecError) as err:
        rooms.authorize_publish(target, "203.0.113.5")
    assert err.value.reason == reason
    assert uow.rooms.events[-1].kind == "publish_refused"
    assert uow.rooms.events[-1].detail == reason


def test_an_expired_token_is_refused(world):
    _, clock, apps, rooms = world
    apps.create(7)
    token = apps.publish_token(7, "room1", "s1", ttl_s=10)
    clock.advance(11)
    target = rooms.target_of(_req("7/room1", f"s1?token={token}"))
    with pytest.raises(CloudrecError) as err:
        rooms.authorize_publish(target, "203.0.113.5")
    assert err.value.reason == "token_expired"


def test_a_token_for_another_stream_or_room_is_refused(world):
    _, _, apps, rooms = world
    apps.create(7)
    token = apps.publish_token(7, "room1", "s1", ttl_s=60)
    for path, name in (("7/room2", "s1"), ("7/room1", "s2")):
        target = rooms.target_of(_req(path, f"{name}?token={token}"))
        with pytest.raises(CloudrecError, match="does not match"):
            rooms.authorize_publish(target, "203.0.113.5")


def test_a_publish_to_an_unknown_app_is_refused(world):
    _, clock, _, rooms = world
    token = make_publish_token("x" * 32, 99, "room1", "s1", int(clock().timestamp()) + 60)
    target = rooms.target_of(_req("99/room1", f"s1?token={token}"))
    with pytest.raises(CloudrecError) as err:
        rooms.authorize_publish(target, "203.0.113.5")
    assert err.value.reason == "app_unknown"


def test_a_stream_id_already_live_in_the_room_is_refused(world):
    _, _, apps, rooms = world
    apps.create(7)
    token = apps.publish_token(7, "room1", "s1", ttl_s=60)
    target = rooms.target_of(_req("7/room1", f"s1?token={token}"))
    rooms.authorize_publish(target, "1.2.3.4")
    rooms.published(target, StreamMeta(), "rtmp://x/7/room1/s1", "embedded", "1.2.3.4")
    with pytest.raises(CloudrecError) as err:
        rooms.authorize_publish(target, "1.2.3.5")
    assert err.value.reason == "stream_live"


@pytest.mark.parametrize(
    "app_path", ["7", "7/room1/extra", "seven/room1", "7/room 1", "7/" + "r" * 129]
)
def test_an_app_path_not_of_the_form_appid_roomid_is_refused(world, app_path):
    _, _, _, rooms = world
    with pytest.raises(CloudrecError) as err:
        rooms.target_of(_req(app_path, "s1?token=x"))
    assert err.value.kind is Kind.INVALID_ARGUMENT


def test_players_from_loopback_need_no_token_but_others_do(world):
    _, _, apps, rooms = world
    apps.create(7)
    target = rooms.target_of(_req("7/room1", "s1"))
    rooms.authorize_play(target, "127.0.0.1")
    rooms.authorize_play(target, "::1")
    rooms.authorize_play(target, "::ffff:127.0.0.1")
    with pytest.raises(CloudrecError):
        rooms.authorize_play(target, "203.0.113.5")


def test_is_loopback_knows_mapped_and_bad_addresses():
    assert is_loopback("127.8.9.10")
    assert not is_loopback("10.0.0.1")
    assert not is_loopback("not-an-ip")


def test_unpublish_ends_the_stream_once_and_stale_streams_are_closed_at_start(world):
    uow, _, apps, rooms = world
    apps.create(7)
    t1 = rooms.understand(7, "room1", "s1?token=x")
    t2 = rooms.understand(7, "room1", "s2?token=x")
    rooms.published(t1, StreamMeta(), "u1", "embedded", "")
    rooms.published(t2, StreamMeta(), "u2", "hook", "")
    assert rooms.unpublished(t1, "publisher left") is True
    assert rooms.unpublished(t1, "publisher left") is False
    assert rooms.close_stale("hook", "service restarted") == 1
    assert rooms.live(7) == []
    assert [r for _, r in uow.rooms.ended] == ["publisher left", "service restarted"]


def test_the_lost_node_sweep_ends_only_that_nodes_row_of_a_stream(world):
    """The sweep reads the lost streams, then ends each: a publisher that reconnected to this
    node in between keeps its stream (the end is conditional on the lost node's hold)."""
    uow, clock, apps, _ = world
    apps.create(7)
    here = RoomService(uow, clock, "ingest-a")
    gone = RoomService(uow, clock, "ingest-b")
    target = gone.understand(7, "room1", "s1")
    gone.beat()
    stale = gone.published(target, StreamMeta(), "u1", "embedded", "")
    clock.advance(11)
    uow.rooms.streams.clear()  # b's row ended and the publisher is live here since the read
    here.published(target, StreamMeta(), "u1", "embedded", "")
    uow.rooms.lost = lambda source, before, alive: [stale]  # what the sweep had read
    assert here.beat() == 0
    assert [(s.stream_id, s.node) for s in here.live(7)] == [("s1", "ingest-a")]


def _pull(secret: str, stream: str, expires: int) -> str:
    return make_publish_token(secret, 7, "room1", stream, expires)


def test_a_recorder_signed_with_the_pull_secret_plays_from_anywhere_and_nothing_else_does(world):
    uow, clock, apps, _ = world
    apps.create(7)
    rooms = RoomService(uow, clock, "ingest-a", pull_secret="cluster-pull", loopback_plays=False)
    now = int(clock().timestamp())
    good = _pull("cluster-pull", "s1", now + 60)
    rooms.authorize_play(rooms.target_of(_req("7/room1", f"s1?pull={good}")), "203.0.113.5")
    refused = {
        "another stream's": f"s2?pull={good}",
        "another secret's": f"s1?pull={_pull('guess', 's1', now + 60)}",
        "an expired": f"s1?pull={_pull('cluster-pull', 's1', now - 1)}",
        "no credential, from loopback": "s1",
    }
    reasons = {}
    for what, name in refused.items():
        with pytest.raises(CloudrecError) as err:
            rooms.authorize_play(rooms.target_of(_req("7/room1", name)), "127.0.0.1")
        assert err.value.kind is Kind.UNAUTHENTICATED, what
        reasons[what] = err.value.reason
    assert reasons == {
        "another stream's": "token_invalid",
        "another secret's": "token_invalid",
        "an expired": "token_expired",
        "no credential, from loopback": "token_missing",
    }
    # an ingest without a pull secret takes no pull credential, whatever it says
    plain = RoomService(uow, clock)
    with pytest.raises(CloudrecError) as err:
        plain.authorize_play(plain.target_of(_req("7/room1", f"s1?pull={good}")), "127.0.0.1")
    assert err.value.reason == "pull_invalid"
