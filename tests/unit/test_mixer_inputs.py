"""Which stream a mixer input reads as the room changes under it: a user's (or stream's) input
follows the stream to its new pull URL, and the mix pipeline keeps one URL per stream session
so that the mixer sees a move only when the stream really moved."""

from __future__ import annotations

import dataclasses
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudrec.config import load_settings
from cloudrec.core.mixing import MixSpec
from cloudrec.core.rooms import EMBEDDED, LiveStream, StreamMeta
from cloudrec.media.compositor.layout import Placement, Rect
from cloudrec.media.recorder import mixpipe
from cloudrec.media.recorder.mixer import Mixer
from cloudrec.media.recorder.mixinput import InputReader
from cloudrec.media.recorder.mixpipe import MixPipeline


def test_an_input_whose_stream_moved_to_another_url_reads_the_new_one() -> None:
    """Regression (issue 14): the mixer replaced an input's reader only once it had ended
    and only for the same URL.  A publisher whose ingest node died reconnects to another at
    once (the new session supersedes the old row), so the room's next look gives the same
    input key with another URL while the old reader still waits on the dead node; once that
    read timed out the reader ended with the old URL, and the user's region stayed empty for
    the rest of the recording."""
    spec = dataclasses.replace(MixSpec(), fill_blank=True, frame_fill=1)
    mixer = Mixer(spec, [], {}, lambda out, ms: 0, lambda file_id, fields: None)
    old = InputReader("room/u1", "rtmp://127.0.0.1:1/live/u1")  # never started: still "live"
    picture = object()
    old.buffer.shown = picture
    mixer.inputs["room/u1"], mixer.order = old, ["room/u1"]
    # The new node: it takes the connection and says nothing, so the new reader stays in its
    # handshake (live) for the whole test, until the listener closes.
    node = socket.create_server(("127.0.0.1", 0))
    moved = f"rtmp://127.0.0.1:{node.getsockname()[1]}/live/u1"
    mixer.update(spec, {"room/u1": moved})
    new = mixer.inputs["room/u1"]
    try:
        assert new is not old and new.url == moved
        assert old._stopping.is_set()  # the old pull is let go
        assert mixer.order == ["room/u1"]  # same region
        # Until the new reader shows a picture, its region shows the old one's last.
        placement = Placement(key="room/u1", rect=Rect(0, 0, 320, 180))
        assert mixer._stand_in(spec, placement, new, None) is picture
        mixer.update(spec, {"room/u1": moved})  # the same again: the reader is kept
        assert mixer.inputs["room/u1"] is new and not new.ended.is_set()
    finally:
        new.stop()
        node.close()
        new.join(10)


def _stream(started: datetime, node_url: str = "rtmp://127.0.0.1:1935") -> LiveStream:
    return LiveStream(
        app_id=1,
        room_id="room",
        stream_id="s1",
        user_id="u1",
        meta=StreamMeta(),
        pull_url=f"{node_url}/live/1/room/s1",
        started_at=started,
        source=EMBEDDED,
    )


def test_a_stream_session_keeps_its_mix_input_url_across_credential_windows(
    tmp_path, monkeypatch: Any
) -> None:
    """The pull credential changes at each window; a session's input URL must not, or the
    mixer would take it for a move and read the stream again (a gap in the mix)."""
    settings = load_settings(
        {"data_dir": tmp_path, "pull_secret": "s" * 32, "max_task_duration_s": 3600}, env={}
    )
    pipe = MixPipeline(None, settings)  # type: ignore[arg-type]
    started = datetime(2026, 12, 4, 1, 59, tzinfo=UTC)
    now = [started.timestamp() + 30]
    monkeypatch.setattr(mixpipe.time, "time", lambda: now[0])
    first = pipe.input_url(_stream(started))
    assert "pull=" in first
    now[0] += 3600  # the next window: a new credential for anything new
    assert pipe.input_url(_stream(started)) == first
    assert pipe.pull_url(_stream(started), backlog=False) != first
    # A new session of the stream (it rejoined, here on another node): a URL of its own.
    later = started + timedelta(seconds=90)
    moved = pipe.input_url(_stream(later, "rtmp://127.0.0.2:1935"))
    assert moved != first and moved.startswith("rtmp://127.0.0.2:1935/")


def test_a_user_with_two_streams_keeps_the_first_in_a_layout_by_user() -> None:
    """A layout by user has one region per user: it shows the user's first stream (the room
    lists streams as they joined) rather than flipping to the newest, with a gap, each time
    the user adds one; a layout by stream (ZEGO's) shows both."""
    t0 = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)
    camera = _stream(t0)
    screen = dataclasses.replace(camera, stream_id="s2", started_at=t0 + timedelta(seconds=9))
    assert mixpipe.layout_inputs([camera, screen], by_stream=False) == {"room/u1": camera}
    assert mixpipe.layout_inputs([screen], by_stream=False) == {"room/u1": screen}
    assert mixpipe.layout_inputs([camera, screen], by_stream=True) == {
        "room/s:s1": camera,
        "room/s:s2": screen,
    }
