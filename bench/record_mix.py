"""CPU per output second of a cloudrec mixed recording against the ffmpeg CLI composing the same.

    python bench/record_mix.py [--cases A,B,C] [--seconds 20] [--warmup 5]

One ``cloudrec serve`` (embedded RTMP ingest, its storage an S3 server on loopback, as in
``tests/e2e``) runs for the whole bench.  Each input is a pre-encoded 640x360 25 fps H.264
(GOP 2 s, veryfast, ~800 kb/s) + 96 kb/s AAC 48 kHz FLV with its own colour and tone, copied
into the ingest in real time (``ffmpeg -re -stream_loop -1 -c copy -f flv``), one uid each.

Cases (``mixconfig`` templateid 3, tiled; x264 veryfast, CBR-ish VBV, GOP 60, AAC 128 kb/s):

* A: 4 inputs -> 1280x720 30 fps 2000 kb/s;
* B: 4 inputs -> 1920x1080 30 fps 2000 kb/s;
* C: 9 inputs -> 1280x720 30 fps 2000 kb/s.

cloudrec phase: ``applyrecord`` + ``startrecord`` (``streamtype`` 1, the mixconfig); once the
task is ``recording`` and its spooled MP4 has a first fragment, a warm-up, then the utime+stime
of the ``cloudrec run-task`` worker (pid from ``tasks.worker``) over the window.  Keep-up: the
spooled fragmented MP4 is polled (its ``moof``/``trun`` boxes give the video frames written so
far); frames written between the first and the last fragment seen in the window over the time
between them is the output frame rate achieved, and the worker's lag behind the wall clock
(``begin + frames / fps`` against now) is read at both ends.  After ``stoprecord`` the file is
downloaded from the bucket and its video packets counted against (stop - begin) x fps.

ffmpeg phase: ``ffmpeg -rw_timeout 5000000 -i rtmp://.../s1 ... -filter_complex
"...scale...xstack...fps=30[v];...amix...[a]" -c:v libx264 -preset veryfast -b:v 2000k -maxrate
2000k -bufsize 4000k -g 60 -c:a aac ... -t N out.mp4`` pulling the same live streams; its
``-progress`` output gives the frames written; same warm-up and window.  With ``--matched``
a third phase runs that command with cloudrec's own x264 and scaler settings added (``-tune
zerolatency -keyint_min 60 -sc_threshold 0``, bilinear scaling): the plain command is the
baseline of issue 13's goals; the matched one compares like with like.

Everything is loopback; every process is cleaned up on exit, on error and on Ctrl-C / SIGTERM.
Run it with ``PYTHONPATH=<repo>/src`` (the bench sets it for its children too).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
sys.path[:0] = [str(SRC), str(REPO)]
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(SRC), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)

import av  # noqa: E402
from record_single import _ffmpeg_version, _version, alive, end, rss_mb  # noqa: E402
from rtmp_load import machine_busy_s, proc_cpu_s  # noqa: E402
from tests.e2e.test_record_single import APP, fetched, storage_service  # noqa: E402
from tests.jocloud import JoCloud  # noqa: E402
from tests.s3server import FaultyS3  # noqa: E402
from tests.service import Service  # noqa: E402

IN_W, IN_H, IN_FPS = 640, 360, 25
SOURCE_S = 20
IN_KBPS = 800
OUT_FPS = 30
OUT_GOP = 60
OUT_KBPS = 2000
START_TIMEOUT_S = 60.0
POLL_S = 0.2
COLOURS = ["red", "blue", "green", "yellow", "magenta", "cyan", "orange", "white", "purple"]


@dataclass(frozen=True)
class Case:
    name: str
    inputs: int
    width: int
    height: int

    @property
    def label(self) -> str:
        return f"{self.name}: {self.inputs} x {IN_W}x{IN_H} -> {self.width}x{self.height}"


CASES = {
    "A": Case("A", 4, 1280, 720),
    "B": Case("B", 4, 1920, 1080),
    "C": Case("C", 9, 1280, 720),
}


# -- sources and publishers ----------------------------------------------------------------


def source_flv(cache_dir: Path, i: int) -> Path:
    """Input ``i``: testsrc2 with a coloured box and a hue of its own, a tone of its own."""
    path = cache_dir / f"mix-in{i}-{IN_W}x{IN_H}-{IN_FPS}-{IN_KBPS}k-{SOURCE_S}s.flv"
    if path.exists() and path.stat().st_size > 0:
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.flv")
    gop = str(2 * IN_FPS)
    vf = (
        f"hue=h={40 * i},drawbox=x=20:y=20:w=160:h=120:c={COLOURS[i % len(COLOURS)]}:t=fill,"
        f"drawtext=text='in{i}':x=220:y=40:fontsize=64:fontcolor=white"
    )
    cmd = [
        *("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"),
        *("-f", "lavfi", "-i", f"testsrc2=size={IN_W}x{IN_H}:rate={IN_FPS}:duration={SOURCE_S}"),
        *("-f", "lavfi", "-i", f"sine=frequency={300 + 110 * i}:sample_rate=48000:d={SOURCE_S}"),
        *("-vf", vf, "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
        *("-b:v", f"{IN_KBPS}k", "-maxrate", f"{IN_KBPS}k", "-bufsize", f"{IN_KBPS}k"),
        *("-g", gop, "-keyint_min", gop, "-sc_threshold", "0"),
        *("-c:a", "aac", "-b:a", "96k", "-ac", "2", "-f", "flv", str(partial)),
    ]
    if subprocess.run(cmd, capture_output=True, timeout=300).returncode != 0:
        cmd[cmd.index("-vf") + 1] = vf.rsplit(",drawtext", 1)[0]  # no fonts: no label
        subprocess.run(cmd, check=True, timeout=300)
    partial.rename(path)
    return path


def publish(flv: Path, url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re"),
            *("-stream_loop", "-1", "-i", str(flv), "-c", "copy", "-f", "flv", url),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# -- fragmented MP4 progress -------------------------------------------------------------


def _boxes(data: bytes, start: int, stop: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the complete boxes in ``data[start:stop]``."""
    pos = start
    while pos + 8 <= stop:
        size, kind = struct.unpack_from(">I4s", data, pos)
        head = 8
        if size == 1:
            if pos + 16 > stop:
                return
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            head = 16
        elif size == 0:
            size = stop - pos
        if size < head or pos + size > stop:
            return
        yield kind, pos + head, pos + size
        pos += size


