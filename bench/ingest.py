"""CPU cost per published 2 Mbps stream: cloudrec's embedded ingest against nginx-rtmp.

    python bench/ingest.py [--streams 1,10,50,100] [--seconds 15] [--warmup 3]

For each stream count N, and for each server in turn (``cloudrec serve`` and nginx with
libnginx-mod-rtmp, ``master_process off``, both started once for the whole run), a separate
load generator process (``bench/rtmp_load.py``) publishes N copies of a generated ~2 Mbps
H.264/AAC FLV in real time and plays each one back once.  Over the measurement window it
reads the server process's CPU time; the cost is CPU seconds per stream-second, printed as %
of one core per stream, with the ratio cloudrec / nginx, the share of the published media
that players received in the window ("delivered"), and the generator's pacing lag.

Everything is loopback; servers, data dir and generator are cleaned up on exit and on Ctrl-C.
The FLV is cached in ``$TMPDIR/cloudrec-bench``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from flvfile import sample_flv  # noqa: E402
from rtmp_load import proc_cpu_s  # noqa: E402
from tests.nginx import Nginx, nginx_available  # noqa: E402
from tests.service import Service  # noqa: E402

from cloudrec.core.tokens import make_publish_token  # noqa: E402

APP_ID = 4242
ROOM = "bench"
DELIVERED_OK = 0.99
GENERATOR = Path(__file__).resolve().parent / "rtmp_load.py"
GENERATOR_SLACK_S = 90.0
SETTLE_S = 1.5
IDLE_S = 5.0
MIN_RATIO_CPU_S = 0.1
"""Below this much server CPU time (10 clock ticks) a ratio is mostly rounding."""


@dataclass(frozen=True)
class Target:
    """A server under test: its name, pid, log file, and the publish and play URL of
    stream ``i``."""

    name: str
    pid: int
    log: Path
    publish: list[str]
    play: list[str]

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def cloudrec_target(service: Service, max_streams: int) -> Target:
    """Publish URLs minted as a user would: the first by ``cloudrec app publish-url``, the
    rest with the same expiry by the documented token rule (one CLI run per stream costs
    ~1 s of CPU each), checked against the first."""
    creds = service.create_app(APP_ID)
    first = service.publish_url(APP_ID, ROOM, "s0")
    token = parse_qs(urlsplit(first).query)["token"][0]
    expires = int(token.split(".", 1)[0])
    secret = creds["publish_secret"]
    if make_publish_token(secret, APP_ID, ROOM, "s0", expires) != token:
        raise RuntimeError("the documented token rule disagrees with `cloudrec app publish-url`")
    base = f"rtmp://127.0.0.1:{service.rtmp_port}/{APP_ID}/{ROOM}"
    publish = [first] + [
        f"{base}/s{i}?token={make_publish_token(secret, APP_ID, ROOM, f's{i}', expires)}"
        for i in range(1, max_streams)
    ]
    play = [f"{base}/s{i}" for i in range(max_streams)]  # players from loopback need no token
    assert service.proc is not None
    assert service.log_path is not None
    return Target("cloudrec", service.proc.pid, service.log_path, publish, play)


def nginx_target(nginx: Nginx, max_streams: int) -> Target:
    urls = [f"{nginx.url('live')}/s{i}" for i in range(max_streams)]
    assert nginx.proc is not None
    return Target("nginx", nginx.proc.pid, nginx.workdir / "error.log", urls, urls)


def run_generator(
    target: Target, streams: int, flv: Path, warmup_s: float, window_s: float
) -> dict[str, Any]:
    job = {
        "flv": str(flv),
        "server_pid": target.pid,
        "warmup_s": warmup_s,
        "window_s": window_s,
        "publish": target.publish[:streams],
        "play": target.play[:streams],
    }
    proc = subprocess.Popen(
        [sys.executable, str(GENERATOR)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(
            json.dumps(job), timeout=warmup_s + window_s + GENERATOR_SLACK_S
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(
            f"load generator failed on {target.name} x{streams}:\n{err[-4000:]}\n"
            f"{target.name}'s log ends with:\n{target.log_tail()}"
        )
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def cpu_pct_per_stream(r: dict[str, Any]) -> float:
    return 100 * r["server_cpu_s"] / (r["streams"] * r["window_s"])


def delivered(r: dict[str, Any]) -> float:
    return r["delivered_bytes"] / r["published_bytes"] if r["published_bytes"] else 0.0


def other_load_pct(r: dict[str, Any]) -> float:
    """CPU % (of one core) the machine spent on neither the server nor the generator."""
    mine = 100 * (r["server_cpu_s"] + r["generator_cpu_s"]) / r["window_s"]
    return max(0.0, r["machine_busy_pct"] - mine)


def idle_cpu_pct(pid: int, seconds: float = IDLE_S) -> float:
    """The server's CPU % (of one core) with no client connected."""
    before = proc_cpu_s(pid)
    time.sleep(seconds)
    return 100 * (proc_cpu_s(pid) - before) / seconds


