"""Generated media for tests: publish with Debian's ffmpeg, pull with PyAV or the ffmpeg CLI.

Everything is generated (``testsrc2`` or a solid colour, plus a ``sine`` tone) and kept small.
:class:`RtmpTestClient` is a minimal blocking RTMP client built on the ingest's sans-I/O code,
for tests that need to misbehave in ways ffmpeg will not (never read, publish then vanish).
:class:`IngestThread` runs the embedded RTMP server on its own loop in a thread, with a
:class:`FakeGate` that records what the core would have been told.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av

from cloudrec.core.errors import CloudrecError
from cloudrec.core.rooms import PlayRequest, PublishRequest, StreamMeta
from cloudrec.media.ingest import messages
from cloudrec.media.ingest.chunks import ChunkReader, Message, encode_message
from cloudrec.media.ingest.handshake import ClientHandshake
from cloudrec.media.ingest.server import RtmpServer

APP = "1/room"


def ffmpeg_source_args(
    *,
    duration_s: float,
    size: tuple[int, int] = (320, 240),
    fps: int = 25,
    gop: int = 25,
    colour: str | None = None,
    tone_hz: int = 440,
    sample_rate: int = 44100,
    channels: int = 1,
    realtime: bool = True,
    video_kbps: int | None = None,
) -> list[str]:
    """ffmpeg input and encoder arguments: H.264 (``gop`` frames per key frame) and AAC.

    ``video_kbps`` makes the video constant bit rate (x264 pads with filler data), so that a
    generated picture, which compresses to almost nothing, weighs like a camera's.
    """
    w, h = size
    video = (
        f"color=c={colour}:size={w}x{h}:rate={fps}"
        if colour
        else f"testsrc2=size={w}x{h}:rate={fps}"
    )
    tone = f"sine=frequency={tone_hz}:sample_rate={sample_rate}:duration={duration_s}"
    layout = "stereo" if channels == 2 else "mono"
    # veryfast keeps B-frames (composition offsets) while costing little CPU.
    return [
        *(["-re"] if realtime else []),
        "-f", "lavfi", "-i", f"{video}:duration={duration_s}",
        "-f", "lavfi", "-i", tone,
        "-af", f"aformat=channel_layouts={layout}",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", "64k",
        *(cbr(video_kbps) if video_kbps else []),
    ]  # fmt: skip


def cbr(kbps: int) -> list[str]:
    rate = f"{kbps}k"
    return ["-b:v", rate, "-minrate", rate, "-maxrate", rate, "-bufsize", rate,
            "-x264-params", "nal-hrd=cbr:filler=1"]  # fmt: skip


def start_publisher(url: str, *, duration_s: float = 3.0, **source: Any) -> subprocess.Popen[bytes]:
    """Start Debian's ffmpeg publishing generated media to ``url`` (real time by default).

    ``source`` takes the keywords of :func:`ffmpeg_source_args`.  Read the result with
    :func:`wait_publisher`.
    """
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin"]
    args += ffmpeg_source_args(duration_s=duration_s, **source)
    args += ["-f", "flv", url]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_publisher(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> tuple[int, str]:
    """Wait for a publisher; return its exit code and stderr."""
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err.decode(errors="replace")


def write_flv(path: Path, *, duration_s: float = 1.0, **source: Any) -> Path:
    """Write generated media to an FLV file (not in real time)."""
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    args += ffmpeg_source_args(duration_s=duration_s, realtime=False, **source)
    subprocess.run([*args, str(path)], check=True, timeout=60)
    return path


@dataclass
class Pulled:
    """What a PyAV pull saw: stream parameters and the first decoded frames."""

    width: int = 0
    height: int = 0
    fps: float = 0.0
    video_codec: str = ""
    audio_codec: str = ""
    audio_rate: int = 0
    audio_channels: int = 0
    video_frames: int = 0
    audio_frames: int = 0
    first_video_key: bool | None = None
    first_video_packet_key: bool | None = None
    video_pts: list[int] = field(default_factory=list)


def pull_with_pyav(url: str, *, video_frames: int = 25, timeout_s: float = 5.0) -> Pulled:
    """Play ``url`` with PyAV and decode until ``video_frames`` video frames (and some audio).

    ``rw_timeout`` (microseconds), not ``timeout``: for FFmpeg's RTMP that one means listen.
    """
    out = Pulled()
    with av.open(url, options={"rw_timeout": str(int(timeout_s * 1e6))}) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        video.thread_type = "AUTO"
        out.video_codec, out.audio_codec = video.codec_context.name, audio.codec_context.name
        out.fps = float(video.average_rate or video.guessed_rate or 0)
        for packet in container.demux(video, audio):
            if packet.size == 0:
                continue
            if packet.stream is video and out.first_video_packet_key is None:
                out.first_video_packet_key = packet.is_keyframe
            for frame in packet.decode():
                if packet.stream is video:
                    if out.first_video_key is None:
                        out.first_video_key = frame.key_frame
                    out.width, out.height = frame.width, frame.height
                    out.video_frames += 1
                    out.video_pts.append(frame.pts)
                else:
                    out.audio_rate = frame.sample_rate
                    out.audio_channels = len(frame.layout.channels)
                    out.audio_frames += 1
            if out.video_frames >= video_frames and out.audio_frames >= 5:
                break
    return out


def pull_with_ffmpeg(
    url: str, path: Path, *, duration_s: float = 2.0
) -> subprocess.CompletedProcess[bytes]:
    """Copy ``duration_s`` of ``url`` into an FLV file with the ffmpeg CLI."""
    args = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-y",
        "-rw_timeout",
        "5000000",
    ]
    args += ["-i", url, "-c", "copy", "-t", str(duration_s), str(path)]
    return subprocess.run(args, capture_output=True, timeout=30, check=False)


class RtmpTestClient:
    """A blocking RTMP client speaking just enough to publish or play (tests only)."""

    def __init__(
        self,
        host: str,
        port: int,
        app: str,
        *,
        rcvbuf: int | None = None,
        source: str | None = None,
    ) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:  # e.g. 127.0.0.2: loopback, but another address than 127.0.0.1
            self.sock.bind((source, 0))
        self.sock.settimeout(5.0)
        self.sock.connect((host, port))
        self.reader = ChunkReader()
        self.pending: list[Message] = []
        hs = ClientHandshake()
        self.sock.sendall(hs.start())
        while not hs.done:
            c2 = hs.feed(self._recv())
        self.sock.sendall(c2)
        self.pending += self.reader.feed(hs.leftover)
        self.command("connect", 1.0, {"app": app, "tcUrl": f"rtmp://{host}:{port}/{app}"})
        self.expect_command("_result")

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        return data

    def send(self, msg: Message, csid: int = 3) -> None:
        self.sock.sendall(encode_message(msg, csid, 128))

    def command(
        self, name: str, txn: float, obj: Any = None, *args: Any, stream_id: int = 0
    ) -> None:
        self.send(messages.Command(name, txn, obj, list(args)).message(stream_id))

    def next_message(self) -> Message:
        while not self.pending:
            self.pending += self.reader.feed(self._recv())
        return self.pending.pop(0)

    def expect_command(self, *names: str) -> messages.Command:
        """Read messages until a command named one of ``names`` arrives."""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            msg = self.next_message()
            if msg.type_id == messages.COMMAND_AMF0:
                cmd = messages.Command.parse(msg.payload)
                if cmd.name in names or (cmd.name == "onStatus" and cmd.args[0]["code"] in names):
                    return cmd
        raise TimeoutError(f"no {names} from the server")

    def create_stream(self) -> int:
        self.command("createStream", 2.0)
        return int(self.expect_command("_result").args[0])

    def play(self, name: str) -> messages.Command:
        """Start playing; return the onStatus that answered (Play.Start or an error)."""
        sid = self.create_stream()
        self.command("play", 0.0, None, name, -2.0, stream_id=sid)
        return self.expect_command(
            "NetStream.Play.Start", "NetStream.Play.Failed", "NetStream.Play.StreamNotFound"
        )

    def publish(self, name: str) -> messages.Command:
        sid = self.create_stream()
        self.command("publish", 0.0, None, name, "live", stream_id=sid)
        return self.expect_command(
            "NetStream.Publish.Start", "NetStream.Publish.BadName", "NetStream.Publish.Denied"
        )

    def wait_closed(self) -> list[Message]:
        """Read until the server closes the connection; return what came before.

        Raise TimeoutError if it stays open past the socket timeout.
        """
        got = [*self.pending]
        self.pending.clear()
        while True:
            try:
                got += self.reader.feed(self._recv())
            except (ConnectionError, ValueError):
                return got

    def close(self) -> None:
        self.sock.close()


class FakeGate:
    """Records every gate call; refuses publish or play when told to."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, ...]] = []
        self.refuse_publish: CloudrecError | None = None
        self.refuse_play: CloudrecError | None = None

    async def authorize_publish(self, req: PublishRequest) -> None:
        self.calls.append(("authorize_publish", req))
        if self.refuse_publish is not None:
            raise self.refuse_publish

    async def published(self, req: PublishRequest, meta: StreamMeta) -> None:
        self.calls.append(("published", req, meta))

    async def unpublished(self, req: PublishRequest) -> None:
        self.calls.append(("unpublished", req))

    async def authorize_play(self, req: PlayRequest) -> None:
        self.calls.append(("authorize_play", req))
        if self.refuse_play is not None:
            raise self.refuse_play

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == name]

    def wait_for(self, name: str, count: int = 1, timeout_s: float = 8.0) -> list[tuple[Any, ...]]:
        deadline = time.monotonic() + timeout_s
        while len(self.named(name)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} {name} calls in {timeout_s} s: {self.calls}")
            time.sleep(0.02)
        return self.named(name)


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.records.append(record)

    def fields(self, event: str) -> list[dict[str, Any]]:
        """The ``fields`` of every record logged as ``event`` (structured events)."""
        return [getattr(r, "fields", {}) for r in self.records if r.getMessage() == event]