@dataclass
class FragmentCounter:
    """Video frames in a growing fragmented MP4 (``empty_moov`` + ``moof``/``trun``), read
    incrementally from complete top-level boxes."""

    path: Path
    offset: int = 0
    video_track: int | None = None
    frames: int = 0

    def poll(self) -> int:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return self.frames
        used = 0
        for kind, body, stop in _boxes(data, 0, len(data)):
            if kind == b"moov":
                self.video_track = _video_track(data, body, stop)
            elif kind == b"moof" and self.video_track is not None:
                self.frames += _moof_samples(data, body, stop, self.video_track)
            used = stop
        self.offset += used
        return self.frames


def _video_track(data: bytes, start: int, stop: int) -> int | None:
    for kind, body, end_ in _boxes(data, start, stop):
        if kind != b"trak":
            continue
        track_id, handler = None, None
        for k, b, e in _boxes(data, body, end_):
            if k == b"tkhd":
                version = data[b]
                track_id = struct.unpack_from(">I", data, b + (20 if version == 1 else 12))[0]
            elif k == b"mdia":
                for k2, b2, _ in _boxes(data, b, e):
                    if k2 == b"hdlr":
                        handler = data[b2 + 8 : b2 + 12]
        if handler == b"vide":
            return track_id
    return None