def report(
    results: dict[int, dict[str, dict[str, Any]]], idle: dict[str, float], window_s: float
) -> str:
    header = (
        "| streams | cloudrec CPU %/stream | nginx CPU %/stream | ratio cloudrec/nginx "
        "| cloudrec CPU % total | nginx CPU % total | cloudrec delivered | nginx delivered "
        "| generator lag p99 ms (cloudrec / nginx) | generator CPU % | other load CPU % |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for n, pair in sorted(results.items()):
        c, g = pair["cloudrec"], pair["nginx"]
        cc, gg = cpu_pct_per_stream(c), cpu_pct_per_stream(g)
        ratio = f"{cc / gg:.1f}x" if g["server_cpu_s"] >= MIN_RATIO_CPU_S else "n/a"
        lines.append(
            f"| {n} | {cc:.2f} | {gg:.2f} | {ratio} "
            f"| {100 * c['server_cpu_s'] / c['window_s']:.0f} "
            f"| {100 * g['server_cpu_s'] / g['window_s']:.0f} "
            f"| {100 * delivered(c):.1f}% (min {100 * c['delivered_min_stream']:.0f}%) "
            f"| {100 * delivered(g):.1f}% (min {100 * g['delivered_min_stream']:.0f}%) "
            f"| {c['lag_p99_ms']:.0f} / {g['lag_p99_ms']:.0f} "
            f"| {100 * c['generator_cpu_s'] / c['window_s']:.0f} / "
            f"{100 * g['generator_cpu_s'] / g['window_s']:.0f} "
            f"| {other_load_pct(c):.0f} / {other_load_pct(g):.0f} |"
        )
    kbps = next(iter(next(iter(results.values())).values()))["stream_kbps"]
    held = {
        name: max(
            (n for n, pair in results.items() if delivered(pair[name]) >= DELIVERED_OK),
            default=0,
        )
        for name in ("cloudrec", "nginx")
    }
    lines += [
        "",
        f"cloudrec: {_version()}.",
        f"Each stream: {kbps:.0f} kb/s of media published once and played once; "
        f"window {window_s:.0f} s. CPU % is of one core (utime+stime of the server process).",
        f"Idle, no client connected: cloudrec {idle['cloudrec']:.1f}% of a core, "
        f"nginx {idle['nginx']:.1f}%. Generator CPU, lag and other load: cloudrec run / nginx run.",
        f"cloudrec holds {held['cloudrec']} streams in real time (>= {DELIVERED_OK:.0%} "
        f"delivered) on this {_cores()}-core machine; nginx-rtmp holds {held['nginx']} "
        f"(of the counts tried).",
    ]
    return "\n".join(lines)


def _version() -> str:
    """The commit measured, and whether the ingest had uncommitted changes."""
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "src/cloudrec/media/ingest"],
        capture_output=True,
        text=True,
    )
    changes = "with uncommitted ingest changes" if dirty.stdout.strip() else "clean ingest"
    return f"commit {commit.stdout.strip() or '?'}, {changes}"


def _cores() -> int:
    return os.cpu_count() or 0


@contextlib.contextmanager
def servers(workdir: Path) -> Iterator[tuple[Service, Nginx]]:
    """``cloudrec serve`` on a fresh data dir and nginx-rtmp; both stopped on the way out."""
    data_dir = workdir / "cloudrec-data"
    data_dir.mkdir()
    service = Service(data_dir)
    nginx = Nginx(workdir / "nginx")
    try:
        try:
            service.start()
        except TimeoutError:
            log = service.log_path.read_text()[-3000:] if service.log_path else ""
            raise RuntimeError(f"cloudrec serve did not start; its log ends with:\n{log}") from None
        nginx.start()
        yield service, nginx
    finally:
        nginx.stop()
        if service.proc is not None:
            try:
                service.stop()
            except subprocess.TimeoutExpired:
                service.proc.kill()
                service.proc.wait()


def _sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--streams", default="1,10,50,100", help="comma-separated counts")
    parser.add_argument("--seconds", type=float, default=15.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up before the window")
    args = parser.parse_args(argv)
    counts = sorted({int(n) for n in args.streams.split(",")})
    if not nginx_available():
        parser.error("nginx with libnginx-mod-rtmp is not installed")
    signal.signal(signal.SIGTERM, _sigterm)
    flv = sample_flv(Path(tempfile.gettempdir()) / "cloudrec-bench")
    results: dict[int, dict[str, dict[str, Any]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="cloudrec-bench-") as tmp,
        servers(Path(tmp)) as (service, nginx),
    ):
        targets = [cloudrec_target(service, max(counts)), nginx_target(nginx, max(counts))]
        time.sleep(SETTLE_S)
        idle = {t.name: idle_cpu_pct(t.pid) for t in targets}
        for n in counts:
            for target in targets:
                time.sleep(SETTLE_S)
                r = run_generator(target, n, flv, args.warmup, args.seconds)
                results.setdefault(n, {})[target.name] = r
                print(
                    f"{target.name:>8} x{n:<3}: {cpu_pct_per_stream(r):6.2f} %CPU/stream, "
                    f"delivered {100 * delivered(r):5.1f}%, lag p99 {r['lag_p99_ms']:.0f} ms, "
                    f"generator {100 * r['generator_cpu_s'] / r['window_s']:.0f}% CPU, "
                    f"lost connections {r['lost_connections']}, "
                    f"publisher backlog {r['publisher_backlog_bytes']} B",
                    file=sys.stderr,
                    flush=True,
                )
    print("\n" + report(results, idle, args.seconds), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
