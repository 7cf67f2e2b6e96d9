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
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from record_single import end, publish, source_flv  # noqa: E402
from tests.service import Service, descendants  # noqa: E402

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


class Connections:
    """Keep-alive HTTP/1.1 connections on plain asyncio streams: a generator some ten times
    cheaper per request than httpx, so that the machine's cores go to the service (the
    httpx generator took 88 % of a core at 200 requests/s and was the bottleneck)."""

    def __init__(self, base: str, most: int) -> None:
        url = urlsplit(base)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(most)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        async with self.slots:
            conn = self.idle.pop() if self.idle else None
            if conn is None:
                conn = await asyncio.open_connection(self.host, self.port)
            reader, writer = conn
            try:
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                writer.close()
                raise
            self.idle.append(conn)
            return status, body

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


def raw_request(host: str, req: dict[str, Any]) -> bytes:
    """The bytes of one request as :func:`requests` describes it."""
    target = req["url"]
    if req.get("params"):
        target += "?" + urlencode(req["params"])
    headers = {"Host": host, **req.get("headers", {})}
    if req.get("auth"):
        user, password = req["auth"]
        headers["Authorization"] = (
            "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        )
    body = json.dumps(req["json"]).encode() if "json" in req else b""
    if body:
        headers["Content-Type"] = "application/json"
    headers["Content-Length"] = str(len(body))
    lines = [f"{req['method']} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def load(base: str, kinds: list[Any], rate: float, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = limited = 0
    pool = Connections(base, 64)
    host = urlsplit(base).netloc

    async def one(due: float, kind: Any) -> None:
        nonlocal errors, limited
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        try:
            status, body = await pool.request(raw_request(host, kind()))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            return
        latencies.append(time.monotonic() - due)
        if status >= 500:
            errors += 1
        elif status == 429 or _limited(body):
            limited += 1

    start = time.monotonic() + 0.5
    n = int(rate * seconds)
    await asyncio.gather(*(one(start + i / rate, kinds[i % len(kinds)]) for i in range(n)))
    pool.close()
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


def _limited(raw: bytes) -> bool:
    try:
        body = json.loads(raw)
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    return body.get("code") == jocloud_codes.TOO_FREQUENT or (
        body.get("Code") == zego_codes.TOO_MANY_REQUESTS
    )


def run(api_processes: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix=f"data-{api_processes}-", dir=work))
    env = {"CLOUDREC_API_PROCESSES": str(api_processes), "CLOUDREC_MAX_TASKS_PER_APP": "1000"}
    if args.database_url:
        env["CLOUDREC_DATABASE_URL"] = fresh_database(args.database_url, data.name)
    svc = Service(data, env=env).start()
    pubs: list[Any] = []
    tasks: list[str] = []
    app: dict[str, Any] = {}
    try:
        app = svc.create_app(APP)
        flv = source_flv(Path(tempfile.gettempdir()) / "cloudrec-bench")
        for i in range(args.streams):
            pubs.append(publish(flv, svc.publish_url(APP, ROOM, f"s{i}", "--uid", f"u{i}")))
        deadline = time.monotonic() + 60
        while len(svc.streams(app, ROOM)) < args.streams and time.monotonic() < deadline:
            time.sleep(0.5)
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
        spy = None
        if args.py_spy:  # where every process of the service is, halfway through the load
            spy = threading.Timer(
                args.seconds / 2, dump_stacks, (svc.proc.pid, work, api_processes)
            )
            spy.start()
        result = asyncio.run(load(svc.http, requests(svc, app, tasks), args.rate, args.seconds))
        if spy is not None:
            spy.join()
        wall = time.monotonic() - t0
        result["service_cpu_pct"] = 100 * (proc_tree_cpu_s(svc.proc.pid) - cpu0) / wall
        result["generator_cpu_pct"] = 100 * (time.process_time() - own0) / wall
        result["live"] = len(svc.streams(app, ROOM))
        return result
    finally:
        stop_row(svc, app, tasks)
        end(pubs)
        left = descendants(svc.proc.pid) if svc.proc is not None else []
        svc.stop(timeout_s=60)
        wait_gone(left, 60)


def stop_row(svc: Service, app: dict[str, Any], tasks: list[str]) -> None:
    """Stop the row's recordings and wait for them to end.  Recordings outlive their service
    (its recorder hosts go on with them until they end), so a row that left them running
    loaded the rows after it: with 10 of them left, every later row was seconds slow."""
    for task_id in tasks:
        httpx.post(
            f"{svc.http}/v1/apps/{APP}/tasks/{task_id}/stop",
            auth=(str(APP), app["server_secret"]),
            timeout=30,
        )
    for task_id in tasks:
        svc.wait_task(app, task_id, lambda t: t["state"] in ("completed", "failed"), 60)


def wait_gone(pids: list[int], timeout_s: float) -> None:
    """Wait for the service's former children (recorder hosts, API workers) to exit."""
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            try:
                if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                    break  # exited, not yet reaped by its new parent
            except OSError:
                break
            time.sleep(0.2)
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    if alive:
        print(f"warning: processes of the row still running: {alive}", flush=True)


def fresh_database(url: str, row: str) -> str:
    """A new empty PostgreSQL database beside ``url``'s, for one row of the bench."""
    from sqlalchemy import create_engine, text

    name = "cloudrec_api_load_" + "".join(c if c.isalnum() else "_" for c in row.lower())
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


def dump_stacks(pid: int, work: Path, n: int) -> None:
    """``py-spy dump`` of the service and each of its child processes, into the work dir."""
    pids = [pid, *descendants(pid)]
    out = work / f"stacks-{n}-{pid}.txt"
    with out.open("w") as f:
        for p in pids:
            f.write(f"=== pid {p}: {Path(f'/proc/{p}/cmdline').read_bytes()[:120]!r}\n")
            f.flush()
            subprocess.run(["py-spy", "dump", "--pid", str(p)], stdout=f, stderr=f, check=False)
    print(f"stacks: {out}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--recordings", type=int, default=50)
    p.add_argument("--rate", type=float, default=500)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--api-processes", default="0,1")
    p.add_argument(
        "--database-url",
        default="",
        help="a PostgreSQL URL: each row gets a new database beside it (default: SQLite)",
    )
    p.add_argument("--py-spy", action="store_true", help="dump every process's stacks halfway")
    p.add_argument("--keep", action="store_true", help="keep the work dir (stacks, logs)")
    args = p.parse_args(argv)
    counts = [int(x) for x in args.api_processes.split(",")]
    rows = []
    tmp = tempfile.mkdtemp(prefix="cloudrec-api-load-")
    try:
        for n in counts:
            r = run(n, args, Path(tmp))
            rows.append((n, r))
            print(f"api_processes={n}: {r}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
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