def _moof_samples(data: bytes, start: int, stop: int, track: int) -> int:
    total = 0
    for kind, body, end_ in _boxes(data, start, stop):
        if kind != b"traf":
            continue
        track_id, samples = None, 0
        for k, b, _ in _boxes(data, body, end_):
            if k == b"tfhd":
                track_id = struct.unpack_from(">I", data, b + 4)[0]
            elif k == b"trun":
                samples += struct.unpack_from(">I", data, b + 4)[0]
        if track_id == track:
            total += samples
    return total


@dataclass
class Progress:
    """(wall time, frames written) samples: for the MP4 fragments, only when the count moves."""

    samples: list[tuple[float, int]] = field(default_factory=list)

    def add(self, t: float, frames: int) -> None:
        if not self.samples or frames != self.samples[-1][1]:
            self.samples.append((t, frames))

    def rate(self, t0: float, t1: float) -> tuple[float, int, float]:
        """Frames/s between the first and the last sample within [t0, t1], frames, span s."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return 0.0, 0, 0.0
        (a, fa), (b, fb) = inside[0], inside[-1]
        return (fb - fa) / (b - a), fb - fa, b - a


def ffmpeg_progress_frames(path: Path) -> int:
    """The last ``frame=`` in an ffmpeg ``-progress`` file."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return 0
    frames = 0
    for line in text.splitlines():
        if line.startswith("frame="):
            with contextlib.suppress(ValueError):
                frames = int(line[6:])
    return frames


# -- the world ----------------------------------------------------------------------------