class IngestThread:
    """An :class:`RtmpServer` on its own event loop in a daemon thread."""

    def __init__(self, **options: Any) -> None:
        self.gate = FakeGate()
        self.log = ListHandler()
        logger = logging.getLogger(f"test.ingest.{id(self)}")
        logger.addHandler(self.log)
        logger.setLevel(logging.DEBUG)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = RtmpServer(self.gate, "127.0.0.1", 0, logger=logger, **options)
        self.call(self.server.start)
        self.closed = False

    def call(self, fn: Callable[[], Coroutine[Any, Any, Any]], timeout_s: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout_s)

    def url(self, name: str, app: str = APP) -> str:
        return f"rtmp://127.0.0.1:{self.server.port}/{app}/{name}"

    def live(self) -> dict[str, Any]:
        async def snapshot() -> dict[str, Any]:
            return self.server.live_streams()

        return self.call(snapshot)  # type: ignore[no-any-return]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.call(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


# -- FLV tags: splicing publishers that change under a recording (issue 10, items 11 and 12) --

FLV_AUDIO, FLV_VIDEO, FLV_SCRIPT = 8, 9, 18


@dataclass
class FlvTag:
    """One FLV tag: its type (8 audio, 9 video, 18 script), timestamp (ms) and body.

    ``send_at`` is when (seconds from the start) a real-time publisher sends it: the media
    timeline, which is not ``timestamp`` once timestamps jump (:func:`splice_flv`).
    """

    type: int
    timestamp: int
    body: bytes
    send_at: float = 0.0


