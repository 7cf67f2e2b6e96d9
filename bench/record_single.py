"""CPU per recorded stream: cloudrec's recording workers against a plain ffmpeg copy.

    python bench/record_single.py [--counts 1,10,50] [--seconds 15] [--latency-runs 5]
                                  [--executors process,host]

One ``cloudrec serve`` (embedded RTMP ingest) runs for the whole bench.  For each count N,
N ffmpeg publishers copy a pre-encoded 640x360 25 fps ~1 Mbps H.264 + 96 kb/s AAC FLV
(GOP 2 s) into the ingest in real time (``-re -stream_loop -1 -c copy``), one stream per uid.

* Phase A: N recordings through the JoCloud API (``applyrecord`` + ``startrecord``, one per
  uid, paced under the 10 requests/s/AppID limit).  Once every task is ``recording`` and a
  short warm-up has passed, the summed utime+stime of the N ``cloudrec run-task`` workers (pid
  from ``tasks.worker``) is read over the window; then ``stoprecord`` for each.
* Phase B: N ``ffmpeg -rw_timeout 5000000 -i rtmp://.../STREAM -c copy -f mp4 -movflags
  frag_keyframe+empty_moov+default_base_moof`` processes pull the same streams; same warm-up and
  window.

The cost is CPU seconds per stream-second, printed as % of one core per stream, with the ratio
cloudrec / ffmpeg, each recorder's RSS at the end of the window, the bytes written during the
window against the source bit rate ("written", a keep-up check: files grow one GOP at a time,
so it is only good to about one GOP over the window) and the whole machine's busy share.

Start latency (``--latency-runs`` recordings of one stream): from the ``startrecord`` reply to
the moment the spooled MP4 holds a video keyframe that PyAV decodes; the same for the baseline,
from spawning ffmpeg.  Everything is loopback; every process is cleaned up on exit, on error
and on Ctrl-C / SIGTERM.  The FLV is cached in ``$TMPDIR/cloudrec-bench``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import av

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rtmp_load import machine_busy_s, proc_cpu_s  # noqa: E402
from tests.jocloud import JoCloud  # noqa: E402
from tests.service import Service  # noqa: E402

from cloudrec.core.tokens import make_publish_token  # noqa: E402

APP_ID = 4343
ROOM = "bench"
FPS = 25
GOP_S = 2
SOURCE_S = 20
VIDEO_KBPS = 1000
AUDIO_KBPS = 96
WARMUP_S = 3.0
RECORDING_TIMEOUT_S = 180.0
POLL_S = 0.05
LATENCY_TIMEOUT_S = 20.0


def source_flv(cache_dir: Path) -> Path:
    """640x360 25 fps ~1 Mbps H.264 (GOP 2 s, no scene cuts) + AAC FLV, made once."""
    path = cache_dir / f"rec-640x360-{VIDEO_KBPS}k-g{GOP_S}-{SOURCE_S}s.flv"
    if path.exists() and path.stat().st_size > 0:
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.flv")
    gop = str(FPS * GOP_S)
    subprocess.run(
        [
            *("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"),
            *("-f", "lavfi", "-i", f"testsrc2=size=640x360:rate={FPS}:duration={SOURCE_S}"),
            *("-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={SOURCE_S}"),
            *("-vf", "noise=alls=8:allf=t", "-c:v", "libx264", "-preset", "veryfast"),
            *("-pix_fmt", "yuv420p", "-b:v", f"{VIDEO_KBPS}k", "-maxrate", f"{VIDEO_KBPS}k"),
            *("-bufsize", f"{VIDEO_KBPS}k", "-g", gop, "-keyint_min", gop, "-sc_threshold", "0"),
            *("-c:a", "aac", "-b:a", f"{AUDIO_KBPS}k", "-ac", "2", "-f", "flv", str(partial)),
        ],
        check=True,
        timeout=300,
    )
    partial.rename(path)
    return path


def source_bytes_per_s(flv: Path) -> float:
    with av.open(str(flv)) as c:
        duration = float(c.duration or 0) / av.time_base
    return flv.stat().st_size / duration


# -- processes ---------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pss_mb(pid: int) -> float:
    """Proportional set size: RSS with shared pages (libraries) split between their users."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def end(procs: list[subprocess.Popen[Any]], sig: int = signal.SIGTERM) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)
    deadline = time.monotonic() + 5
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


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