@dataclass
class World:
    service: Service
    jo: JoCloud
    work: Path
    sources: list[Path]
    room: str = ""
    publishers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: set[int] = field(default_factory=set)
    others: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def app(self) -> dict[str, Any]:
        app: dict[str, Any] = self.service.app  # type: ignore[attr-defined]
        return app

    def use_room(self, n: int) -> None:
        """``n`` publishers live in a room of their own (the previous room's publishers end)."""
        room = f"mix{n}"
        if room == self.room:
            return
        end(self.publishers)
        self.publishers = []
        self.room = room
        for i in range(n):
            url = self.service.publish_url(APP, room, f"s{i}", "--uid", f"u{i}")
            self.publishers.append(publish(self.sources[i], url))
        deadline = time.monotonic() + 30
        while len(self.service.streams(self.app, room)) < n:
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.publishers):
                raise RuntimeError(f"{n} publishers did not all go live in {room}")
            time.sleep(0.2)

    def play_url(self, i: int) -> str:
        return f"rtmp://127.0.0.1:{self.service.rtmp_port}/{APP}/{self.room}/s{i}"

    def task(self, record_id: str) -> dict[str, Any]:
        r = self.service.get(f"/v1/apps/{APP}/tasks/{record_id}", self.app)
        r.raise_for_status()
        task: dict[str, Any] = r.json()
        return task

    def wait_task(self, rid: str, states: set[str], timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while (task := self.task(rid))["state"] not in states:
            if task["state"] in {"failed", "completed"} or time.monotonic() > deadline:
                raise RuntimeError(
                    f"task {rid} is {task['state']} ({task.get('error')}), waited for {states}"
                    f"\n{self.task_logs(rid)}"
                )
            time.sleep(0.2)
        return task

    def worker_pid(self, record_id: str) -> int:
        with contextlib.closing(sqlite3.connect(self.service.data_dir / "cloudrec.db")) as db:
            row = db.execute("SELECT worker FROM tasks WHERE task_id=?", (record_id,)).fetchone()
        pid = int(row[0].split(":")[1])
        self.workers.add(pid)
        return pid

    def task_logs(self, rid: str = "") -> str:
        out = []
        for p in sorted((self.service.data_dir / "logs").glob(f"task-*{rid}*.log")):
            lines = p.read_text(errors="replace").splitlines()
            out.append(f"== {p.name} (last lines)\n" + "\n".join(lines[-15:]))
        return "\n".join(out)


@contextlib.contextmanager
def world(work: Path, sources: list[Path]) -> Iterator[World]:
    data_dir = work / "data"
    data_dir.mkdir()
    s3 = FaultyS3().start()
    w: World | None = None
    service: Service | None = None
    try:
        s3.client().create_bucket(Bucket="recbucket")
        service = storage_service(data_dir, s3)
        jo = JoCloud(service.http, APP, service.app["server_secret"])  # type: ignore[attr-defined]
        w = World(service, jo, work, sources)
        yield w
    finally:
        if w is not None:
            end(w.others)
            end(w.publishers)
        if service is not None and service.proc is not None:
            try:
                service.stop(timeout_s=30)
            except subprocess.TimeoutExpired:
                service.proc.kill()
                service.proc.wait()
        if w is not None:
            for pid in w.workers:  # workers run in their own session; leave none behind
                with contextlib.suppress(OSError):
                    if alive(pid) and b"run-task" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            s3.stop()


# -- phases -------------------------------------------------------------------------------


def mixconfig(case: Case) -> dict[str, Any]:
    return {
        "templateid": 3,
        "output": {
            "streamtype": 0,
            "videowidth": case.width,
            "videoheight": case.height,
            "videobitrate": OUT_KBPS,
            "videofps": OUT_FPS,
            "videogop": OUT_GOP,
            "videoencode": 100,
            "audiobitrate": 128,
            "audiosample": 48000,
            "audiochannel": 2,
            "audioformat": 2,
        },
    }


def thread_cpu_s(pid: int) -> dict[str, float]:
    """utime + stime per thread of ``pid``, keyed by ``tid:name``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            stat = (task / "stat").read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            out[f"{task.name}:{name}"] = proc_cpu_s(f"{pid}/task/{task.name}")
    return out


def window(
    pid: int, poll: Any, progress: Progress, warmup_s: float, window_s: float
) -> dict[str, Any]:
    """Warm up, then CPU of ``pid`` and the machine over the window while ``poll()`` (frames
    written so far) is sampled into ``progress``."""
    deadline = time.monotonic() + warmup_s
    while time.monotonic() < deadline:
        progress.add(time.time(), poll())
        time.sleep(POLL_S)
    busy0, total0 = machine_busy_s()
    threads0 = thread_cpu_s(pid)
    cpu0, t0, wall0 = proc_cpu_s(pid), time.monotonic(), time.time()
    while time.monotonic() < t0 + window_s:
        progress.add(time.time(), poll())
        if not alive(pid):
            raise RuntimeError(f"process {pid} exited during the window")
        time.sleep(POLL_S)
    cpu1, elapsed, wall1 = proc_cpu_s(pid), time.monotonic() - t0, time.time()
    threads1 = thread_cpu_s(pid)
    busiest = sorted(
        ((threads1[k] - threads0.get(k, 0.0), k.split(":", 1)[1]) for k in threads1), reverse=True
    )[:3]
    busy1, total1 = machine_busy_s()
    progress.add(time.time(), poll())
    fps, frames, span = progress.rate(wall0, wall1 + 3 * POLL_S)
    return {
        "window_s": elapsed,
        "cpu_s": cpu1 - cpu0,
        "fps": fps,
        "frames": frames,
        "span_s": span,
        "rss_mb": rss_mb(pid),
        "machine_busy_pct": 100 * (busy1 - busy0) / (total1 - total0),
        "wall": (wall0, wall1),
        "threads": [(name, cpu / elapsed) for cpu, name in busiest],
    }


def phase_cloudrec(w: World, case: Case, warmup_s: float, window_s: float) -> dict[str, Any]:
    resid = w.jo.apply()
    body = w.jo.start_body(resid, w.room, "", streamtype=1, mixconfig=mixconfig(case))
    body.pop("uid")
    answer = w.jo.call("POST", "startrecord", body)
    if answer.get("code") != 0:
        raise RuntimeError(f"startrecord: {answer}")
    rid = answer["recordid"]
    result: dict[str, Any] = {}
    try:
        w.wait_task(rid, {"recording"}, START_TIMEOUT_S)
        pid = w.worker_pid(rid)
        spool = w.service.data_dir / "spool" / str(APP) / rid
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (mp4s := sorted(spool.rglob("*.mp4")) if spool.exists() else []):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no MP4 in {spool}\n{w.task_logs(rid)}")
            time.sleep(POLL_S)
        counter = FragmentCounter(mp4s[0])
        progress = Progress()
        result = window(pid, counter.poll, progress, warmup_s, window_s)
        begin_s = w.task(rid)["files"][0]["begin_ms"] / 1000
        lag = [t - (begin_s + f / OUT_FPS) for t, f in progress.samples if f]
        result["lag_s"] = (lag[len(lag) // 3], lag[-1]) if lag else (0.0, 0.0)
    finally:
        stop_at = time.time()
        w.jo.stop(resid, w.room, rid)
    t_stop = time.monotonic()
    task = w.wait_task(rid, {"uploading", "completed"}, 120)
    result["stop_s"] = time.monotonic() - t_stop
    if task.get("error"):
        result["error"] = task["error"]
    [f] = task["files"]
    path = fetched(w.service, task, f, timeout_s=60)
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        size = (v.codec_context.width, v.codec_context.height)
        packets = sum(1 for p in c.demux(v) if p.size)
    result["file_frames"] = packets
    result["file_expected"] = (stop_at - f["begin_ms"] / 1000) * OUT_FPS
    result["size"] = size
    return result


# cloudrec's own encoder and scaler settings (media/recorder/mixencode.py, compositor/frame.py)
# on top of the plain command: no B-frames or lookahead, no scene-cut keyframes, bilinear.
MATCHED_X264 = ("-tune", "zerolatency", "-keyint_min", str(OUT_GOP), "-sc_threshold", "0")


def ffmpeg_mix(
    w: World, case: Case, seconds: float, out: Path, progress: Path, matched: bool = False
) -> list[str]:
    n = case.inputs
    cols = 2 if n <= 4 else 3
    cw, ch = case.width // cols // 2 * 2, case.height // cols // 2 * 2
    labels = [f"v{i}" for i in range(n)]
    flags = ":flags=bilinear" if matched else ""
    scales = ";".join(f"[{i}:v]scale={cw}:{ch}{flags}[{labels[i]}]" for i in range(n))

    def at(k: int, axis: str) -> str:
        return "+".join(f"{axis}{j}" for j in range(k)) or "0"

    layout = "|".join(f"{at(i % cols, 'w')}_{at(i // cols, 'h')}" for i in range(n))
    pad = (
        f",pad={case.width}:{case.height}"
        if (cw * cols, ch * cols) != (case.width, case.height)
        else ""
    )
    graph = (
        f"{scales};{''.join(f'[{x}]' for x in labels)}xstack=inputs={n}:layout={layout}"
        f"{pad},fps={OUT_FPS}[v];{''.join(f'[{i}:a]' for i in range(n))}amix=inputs={n}[a]"
    )
    inputs = [a for i in range(n) for a in ("-rw_timeout", "5000000", "-i", w.play_url(i))]
    return [
        *("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"),
        *("-progress", str(progress), "-stats_period", "0.25", *inputs),
        *("-filter_complex", graph, "-map", "[v]", "-map", "[a]"),
        *("-c:v", "libx264", "-preset", "veryfast", "-b:v", f"{OUT_KBPS}k"),
        *("-maxrate", f"{OUT_KBPS}k", "-bufsize", f"{2 * OUT_KBPS}k", "-g", str(OUT_GOP)),
        *(MATCHED_X264 if matched else ()),
        *("-c:a", "aac", "-ar", "48000", "-ac", "2", "-b:a", "128k"),
        *("-t", f"{seconds:.0f}", str(out)),
    ]


def phase_ffmpeg(
    w: World, case: Case, warmup_s: float, window_s: float, matched: bool = False
) -> dict[str, Any]:
    tag = f"{case.name}{'-matched' if matched else ''}"
    out = w.work / f"ffmpeg-{tag}.mp4"
    prog = w.work / f"ffmpeg-{tag}.progress"
    err = w.work / f"ffmpeg-{tag}.log"
    cmd = ffmpeg_mix(w, case, warmup_s + window_s + 30, out, prog, matched)
    with err.open("wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    w.others.append(proc)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while ffmpeg_progress_frames(prog) == 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the ffmpeg mix did not start: {err.read_text()[-2000:]}")
            time.sleep(POLL_S)
        t_first = time.time()
        progress = Progress()
        result = window(
            proc.pid, lambda: ffmpeg_progress_frames(prog), progress, warmup_s, window_s
        )
        lag = [t - (t_first + f / OUT_FPS) for t, f in progress.samples if f]
        result["lag_s"] = (lag[len(lag) // 3], lag[-1]) if lag else (0.0, 0.0)
        return result
    finally:
        end([proc], signal.SIGINT)
        w.others.remove(proc)
        out.unlink(missing_ok=True)


# -- report -----------------------------------------------------------------------------------


def per_s(r: dict[str, Any]) -> float:
    """CPU seconds per second of output: CPU over the window over the output seconds written
    in it (the window when the output kept real time), or over the window when nothing could
    be counted."""
    out_s = r["window_s"] * min(1.0, r["fps"] / OUT_FPS) if r["fps"] > 0 else r["window_s"]
    return float(r["cpu_s"] / out_s)


def describe(name: str, r: dict[str, Any]) -> str:
    s = (
        f"{name:>8}: {per_s(r):.2f} CPU-s/s, {r['fps']:.1f} fps out "
        f"({r['frames']} frames in {r['span_s']:.1f} s), lag {r['lag_s'][0]:+.2f} -> "
        f"{r['lag_s'][1]:+.2f} s, RSS {r['rss_mb']:.0f} MB, machine busy "
        f"{r['machine_busy_pct']:.0f}%"
    )
    s += "; busiest threads " + ", ".join(f"{n} {100 * c:.0f}%" for n, c in r["threads"])
    if "file_frames" in r:
        s += (
            f"; file {r['size'][0]}x{r['size'][1]} {r['file_frames']} frames vs "
            f"{r['file_expected']:.0f} expected, task done {r['stop_s']:.1f} s after stop"
        )
    return s


def report(results: dict[str, dict[str, dict[str, Any]]], warmup_s: float, window_s: float) -> str:
    header = (
        "| case | cloudrec CPU-s per output s | ffmpeg CPU-s per output s | ratio cloudrec/ffmpeg "
        "| output fps in window (cloudrec / ffmpeg) | lag growth over the window, s "
        "(cloudrec / ffmpeg) | cloudrec file: frames / expected | RSS MB "
        "(cloudrec / ffmpeg) | machine busy % (cloudrec / ffmpeg) |"
    )
    matched = any("matched" in pair for pair in results.values())
    if matched:
        header += (
            " ffmpeg matched CPU-s per output s | ratio cloudrec/ffmpeg matched "
            "| output fps (ffmpeg matched) |"
        )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, pair in results.items():
        c, f, m = pair.get("cloudrec"), pair.get("ffmpeg"), pair.get("matched")
        case = CASES[name]

        def cell(r: dict[str, Any] | None, fmt: str, key: str) -> str:
            return format(r[key], fmt) if r else "-"

        ratio = f"{per_s(c) / per_s(f):.2f}x" if c and f and f["cpu_s"] > 0 else "n/a"
        lag = " / ".join(f"{r['lag_s'][1] - r['lag_s'][0]:+.2f}" if r else "-" for r in (c, f))
        file = (
            f"{c['file_frames']} / {c['file_expected']:.0f} "
            f"({100 * c['file_frames'] / c['file_expected']:.0f}%)"
            if c
            else "-"
        )
        lines.append(
            f"| {case.label} | {f'{per_s(c):.2f}' if c else '-'} | "
            f"{f'{per_s(f):.2f}' if f else '-'} | {ratio} "
            f"| {cell(c, '.1f', 'fps')} / {cell(f, '.1f', 'fps')} | {lag} | {file} "
            f"| {cell(c, '.0f', 'rss_mb')} / {cell(f, '.0f', 'rss_mb')} "
            f"| {cell(c, '.0f', 'machine_busy_pct')} / {cell(f, '.0f', 'machine_busy_pct')} |"
        )
        if matched:
            ratio_m = f"{per_s(c) / per_s(m):.2f}x" if c and m and m["cpu_s"] > 0 else "n/a"
            lines[-1] += (
                f" {f'{per_s(m):.2f}' if m else '-'} | {ratio_m} | {cell(m, '.1f', 'fps')} |"
            )
    lines += [
        "",
        f"cloudrec: {_version()}; {os.cpu_count()} cores; ffmpeg {_ffmpeg_version()}.",
        f"Inputs: {IN_W}x{IN_H} {IN_FPS} fps H.264 ~{IN_KBPS} kb/s + AAC, copy-published in real "
        f"time. Output {OUT_FPS} fps, GOP {OUT_GOP}, {OUT_KBPS} kb/s x264 veryfast + AAC 128k. "
        f"Window {window_s:.0f} s after a {warmup_s:.0f} s warm-up; CPU is utime+stime of the one "
        "mixing process (cloudrec run-task / ffmpeg) over the window, per second of wall time "
        "(= per output second when the output keeps real time: see the fps column).",
    ]
    if matched:
        lines.append(
            "ffmpeg matched: the same command with cloudrec's encoder and scaler settings added "
            f"({' '.join(MATCHED_X264)}, scale flags=bilinear)."
        )
    return "\n".join(lines)


def _sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cases", default="A,B,C", help="comma-separated cases: A, B, C")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=5.0, help="warm-up before the window")
    parser.add_argument("--skip-ffmpeg", action="store_true", help="no baseline")
    parser.add_argument(
        "--matched",
        action="store_true",
        help="also run ffmpeg with cloudrec's own x264 and scaler settings (-tune zerolatency, "
        "no scene cuts, bilinear scale) and report that ratio too",
    )
    args = parser.parse_args(argv)
    cases = [CASES[c.strip().upper()] for c in args.cases.split(",") if c.strip()]
    signal.signal(signal.SIGTERM, _sigterm)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the S3 server's request log
    started = time.monotonic()
    cache = Path(tempfile.gettempdir()) / "cloudrec-bench"
    sources = [source_flv(cache, i) for i in range(max(c.inputs for c in cases))]
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="cloudrec-bench-mix-") as tmp,
        world(Path(tmp), sources) as w,
    ):
        for case in sorted(cases, key=lambda c: c.inputs):
            w.use_room(case.inputs)
            print(f"case {case.label}", file=sys.stderr, flush=True)
            phases: list[tuple[str, Any]] = [("cloudrec", phase_cloudrec)]
            if not args.skip_ffmpeg:
                phases.append(("ffmpeg", phase_ffmpeg))
                if args.matched:
                    phases.append(("matched", functools.partial(phase_ffmpeg, matched=True)))
            for name, phase in phases:
                try:
                    r = phase(w, case, args.warmup, args.seconds)
                except RuntimeError as e:
                    print(f"{name:>8}: FAILED: {e}", file=sys.stderr, flush=True)
                    if name == "cloudrec":
                        print(w.task_logs(), file=sys.stderr, flush=True)
                    continue
                results.setdefault(case.name, {})[name] = r
                print(describe(name, r), file=sys.stderr, flush=True)
                if r.get("error"):
                    print(f"   task error: {r['error']}\n{w.task_logs()}", file=sys.stderr)
    print(f"\nwhole run: {time.monotonic() - started:.0f} s", file=sys.stderr)
    print("\n" + report(results, args.warmup, args.seconds), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
