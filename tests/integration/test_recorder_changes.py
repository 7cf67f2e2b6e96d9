"""A publisher that changes under a single-stream recording (issue 10, items 11 and 12).

Real parts: spliced FLV streams published over loopback RTMP into the embedded ingest (by
Debian's ffmpeg, or tag by tag where ffmpeg would rewrite the timestamps), recorded by a
:class:`StreamRecorder`, every file then decoded frame by frame as a user's player would.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloudrec.core.tasks import FileFormat, Media, TrackType
from cloudrec.media.recorder.remux import RecorderPlan, StreamRecorder
from tests.media import (
    FlvTag,
    IngestThread,
    decode_file,
    publish_tags,
    splice_flv,
    wait_publisher,
    write_flv,
)

pytestmark = pytest.mark.slow  # publishers change in real time: about 80 s in all

REMUXED = (FileFormat.MP4, FileFormat.FLV, FileFormat.HLS)
ALL = (*REMUXED, FileFormat.AAC, FileFormat.MP3, FileFormat.OGG)
TOLERANCE_S = 0.5  # a frame or two at each end, and the audio frame the cut falls in


@pytest.fixture
def rtmp() -> Iterator[IngestThread]:
    # A recorder started before its publisher waits for the stream that long.
    server = IngestThread(play_wait_s=10.0)
    yield server
    server.close()


class Recording:
    """A StreamRecorder of ``url`` into ``directory``, with what it reported."""

    def __init__(
        self,
        url: str,
        directory: Path,
        formats: tuple[FileFormat, ...],
        start_at: float | None = None,
        still_live: Callable[[], bool] | None = None,
    ) -> None:
        self.opened: list[tuple[int, FileFormat, Path, tuple[int, int] | None]] = []
        self.closed: dict[int, dict[str, object]] = {}
        plan = RecorderPlan(
            url=f"{url}?backlog_ms=10000",
            media=Media.AUDIO_VIDEO,
            formats=formats,
            directory=directory,
            name=lambda fmt, track, begin_ms: f"rec_{track.value}_{begin_ms}.{fmt.extension}",
            start_at=time.time() if start_at is None else start_at,
            still_live=still_live,
        )
        self.recorder = StreamRecorder(plan, self.on_open, self.on_close, name="rec-test")
        self.recorder.start()

    def on_open(
        self,
        fmt: FileFormat,
        path: Path,
        track: TrackType,
        begin_ms: int,
        size: tuple[int, int] | None,
    ) -> int:
        self.opened.append((len(self.opened) + 1, fmt, path, size))
        return len(self.opened)

    def on_close(self, file_id: int, fields: dict[str, object]) -> None:
        assert file_id not in self.closed, "closed twice"
        self.closed[file_id] = fields

    def finish(self) -> StreamRecorder:
        self.recorder.join(30)
        assert not self.recorder.is_alive()
        assert sorted(self.closed) == [i for i, *_ in self.opened]  # every part was closed
        return self.recorder

    def parts(self, fmt: FileFormat) -> list[Path]:
        return [path for _, f, path, _ in self.opened if f is fmt]


def published_s(tags: list[FlvTag]) -> float:
    """Seconds of video in a spliced stream: its media timeline (``send_at``)."""
    return max(t.send_at for t in tags if t.type == 9) + 0.04


def publish_with_ffmpeg(url: str, path: Path) -> subprocess.Popen[bytes]:
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(path)]
    return subprocess.Popen(
        [*args, "-c", "copy", "-f", "flv", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("spliced")
    write_flv(d / "small.flv", duration_s=5.0, size=(640, 360), gop=25)
    write_flv(d / "large.flv", duration_s=5.0, size=(1280, 720), gop=25)
    write_flv(d / "large48.flv", duration_s=5.0, size=(1280, 720), gop=25, sample_rate=48000)
    return d


@pytest.mark.parametrize("sound_changes", [False, True], ids=["picture", "picture-and-sound"])
def test_a_resolution_switch_mid_stream_starts_a_new_part_that_decodes_in_every_format(
    rtmp: IngestThread, media: Path, tmp_path: Path, sound_changes: bool
) -> None:
    """Issue 10 item 11: a stream switching from 640x360 to 1280x720 with a new AVC sequence
    header was remuxed into one file that kept the first SPS/PPS, everything after the switch
    decoding as broken 640x360 pictures; a new AudioSpecificConfig (44.1 to 48 kHz) with it
    crashed the recorder thread in the MP3/Ogg encoder's resampler, unsaid."""
    second = media / ("large48.flv" if sound_changes else "large.flv")
    spliced = tmp_path / "spliced.flv"
    tags = splice_flv(media / "small.flv", second, spliced)
    rec = Recording(rtmp.url("s1"), tmp_path / "out", ALL)
    code, err = wait_publisher(publish_with_ffmpeg(rtmp.url("s1"), spliced), 60)
    assert code == 0, err
    recorder = rec.finish()

    assert recorder.error is None, recorder.error
    assert recorder.ended_by == "source ended"
    total = published_s(tags)
    for fmt in REMUXED:
        parts = [decode_file(p) for p in rec.parts(fmt)]
        assert [d.errors for d in parts] == [[], []], fmt
        assert [d.sizes for d in parts] == [[(640, 360)], [(1280, 720)]], fmt
        assert all(d.audio_packets > 50 for d in parts), fmt
        assert sum(d.duration_s for d in parts) == pytest.approx(total, abs=TOLERANCE_S), fmt
    # The AAC file follows the sound's own configuration: a new part only when it changes.
    aac = [decode_file(p) for p in rec.parts(FileFormat.AAC)]
    assert [d.errors for d in aac] == [[]] * len(aac)
    if sound_changes:
        assert [d.audio_rates for d in aac] == [[44100], [48000]]
    else:
        assert [d.audio_rates for d in aac] == [[44100]]
    assert sum(d.duration_s for d in aac) == pytest.approx(total, abs=TOLERANCE_S)
    # MP3 and Ogg are encoded: one file each, resampled where the sound changed.
    for fmt in (FileFormat.MP3, FileFormat.OGG):
        (path,) = rec.parts(fmt)
        decoded = decode_file(path)
        assert decoded.errors == [], fmt
        assert decoded.duration_s == pytest.approx(total, abs=TOLERANCE_S), fmt
    # What the worker is told: each part's picture size, and why each new part began.
    assert [size for _, f, _, size in rec.opened if f is FileFormat.MP4] == [
        (640, 360),
        (1280, 720),
    ]
    second_parts = {path.name: fmt for fmt in ALL for path in rec.parts(fmt)[1:]}
    assert [second_parts[name] for name, _ in recorder.new_parts] == (
        [*REMUXED, FileFormat.AAC] if sound_changes else [*REMUXED]
    )
    for name, why in recorder.new_parts:
        if second_parts[name] is FileFormat.AAC:
            assert why == "audio configuration changed (to 48000 Hz mono)"
        else:
            assert why.startswith("video configuration changed (640x360 to 1280x720)")


