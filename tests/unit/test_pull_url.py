"""Where a recorder pulls a stream: the embedded ingest's URL with the backlog asked for and
the internal pull credential the ingest checks (``RoomService.authorize_play``)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

from cloudrec.config import load_settings
from cloudrec.core.rooms import LiveStream, StreamMeta
from cloudrec.core.service import RoomService
from cloudrec.media.recorder.pipeline import BACKLOG_MS, pull_url
from tests.fakes import FakeClock, FakeUnitOfWork

NOW = 1_800_000_000


def _stream(source: str) -> LiveStream:
    url = "rtmp://10.0.0.5:1935/7/room1/s1" if source == "embedded" else "rtmp://nginx/live/s1"
    return LiveStream(7, "room1", "s1", "u1", StreamMeta(), datetime.now(UTC), url, source)


def test_the_pull_url_carries_the_backlog_and_a_credential_the_ingest_takes():
    settings = load_settings({"pull_secret": "cluster-pull"}, env={})
    url = pull_url(_stream("embedded"), settings, True, NOW)
    base, _, _ = url.partition("?")
    args = dict(parse_qsl(urlsplit(url).query))
    assert base == "rtmp://10.0.0.5:1935/7/room1/s1"
    assert args.keys() == {"backlog_ms", "pull"} and args["backlog_ms"] == str(BACKLOG_MS)
    # the same URL a minute later (the mixer knows its inputs by URL) ...
    assert pull_url(_stream("embedded"), settings, True, NOW + 60) == url
    # ... and still taken when the longest task (max_task_duration_s, 24 h) reopens its pull
    longest = NOW + settings.max_task_duration_s
    uow = FakeUnitOfWork()
    ingest = RoomService(
        uow,
        FakeClock(datetime.fromtimestamp(longest, UTC)),
        pull_secret="cluster-pull",
        loopback_plays=False,
    )
    ingest.authorize_play(ingest.understand(7, "room1", "s1?" + urlsplit(url).query), "10.0.0.9")


def test_without_a_pull_secret_or_from_a_media_server_the_url_is_as_stored():
    plain = load_settings(env={})
    assert pull_url(_stream("embedded"), plain, False, NOW) == "rtmp://10.0.0.5:1935/7/room1/s1"
    assert pull_url(_stream("embedded"), plain, True, NOW).endswith(f"?backlog_ms={BACKLOG_MS}")
    signed = load_settings({"pull_secret": "cluster-pull"}, env={})
    assert pull_url(_stream("hook"), signed, True, NOW) == "rtmp://nginx/live/s1"
