"""What the single-stream pipeline does with a stream session that leaves the room while its
recorder still reads: the recorder ends with its session."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cloudrec.config import load_settings
from cloudrec.core.rooms import EMBEDDED, LiveStream, StreamMeta
from cloudrec.media.recorder.singles import SinglePipeline, _key, _Session


class Reading:
    """A recorder whose pull still delivers (its node woke up and serves on)."""

    def __init__(self) -> None:
        self.stopped: list[float] = []

    def is_alive(self) -> bool:
        return True

    def stop(self, at: float) -> None:
        self.stopped.append(at)


def _stream(started: datetime) -> LiveStream:
    return LiveStream(
        app_id=1,
        room_id="room",
        stream_id="s1",
        user_id="u1",
        meta=StreamMeta(),
        pull_url="rtmp://127.0.0.1:1935/1/room/s1",
        started_at=started,
        source=EMBEDDED,
    )


def test_a_session_superseded_by_a_newer_one_stops_its_recorder_where_that_begins(
    tmp_path: Any,
) -> None:
    """Regression (issue 14): a node frozen past its lease had its streams ended by another;
    the old session's recorder, retrying, reconnected once the node woke and recorded the
    stream again beside the new session's recorder (overlapping parts of one stream).  A
    session that only left the room keeps its recorder: its pull ends by itself, and what
    the publisher sent last is still on its way (and a node cut off from the database, its
    streams ended by another, serves on: its recorders must not stop before a new session)."""
    settings = load_settings({"data_dir": tmp_path}, env={})
    pipe = SinglePipeline(None, settings)  # type: ignore[arg-type]
    old = _stream(datetime(2026, 12, 4, 2, 0, tzinfo=UTC))
    new = _stream(old.started_at + timedelta(seconds=30))  # the same stream, live again
    recorder = Reading()
    pipe.sessions[_key(old)] = _Session(recorder, old)  # type: ignore[arg-type]
    for room in ([old], []):  # live, then gone from the room with no newer session
        pipe.saw(room)
        pipe._drop_superseded(room)
        assert recorder.stopped == []
    pipe.saw([new])
    pipe._drop_superseded([new])
    pipe._drop_superseded([new])
    assert recorder.stopped == [new.started_at.timestamp()]  # where the new one begins, once


def test_two_files_of_a_task_never_get_one_name(tmp_path: Any) -> None:
    """Regression: around a restart of the ingest, the old session's retry and the new
    session's recorder both began at the same keyframe of the backlog, so both files had one
    name: two muxers wrote one path, and the first delivered removed it from under the other
    ("the file is gone from the spool")."""
    pipe = SinglePipeline(None, load_settings({"data_dir": tmp_path}, env={}))  # type: ignore[arg-type]
    stem = "t_room_u1_s1_VA_20261204023802771"
    assert pipe._unique(stem, ".mp4") == f"{stem}.mp4"
    assert pipe._unique(stem, ".mp4") == f"{stem}-1.mp4"
    assert pipe._unique(stem, ".mp4") == f"{stem}-2.mp4"
    assert pipe._unique(stem, ".flv") == f"{stem}.flv"