def read_flv(path: Path) -> tuple[bytes, list[FlvTag]]:
    """The FLV file header (with its first PreviousTagSize) and the tags of ``path``."""
    data = path.read_bytes()
    offset = int.from_bytes(data[5:9], "big") + 4
    header, tags = data[:offset], []
    while offset + 11 <= len(data):
        size = int.from_bytes(data[offset + 1 : offset + 4], "big")
        ts = int.from_bytes(data[offset + 4 : offset + 7], "big") | data[offset + 7] << 24
        body = data[offset + 11 : offset + 11 + size]
        tags.append(FlvTag(data[offset], ts, body, ts / 1000))
        offset += 11 + size + 4
    return header, tags


def write_flv_tags(path: Path, header: bytes, tags: list[FlvTag]) -> Path:
    out = bytearray(header)
    for t in tags:
        ts = t.timestamp & 0xFFFFFFFF
        out += bytes([t.type]) + len(t.body).to_bytes(3, "big")
        out += (ts & 0xFFFFFF).to_bytes(3, "big") + bytes([ts >> 24]) + b"\0\0\0" + t.body
        out += (11 + len(t.body)).to_bytes(4, "big")
    path.write_bytes(bytes(out))
    return path


def splice_flv(
    first: Path, second: Path, out: Path, *, restart_at_s: float | None = None
) -> list[FlvTag]:
    """One FLV stream: ``first``'s header and tags, then ``second``'s tags (its sequence headers
    re-sent at the switch, its metadata left out), as one publisher sending both would.

    The second part's media follows the first's end on the timeline (``send_at``); its
    timestamps continue the first's, or with ``restart_at_s`` start again from that many
    seconds (0: an encoder restarted behind a relay; past the first's end: a forward jump).
    Writes ``out`` (to publish with ffmpeg) and returns its tags (for :func:`publish_tags`:
    ``send_at`` is lost when the file is read back).
    """
    header, a = read_flv(first)
    _, b = read_flv(second)
    b = [t for t in b if t.type != FLV_SCRIPT]
    step = 40  # ms: one frame at 25 fps, where the second part goes on
    end = max(t.timestamp for t in a) + step
    base = end if restart_at_s is None else round(restart_at_s * 1000)
    for t in b:
        t.send_at = (t.timestamp + end) / 1000
        t.timestamp += base
    write_flv_tags(out, header, a + b)
    return a + b