def baseline(url: str, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"),
            *("-rw_timeout", "5000000", "-i", url, "-c", "copy", "-f", "mp4"),
            *("-movflags", "frag_keyframe+empty_moov+default_base_moof", str(out)),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# -- the world ----------------------------------------------------------------------------


@dataclass
class World:
    service: Service
    jo: JoCloud
    app: dict[str, Any]
    flv: Path
    work: Path
    publish_urls: list[str]
    publishers: list[subprocess.Popen[bytes]]
    workers: set[int]

    @property
    def spool(self) -> Path:
        return self.service.data_dir / "spool" / str(APP_ID)

    def play_url(self, i: int) -> str:
        return f"rtmp://127.0.0.1:{self.service.rtmp_port}/{APP_ID}/{ROOM}/s{i}"

    def ensure_publishers(self, n: int) -> None:
        while len(self.publishers) < n:
            self.publishers.append(publish(self.flv, self.publish_urls[len(self.publishers)]))
        deadline = time.monotonic() + 30
        while len(self.service.streams(self.app, ROOM)) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(self.service.streams(self.app, ROOM))}/{n} live")
            if any(p.poll() is not None for p in self.publishers):
                raise RuntimeError("a publisher exited")
            time.sleep(0.2)

    def task(self, record_id: str) -> dict[str, Any]:
        r = self.service.get(f"/v1/apps/{APP_ID}/tasks/{record_id}", self.app)
        r.raise_for_status()
        task: dict[str, Any] = r.json()
        return task

    def wait_tasks(self, ids: list[str], states: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for rid in ids:
            while (state := self.task(rid)["state"]) not in states:
                if state in {"failed", "completed"} or time.monotonic() > deadline:
                    raise RuntimeError(f"task {rid} is {state}, waited for {states}: {self.log()}")
                time.sleep(0.2)

    def worker_pid(self, record_id: str) -> int:
        """The recorder process of a task: its own ``run-task`` process (``local:PID``) or
        the recorder host it runs in (``host:PID:TASK:ATTEMPT``)."""
        with contextlib.closing(sqlite3.connect(self.service.data_dir / "cloudrec.db")) as db:
            row = db.execute("SELECT worker FROM tasks WHERE task_id=?", (record_id,)).fetchone()
        pid = int(row[0].split(":")[1])
        self.workers.add(pid)
        return pid

    def log(self) -> str:
        path = self.service.log_path
        return path.read_text(errors="replace")[-2000:] if path and path.exists() else ""


def mint_urls(service: Service, app: dict[str, Any], n: int) -> list[str]:
    """The first publish URL from ``cloudrec app publish-url``; the rest by the documented
    token rule with the same expiry, checked against the first."""
    first = service.publish_url(APP_ID, ROOM, "s0", "--uid", "u0")
    token = parse_qs(urlsplit(first).query)["token"][0]
    expires = int(token.split(".", 1)[0])
    secret = app["publish_secret"]
    if make_publish_token(secret, APP_ID, ROOM, "s0", expires) != token:
        raise RuntimeError("the documented token rule disagrees with `cloudrec app publish-url`")
    base = f"rtmp://127.0.0.1:{service.rtmp_port}/{APP_ID}/{ROOM}"
    return [first] + [
        f"{base}/s{i}?uid=u{i}&token={make_publish_token(secret, APP_ID, ROOM, f's{i}', expires)}"
        for i in range(1, n)
    ]


@contextlib.contextmanager
def world(work: Path, flv: Path, max_streams: int, executor: str) -> Iterator[World]:
    data_dir = work / f"data-{executor}"
    data_dir.mkdir()
    # The JoCloud body's bucket does not resolve here: one try, then the backup store.
    env = {"CLOUDREC_EXECUTOR": executor, "CLOUDREC_UPLOAD_ATTEMPTS": "1"}
    service = Service(data_dir, env=env)
    w: World | None = None
    try:
        app = service.create_app(APP_ID)
        try:
            service.start()
        except TimeoutError:
            log = service.log_path.read_text()[-3000:] if service.log_path else ""
            raise RuntimeError(f"cloudrec serve did not start; its log ends with:\n{log}") from None
        jo = JoCloud(service.http, APP_ID, app["server_secret"])
        w = World(service, jo, app, flv, work, mint_urls(service, app, max_streams), [], set())
        yield w
    finally:
        if service.proc is not None:
            try:
                service.stop(timeout_s=60)
            except subprocess.TimeoutExpired:
                service.proc.kill()
                service.proc.wait()
        if w is not None:
            end(w.publishers)
            for pid in w.workers:  # workers run in their own session; leave none behind
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if alive(pid) else b""
                if b"run-task" in cmdline or b"recorder-host" in cmdline:
                    os.kill(pid, signal.SIGKILL)


# -- measurement ---------------------------------------------------------------------------


def dir_bytes(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        files = p.rglob("*") if p.is_dir() else [p]
        for f in files:
            with contextlib.suppress(OSError):
                total += f.stat().st_size
    return total


def measure(pids: list[int], outputs: list[Path], window_s: float, streams: int) -> dict[str, Any]:
    """CPU, memory and bytes written of the recorder processes ``pids`` (each counted once:
    a recorder host holds several recordings) over the window, for ``streams`` recordings."""
    pids = sorted(set(pids))
    busy0, total0 = machine_busy_s()
    cpu0 = sum(proc_cpu_s(p) for p in pids)
    bytes0 = dir_bytes(outputs)
    t0 = time.monotonic()
    time.sleep(window_s)
    cpu1 = sum(proc_cpu_s(p) for p in pids)
    elapsed = time.monotonic() - t0
    bytes1 = dir_bytes(outputs)
    busy1, total1 = machine_busy_s()
    if not all(alive(p) for p in pids):
        raise RuntimeError("a recorder exited during the window")
    rss = [rss_mb(p) for p in pids]
    pss = [pss_mb(p) for p in pids]
    return {
        "streams": streams,
        "processes": len(pids),
        "rss_per_recording_mb": sum(rss) / streams,
        "pss_per_recording_mb": sum(pss) / streams,
        "window_s": elapsed,
        "cpu_s": cpu1 - cpu0,
        "rss_median_mb": statistics.median(rss),
        "rss_max_mb": max(rss),
        "pss_median_mb": statistics.median(pss),
        "bytes": bytes1 - bytes0,
        "machine_busy_pct": 100 * (busy1 - busy0) / (total1 - total0),
    }


def phase_cloudrec(w: World, n: int, window_s: float) -> dict[str, Any]:
    started = [w.jo.start(ROOM, f"u{i}") for i in range(n)]
    ids = [rid for _, rid in started]
    try:
        w.wait_tasks(ids, {"recording"}, RECORDING_TIMEOUT_S)
        pids = [w.worker_pid(rid) for rid in ids]
        time.sleep(WARMUP_S)
        result = measure(pids, [w.spool / rid for rid in ids], window_s, n)
    finally:
        for resid, rid in started:
            w.jo.stop(resid, ROOM, rid)
    w.wait_tasks(ids, {"completed"}, 300)
    files = [f for rid in ids for f in w.task(rid)["files"]]
    # The bench's bucket does not resolve: files end recorded or in the backup store.
    if len(files) != n or any(f["status"] not in ("recorded", "backed_up") for f in files):
        raise RuntimeError(f"unexpected files: {[(f['name'], f['status']) for f in files]}")
    return result


def phase_ffmpeg(w: World, n: int, window_s: float) -> dict[str, Any]:
    out = w.work / f"baseline-{n}"
    out.mkdir()
    paths = [out / f"s{i}.mp4" for i in range(n)]
    procs = [baseline(w.play_url(i), paths[i]) for i in range(n)]
    try:
        deadline = time.monotonic() + RECORDING_TIMEOUT_S
        while not all(p.exists() and p.stat().st_size > 0 for p in paths):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("a baseline ffmpeg did not start writing")
            time.sleep(0.2)
        time.sleep(WARMUP_S)
        return measure([p.pid for p in procs], paths, window_s, n)
    finally:
        end(procs)
        for p in paths:
            p.unlink(missing_ok=True)


def has_keyframe(path: Path) -> bool:
    """Whether ``path`` (an MP4 being written) holds a video keyframe that decodes."""
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return False
            v = c.streams.video[0]
            for packet in c.demux(v):
                if packet.size and packet.is_keyframe:
                    frames = list(packet.decode()) + list(v.codec_context.decode(None))
                    return any(f.key_frame for f in frames)
    except (av.FFmpegError, OSError, ValueError):
        return False
    return False


def wait_keyframe(directory: Path, t0: float) -> tuple[float, float]:
    """Seconds from ``t0`` until an MP4 file exists in ``directory``, and until it holds a
    decodable keyframe."""
    deadline = t0 + LATENCY_TIMEOUT_S
    created: float | None = None
    while time.monotonic() < deadline:
        for f in directory.rglob("*.mp4") if directory.is_dir() else []:
            created = created if created is not None else time.monotonic() - t0
            if has_keyframe(f):
                return created, time.monotonic() - t0
        time.sleep(POLL_S)
    raise RuntimeError(f"no decodable keyframe in {directory} within {LATENCY_TIMEOUT_S} s")


def latency(w: World, runs: int) -> dict[str, list[float]]:
    w.ensure_publishers(1)
    out: dict[str, list[float]] = {"cloudrec": [], "ffmpeg": []}
    created: dict[str, list[float]] = {"cloudrec": [], "ffmpeg": []}
    for n in range(runs):
        resid = w.jo.apply()
        answer = w.jo.call("POST", "startrecord", w.jo.start_body(resid, ROOM, "u0"))
        t0 = time.monotonic()
        rid = answer["recordid"]
        try:
            c, k = wait_keyframe(w.spool / rid, t0)
            created["cloudrec"].append(c)
            out["cloudrec"].append(k)
        finally:
            w.jo.stop(resid, ROOM, rid)
        w.wait_tasks([rid], {"completed"}, 60)
        w.worker_pid(rid)

        d = w.work / f"latency-{n}"
        d.mkdir()
        t0 = time.monotonic()
        proc = baseline(w.play_url(0), d / "out.mp4")
        try:
            c, k = wait_keyframe(d, t0)
            created["ffmpeg"].append(c)
            out["ffmpeg"].append(k)
        finally:
            end([proc])
        print(
            f"latency run {n + 1}: cloudrec {out['cloudrec'][-1]:.2f} s "
            f"(file at {created['cloudrec'][-1]:.2f} s), ffmpeg {out['ffmpeg'][-1]:.2f} s "
            f"(file at {created['ffmpeg'][-1]:.2f} s)",
            file=sys.stderr,
            flush=True,
        )
    return {**out, **{f"{name}_created": xs for name, xs in created.items()}}


# -- report ----------------------------------------------------------------------------------


def pct(r: dict[str, Any]) -> float:
    return 100 * r["cpu_s"] / (r["streams"] * r["window_s"])


def written(r: dict[str, Any], rate: float) -> float:
    return r["bytes"] / (r["streams"] * r["window_s"] * rate)


def report(
    results: dict[tuple[str, int], dict[str, dict[str, Any]]],
    lats: dict[str, dict[str, list[float]]],
    window_s: float,
    rate: float,
) -> str:
    header = (
        "| executor | streams | cloudrec CPU %/stream | ffmpeg CPU %/stream "
        "| ratio cloudrec/ffmpeg | processes | PSS MB per recording: cloudrec / ffmpeg "
        "| RSS MB per recording: cloudrec / ffmpeg | written vs source (cloudrec / ffmpeg) "
        "| machine busy % (cloudrec / ffmpeg) |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for (executor, n), pair in sorted(results.items()):
        c, f = pair["cloudrec"], pair["ffmpeg"]
        ratio = f"{pct(c) / pct(f):.2f}x" if f["cpu_s"] > 0 else "n/a"
        lines.append(
            f"| {executor} | {n} | {pct(c):.2f} | {pct(f):.2f} | {ratio} | {c['processes']} "
            f"| {c['pss_per_recording_mb']:.1f} / {f['pss_per_recording_mb']:.1f} "
            f"| {c['rss_per_recording_mb']:.1f} / {f['rss_per_recording_mb']:.1f} "
            f"| {100 * written(c, rate):.0f}% / {100 * written(f, rate):.0f}% "
            f"| {c['machine_busy_pct']:.0f} / {f['machine_busy_pct']:.0f} |"
        )
    lines += [""]
    if any(lat["cloudrec"] for lat in lats.values()):
        lines += [
            "| start latency | keyframe on disk: median s | max s | MP4 file exists: median s "
            "| runs |",
            "|---|---|---|---|---|",
        ]
        for executor, lat in lats.items():
            for name, since in (("cloudrec", "startrecord reply"), ("ffmpeg", "spawn")):
                xs = lat[name]
                if not xs:
                    continue
                made = statistics.median(lat[f"{name}_created"])
                label = f"{name} {executor}" if name == "cloudrec" else f"ffmpeg ({executor} run)"
                lines.append(
                    f"| {label} (from {since}) | {statistics.median(xs):.2f} | {max(xs):.2f} "
                    f"| {made:.2f} | {len(xs)} |"
                )
        lines += [""]
    lines += [
        f"cloudrec: {_version()}; {os.cpu_count()} cores; ffmpeg {_ffmpeg_version()}.",
        f"Each stream: 640x360 {FPS} fps H.264 GOP {GOP_S} s + AAC, {8 * rate / 1000:.0f} kb/s "
        f"as published; window {window_s:.0f} s after a {WARMUP_S:.0f} s warm-up. CPU % is of "
        "one core (utime+stime of the recorder processes, each counted once, summed). "
        "executor process: one `run-task` process per recording; host: recorder hosts of "
        "`tasks_per_host` recordings each. PSS/RSS per recording: the recorder processes' "
        "sum at the end of the window over the recordings (PSS splits shared library pages "
        "between processes). Machine busy % is of all cores, everything included "
        "(publishers, ingest, recorders, other jobs).",
    ]
    return "\n".join(lines)


def _version() -> str:
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True
    )
    changes = "with uncommitted src changes" if dirty.stdout.strip() else "clean src"
    return f"commit {commit.stdout.strip() or '?'}, {changes}"


def _ffmpeg_version() -> str:
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
    words = out.split()
    return words[2] if len(words) > 2 else "?"


def _sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--counts", default="1,10,50", help="comma-separated recording counts")
    parser.add_argument("--seconds", type=float, default=15.0, help="measurement window")
    parser.add_argument("--latency-runs", type=int, default=5, help="start-latency samples")
    parser.add_argument(
        "--executors", default="process,host", help="comma-separated: process, host"
    )
    args = parser.parse_args(argv)
    counts = sorted({int(n) for n in args.counts.split(",")})
    signal.signal(signal.SIGTERM, _sigterm)
    flv = source_flv(Path(tempfile.gettempdir()) / "cloudrec-bench")
    rate = source_bytes_per_s(flv)
    results: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    lats: dict[str, dict[str, list[float]]] = {}
    for executor in args.executors.split(","):
        with (
            tempfile.TemporaryDirectory(prefix="cloudrec-bench-rec-") as tmp,
            world(Path(tmp), flv, max(counts), executor) as w,
        ):
            runs = args.latency_runs
            lats[executor] = latency(w, runs) if runs > 0 else {"cloudrec": [], "ffmpeg": []}
            for n in counts:
                w.ensure_publishers(n)
                for name, phase in (("cloudrec", phase_cloudrec), ("ffmpeg", phase_ffmpeg)):
                    r = phase(w, n, args.seconds)
                    results.setdefault((executor, n), {})[name] = r
                    print(
                        f"{executor:>7} {name:>8} x{n:<3}: {pct(r):6.2f} %CPU/stream, "
                        f"PSS {r['pss_per_recording_mb']:.1f} MB/recording, "
                        f"written {100 * written(r, rate):.0f}%, "
                        f"machine busy {r['machine_busy_pct']:.0f}%",
                        file=sys.stderr,
                        flush=True,
                    )
    print("\n" + report(results, lats, args.seconds, rate), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