def test_a_recording_that_joins_after_a_resolution_switch_starts_from_the_backlog_before_it(
    rtmp: IngestThread, media: Path, tmp_path: Path
) -> None:
    """Issue 10 item 11: a recorder (a new task, a replaced worker) joining after the switch
    with a backlog that reaches before it got the new sequence header first and then GOPs
    coded with the old one: a file of broken pictures."""
    spliced = tmp_path / "spliced.flv"
    tags = splice_flv(media / "small.flv", media / "large.flv", spliced)
    asked_at = time.time()
    publisher = publish_with_ffmpeg(rtmp.url("s1"), spliced)
    rtmp.gate.wait_for("published")

    async def video_header() -> bytes:
        stream = rtmp.server._streams["1/room/s1"]
        return b"" if stream.video_header is None else stream.video_header.payload

    first = rtmp.call(video_header)
    deadline = time.monotonic() + 15
    while rtmp.call(video_header) == first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rtmp.call(video_header) != first, "no switch published"
    rec = Recording(rtmp.url("s1"), tmp_path / "out", (FileFormat.MP4,), start_at=asked_at)
    code, err = wait_publisher(publisher, 60)
    assert code == 0, err
    recorder = rec.finish()

    assert recorder.error is None, recorder.error
    parts = [decode_file(p) for p in rec.parts(FileFormat.MP4)]
    assert [d.errors for d in parts] == [[], []]
    assert [d.sizes for d in parts] == [[(640, 360)], [(1280, 720)]]
    total = published_s(tags)
    assert sum(d.duration_s for d in parts) == pytest.approx(total, abs=TOLERANCE_S)


