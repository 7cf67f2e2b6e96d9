"""API latency under load while streams are live and recordings run (issue 13).

    python bench/api_load.py [--streams 100] [--recordings 50] [--rate 500] [--seconds 20]
                             [--api-processes 0,1]

For each ``api_processes`` value (0: the API on the ingest's event loop, as before; 1 or more:
the API in processes of its own) one ``cloudrec serve`` runs with ``--streams`` ffmpeg
publishers copying a 640x360 ~1 Mb/s FLV in real time and ``--recordings`` of them recorded
(cloudrec's own API, no bucket).  Then an open-loop generator sends ``--rate`` requests per
second for ``--seconds``: each request is due at its own time whether the earlier ones have
been answered or not, and its latency counts from that due time (no coordinated omission).
The mix, in turn: the rooms list, a room's streams, a task, JoCloud ``queryrecord`` and ZEGO
``DescribeRecordStatus`` (signed).  JoCloud and ZEGO limit each AppID to 10 requests/s: their
answers past it are the dialects' rate-limit codes, counted apart ("limited"), still answers.

Reported per run: answered, errors (no answer or HTTP 5xx), limited, p50/p90/p99/max in ms,
and the ratio of p99 against the first run.  The generator runs on the same machine: its own
CPU is printed beside the service's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from record_single import end, publish, source_flv  # noqa: E402
from tests.service import Service  # noqa: E402

from cloudrec.api.jocloud import codes as jocloud_codes  # noqa: E402
from cloudrec.api.zego import codes as zego_codes  # noqa: E402
from cloudrec.api.zego.auth import signature  # noqa: E402

APP = 4545
ROOM = "load"


def proc_tree_cpu_s(pid: int) -> float:
    """utime+stime of ``pid`` and its children that are alive (the API processes)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            cmd = (stat.parent / "cmdline").read_bytes()
            if int(stat.parent.name) == pid or b"api-worker" in cmd:
                total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def requests(svc: Service, app: dict[str, Any], task_ids: list[str]) -> list[Any]:
    basic = (str(APP), app["server_secret"])
    token = "Basic " + base64.b64encode(f"{APP}:{app['server_secret']}".encode()).decode()
    jo = {"AppID": str(APP), "Token": token}

    def zego() -> dict[str, Any]:
        ts, nonce = int(time.time()), secrets.token_hex(8)
        return {
            "method": "POST",
            "url": "/",
            "params": {
                "Action": "DescribeRecordStatus",
                "AppId": str(APP),
                "SignatureNonce": nonce,
                "Timestamp": str(ts),
                "SignatureVersion": "2.0",
                "Signature": signature(APP, nonce, app["server_secret"], ts),
            },
            "json": {"TaskId": "nope"},
        }

    t = task_ids[0] if task_ids else "none"
    return [
        lambda: {"method": "GET", "url": f"/v1/apps/{APP}/rooms", "auth": basic},
        lambda: {"method": "GET", "url": f"/v1/apps/{APP}/rooms/{ROOM}/streams", "auth": basic},
        lambda: {"method": "GET", "url": f"/v1/apps/{APP}/tasks/{t}", "auth": basic},
        lambda: {
            "method": "GET",
            "url": f"/app/{APP}/v1/recordoss/queryrecord/{ROOM}/{t}?traceId=b",
            "headers": jo,
        },
        zego,
    ]


async def load(base: str, kinds: list[Any], rate: float, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = limited = 0
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:

        async def one(due: float, req: dict[str, Any]) -> None:
            nonlocal errors, limited
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            try:
                r = await client.request(**req)
            except httpx.HTTPError:
                errors += 1
                return
            latencies.append(time.monotonic() - due)
            if r.status_code >= 500:
                errors += 1
            elif r.status_code == 429 or _limited(r):
                limited += 1

        start = time.monotonic() + 0.5
        n = int(rate * seconds)
        await asyncio.gather(*(one(start + i / rate, kinds[i % len(kinds)]()) for i in range(n)))
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    q = statistics.quantiles(ms, n=100) if len(ms) >= 2 else [0.0] * 99
    return {
        "sent": n,
        "answered": len(ms),
        "errors": errors,
        "limited": limited,
        "p50": q[49],
        "p90": q[89],
        "p99": q[98],
        "max": ms[-1] if ms else 0.0,
    }


def _limited(r: httpx.Response) -> bool:
    try:
        body = r.json()
    except ValueError:
        return False
    return body.get("code") == jocloud_codes.TOO_FREQUENT or (
        body.get("Code") == zego_codes.TOO_MANY_REQUESTS
    )


def run(api_processes: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    data = work / f"data-{api_processes}"
    data.mkdir(parents=True)
    env = {"CLOUDREC_API_PROCESSES": str(api_processes), "CLOUDREC_MAX_TASKS_PER_APP": "1000"}
    svc = Service(data, env=env).start()
    pubs: list[Any] = []
    try:
        app = svc.create_app(APP)
        flv = source_flv(Path(tempfile.gettempdir()) / "cloudrec-bench")
        for i in range(args.streams):
            pubs.append(publish(flv, svc.publish_url(APP, ROOM, f"s{i}", "--uid", f"u{i}")))
        deadline = time.monotonic() + 60
        while len(svc.streams(app, ROOM)) < args.streams and time.monotonic() < deadline:
            time.sleep(0.5)
        tasks = []
        for i in range(args.recordings):
            r = httpx.post(
                f"{svc.http}/v1/apps/{APP}/tasks",
                json={"room_id": ROOM, "users": [f"u{i}"]},
                auth=(str(APP), app["server_secret"]),
                timeout=30,
            )
            r.raise_for_status()
            tasks.append(r.json()["task_id"])
        time.sleep(args.warmup)
        assert svc.proc is not None
        cpu0, t0 = proc_tree_cpu_s(svc.proc.pid), time.monotonic()
        own0 = time.process_time()
        result = asyncio.run(load(svc.http, requests(svc, app, tasks), args.rate, args.seconds))
        wall = time.monotonic() - t0
        result["service_cpu_pct"] = 100 * (proc_tree_cpu_s(svc.proc.pid) - cpu0) / wall
        result["generator_cpu_pct"] = 100 * (time.process_time() - own0) / wall
        result["live"] = len(svc.streams(app, ROOM))
        return result
    finally:
        end(pubs)
        svc.stop(timeout_s=60)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--recordings", type=int, default=50)
    p.add_argument("--rate", type=float, default=500)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--api-processes", default="0,1")
    args = p.parse_args(argv)
    counts = [int(x) for x in args.api_processes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="cloudrec-api-load-") as tmp:
        for n in counts:
            r = run(n, args, Path(tmp))
            rows.append((n, r))
            print(f"api_processes={n}: {r}", flush=True)
    base = rows[0][1]["p99"] or 1.0
    print(
        f"\n{args.streams} streams live, {args.recordings} recordings, "
        f"{args.rate:g} requests/s for {args.seconds:g} s, {os.cpu_count()} cores"
    )
    print(
        "| api_processes | answered/sent | errors | limited | p50 ms | p90 ms | p99 ms | max ms "
        "| p99 vs first | service CPU % | generator CPU % |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n, r in rows:
        print(
            f"| {n} | {r['answered']}/{r['sent']} | {r['errors']} | {r['limited']} "
            f"| {r['p50']:.1f} | {r['p90']:.1f} | {r['p99']:.1f} | {r['max']:.0f} "
            f"| {r['p99'] / base:.2f}x | {r['service_cpu_pct']:.0f} "
            f"| {r['generator_cpu_pct']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