def publish_tags(url: str, tags: list[FlvTag], *, speed: float = 1.0) -> None:
    """Publish FLV tags over RTMP as they are (timestamps untouched, unlike the ffmpeg CLI,
    which rewrites timestamps that go back), each sent at its ``send_at`` in real time."""
    p = urlsplit(url)
    app, _, name = p.path.lstrip("/").rpartition("/")
    client = RtmpTestClient(p.hostname or "127.0.0.1", p.port or 1935, app)
    try:
        status = client.publish(name + (f"?{p.query}" if p.query else ""))
        assert status.args[0]["code"] == "NetStream.Publish.Start", status.args
        start = time.monotonic()
        for t in tags:
            delay = start + t.send_at / speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            type_id = messages.DATA_AMF0 if t.type == FLV_SCRIPT else t.type
            csid = 6 if t.type == FLV_VIDEO else 4 if t.type == FLV_AUDIO else 5
            client.send(Message(type_id, 1, t.timestamp, t.body), csid)
    finally:
        client.close()


@dataclass
class Decoded:
    """What decoding a whole file found, as a user's player would see it."""

    sizes: list[tuple[int, int]] = field(default_factory=list)  # picture sizes, in order
    video_frames: int = 0
    audio_packets: int = 0
    audio_rates: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # decoder errors (and ffmpeg's log)
    duration_s: float = 0.0  # the longer track, first timestamp to last packet's end


def decode_file(path: Path) -> Decoded:
    """Decode every frame of ``path`` with PyAV, counting errors; also run
    ``ffmpeg -v error -i path -f null -``, whose every line is an error."""
    out = Decoded()
    spans = [_decode_track(path, kind, out) for kind in ("video", "audio")]
    out.duration_s = max(spans)
    cli = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    out.errors += [line for line in cli.stderr.decode(errors="replace").splitlines() if line]
    return out


def _decode_track(path: Path, kind: str, out: Decoded) -> float:
    """Decode the first ``kind`` track into ``out``; return its span in seconds."""
    with av.open(str(path)) as c:
        streams = c.streams.video if kind == "video" else c.streams.audio
        if not streams:
            return 0.0
        stream = streams[0]
        stream.thread_type = "AUTO"
        first, end = None, 0.0
        for packet in c.demux(stream):  # the last, empty packet flushes the decoder
            if packet.size and packet.pts is not None:
                t = float(packet.pts * packet.time_base)
                first = t if first is None else min(first, t)
                end = max(end, t + float((packet.duration or 0) * packet.time_base))
            if kind == "audio" and packet.size:
                out.audio_packets += 1
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                out.errors.append(f"{kind}: {exc}")
                continue
            for frame in frames:
                if isinstance(frame, av.VideoFrame):
                    if not out.sizes or out.sizes[-1] != (frame.width, frame.height):
                        out.sizes.append((frame.width, frame.height))
                    out.video_frames += 1
                elif isinstance(frame, av.AudioFrame) and frame.sample_rate not in out.audio_rates:
                    out.audio_rates.append(frame.sample_rate)
        return end - (first or 0.0)


# -- pre-encoded sources that publishers copy untouched, compared packet by packet -------------
def encode_copy_source(
    path: Path,
    *,
    seconds: int,
    fps: int,
    gop: int,
    freq: int = 660,
    box: str | None = None,
) -> Path:
    """An H.264/AAC FLV (320x240, a keyframe every ``gop`` frames, ``box``: a coloured square
    in the corner) that publishers send with ``-c copy``, so that a recording can be compared
    with it packet by packet (:func:`packet_hashes`)."""
    vf = ["-vf", f"drawbox=c={box}:t=fill:w=40:h=40"] if box else []
    subprocess.run(
        [
            *("ffmpeg", "-hide_banner", "-loglevel", "error", "-y"),
            *("-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={fps}:duration={seconds}"),
            *("-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate=48000:duration={seconds}"),
            *vf,
            *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
            *("-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"),
            *("-c:a", "aac", "-b:a", "64k", str(path)),
        ],
        check=True,
        timeout=180,
    )
    return path


def copy_publish(source: Path, url: str) -> subprocess.Popen[bytes]:
    """Publish ``source`` in real time, packets untouched."""
    return subprocess.Popen(
        [
            *("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin"),
            *("-re", "-i", str(source), "-c", "copy", "-f", "flv", url),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def packet_hashes(path: Path, kind: str) -> list[str]:
    """The sha1 of every non-empty packet of the first ``kind`` ("video"/"audio") stream."""
    with av.open(str(path)) as c:
        streams = c.streams.video if kind == "video" else c.streams.audio
        return [hashlib.sha1(bytes(p)).hexdigest() for p in c.demux(streams[0]) if p.size]


def decode_errors(path: Path) -> str:
    """What ffmpeg says when decoding the whole file ("" when it decodes cleanly)."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out.stderr.strip()