@pytest.mark.parametrize("restart_at_s", [0.0, 60.0], ids=["back-to-zero", "forward-60s"])
def test_timestamps_that_jump_without_a_reconnect_are_rebased_and_the_recording_goes_on(
    rtmp: IngestThread, media: Path, tmp_path: Path, restart_at_s: float
) -> None:
    """Issue 10 item 12: a publisher whose timestamps jumped back (an encoder restarted behind
    a relay: media, then timestamps from 0 again) ended the recording with the muxer's
    "Invalid argument" while the stream was still live; a jump forward left a minute-long
    frozen hole in the file."""
    small = media / "small.flv"
    tags = splice_flv(small, small, tmp_path / "jump.flv", restart_at_s=restart_at_s)
    assert [t.timestamp for t in tags if t.type == 9][-1] < 5000 + restart_at_s * 1000 + 100
    rec = Recording(rtmp.url("s1"), tmp_path / "out", REMUXED)
    rtmp.gate.wait_for("authorize_play", timeout_s=10)
    publish_tags(rtmp.url("s1"), tags)
    recorder = rec.finish()

    assert recorder.error is None, recorder.error
    assert recorder.ended_by == "source ended"
    total = published_s(tags)
    for fmt in REMUXED:
        (path,) = rec.parts(fmt)  # one continuous file
        decoded = decode_file(path)
        assert decoded.errors == [], fmt
        assert decoded.sizes == [(640, 360)], fmt
        assert decoded.duration_s == pytest.approx(total, abs=TOLERANCE_S), fmt
    assert recorder.timestamp_jumps, "no jump seen"
    assert recorder.new_parts == []


def test_a_connection_lost_while_the_stream_is_live_is_reopened_into_a_new_part(
    rtmp: IngestThread, media: Path, tmp_path: Path
) -> None:
    """Issue 10 item 12: any recorder error on a live stream ended its recording quietly;
    it must reopen the input and go on."""
    small = media / "small.flv"
    tags = splice_flv(small, small, tmp_path / "long.flv")
    rec = Recording(rtmp.url("s1"), tmp_path / "out", (FileFormat.MP4,))
    rtmp.gate.wait_for("authorize_play", timeout_s=10)
    publisher = threading.Thread(target=publish_tags, args=(rtmp.url("s1"), tags))
    publisher.start()
    reset_after_seconds_recorded(rtmp, rec)
    publisher.join(30)
    recorder = rec.finish()

    assert recorder.error is None, recorder.error
    parts = [decode_file(p) for p in rec.parts(FileFormat.MP4)]
    assert len(parts) == 2
    assert [d.errors for d in parts] == [[], []]
    assert all(d.audio_packets > 0 for d in parts)
    # The second part starts at the keyframe before the first one ended: nothing is lost.
    assert sum(d.duration_s for d in parts) >= published_s(tags) - TOLERANCE_S
    assert len(recorder.retries) == 1, recorder.retries
    ((name, why),) = recorder.new_parts
    assert name == rec.parts(FileFormat.MP4)[1].name
    assert why.startswith("reopened after OSError"), why


def test_a_session_that_ended_meanwhile_is_not_retried(
    rtmp: IngestThread, media: Path, tmp_path: Path
) -> None:
    """A retry must not record the stream's next session (it has a recorder of its own): with
    ``still_live`` saying no, the recorder ends after the error instead of reopening."""
    tags = splice_flv(media / "small.flv", media / "small.flv", tmp_path / "long.flv")
    live = threading.Event()
    live.set()
    rec = Recording(rtmp.url("s1"), tmp_path / "out", (FileFormat.MP4,), still_live=live.is_set)
    rtmp.gate.wait_for("authorize_play", timeout_s=10)
    publisher = threading.Thread(target=publish_tags, args=(rtmp.url("s1"), tags))
    publisher.start()
    live.clear()
    reset_after_seconds_recorded(rtmp, rec)
    recorder = rec.finish()
    publisher.join(30)

    assert recorder.error is None
    assert recorder.ended_by == "source ended"
    assert len(recorder.retries) == 1 and recorder.new_parts == []
    assert len(rec.parts(FileFormat.MP4)) == 1
    assert len(rtmp.gate.named("authorize_play")) == 1  # never reopened


def reset_after_seconds_recorded(rtmp: IngestThread, rec: Recording) -> None:
    """Once 3 s are recorded, the ingest aborts its players' connections (as it does to a
    stalled player): a network error on the recorder's side while the stream stays live."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not (
        rec.recorder.files and rec.recorder.files[0].last_end_ts >= 3.0
    ):
        time.sleep(0.05)
    assert rec.recorder.files[0].last_end_ts >= 3.0

    async def reset_players() -> None:
        for stream in list(rtmp.server._streams.values()):
            for player in stream.players.values():
                player.transport.abort()

    rtmp.call(reset_players)
