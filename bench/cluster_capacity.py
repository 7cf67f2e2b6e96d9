"""Recordings spread over a cluster by capacity, and the admission answer once it is full
(issue 14; docs/cluster.md "Measured capacity").  Started with README's commands, as an
operator does: ``cloudrec worker --head``, two ``cloudrec worker --ray-address … --capacity N``
nodes with their own data directories, ``cloudrec serve --executor ray`` with a fragment
store, PostgreSQL, an S3 server on loopback and one ffmpeg publisher.

JoCloud starts of single-stream recordings (1 unit each, docs/cluster.md "Cost model") are sent
one after the other until the cluster's units are taken, then a few more: each of those must be
refused with 2105 and nothing stored.  The bench reports how the accepted ones spread over the
nodes, how long the starts took and how long until every one recorded, the machine's load and
memory, then stops them all and counts what was delivered.

    CLOUDREC_TEST_POSTGRES_URL=postgresql+psycopg://cloudrec:cloudrec@127.0.0.1:5432/cloudrec \\
        PYTHONPATH=src python bench/cluster_capacity.py [--capacity 60,40] [--extra 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text
from tests.conftest import POSTGRES_URL
from tests.e2e.test_cluster_commands import free_port, live_nodes, worker
from tests.e2e.test_ownership import APP, make_source, storage
from tests.jocloud import JoCloud
from tests.media import copy_publish as publish
from tests.s3server import FaultyS3
from tests.service import Service

ROOM = "bench-room"


def join(work: Path, address: str, name: str, capacity: int):  # type: ignore[no-untyped-def]
    proc = worker(
        work / f"{name}.log",
        *("--ray-address", address, "--capacity", str(capacity), "--name", name),
        *("--data-dir", str(work / name)),
    )
    deadline = time.monotonic() + 120
    while name not in live_nodes(address):
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit((work / f"{name}.log").read_text())
        time.sleep(0.5)
    return proc


def machine() -> tuple[float, float]:
    """(1-minute load average, GB of memory in use)."""
    lines = Path("/proc/meminfo").read_text().splitlines()
    meminfo = {line.split(":")[0]: int(line.split()[1]) for line in lines}
    used = (meminfo["MemTotal"] - meminfo["MemAvailable"]) / 2**20
    return os.getloadavg()[0], used


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--capacity", default="60,40", help="recording units of each node")
    ap.add_argument("--extra", type=int, default=5, help="starts sent once the units are taken")
    args = ap.parse_args()
    if not POSTGRES_URL:
        sys.exit("set CLOUDREC_TEST_POSTGRES_URL (scripts/start-postgres prints it)")
    capacities = [int(c) for c in args.capacity.split(",")]
    names = [f"node-{chr(ord('a') + i)}" for i in range(len(capacities))]
    work = Path(tempfile.mkdtemp(prefix="cloudrec-bench-capacity-"))
    db = f"cloudrec_bench_{os.getpid()}_{free_port()}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    url = f"{POSTGRES_URL.rsplit('/', 1)[0]}/{db}"
    os.environ["CLOUDREC_DATABASE_URL"] = url  # the ``cloudrec app`` commands read it too
    port = free_port()
    address = f"127.0.0.1:{port}"
    procs = [worker(work / "head.log", "--head", "--port", str(port), "--name", "head")]
    s3 = FaultyS3().start()
    for bucket in ("own", "frags"):
        s3.client().create_bucket(Bucket=bucket)
    svc = None
    pub = None
    try:
        deadline = time.monotonic() + 60
        while "head" not in live_nodes(address):
            if time.monotonic() > deadline:
                sys.exit((work / "head.log").read_text())
            time.sleep(0.5)
        for name, capacity in zip(names, capacities, strict=True):
            procs.append(join(work, address, name, capacity))
        (work / "data").mkdir()
        svc = Service(
            work / "data",
            env={
                "CLOUDREC_STORAGE_ENDPOINT_OVERRIDE": s3.url,
                "CLOUDREC_EXECUTOR": "ray",
                "CLOUDREC_RAY_ADDRESS": address,
                "CLOUDREC_FRAGMENT_STORE": f"{s3.url}/frags",
                "CLOUDREC_FRAGMENT_STORE_ACCESS_KEY": "operator",
                "CLOUDREC_FRAGMENT_STORE_SECRET_KEY": "operator-secret",
            },
        )
        app = svc.create_app(APP)
        svc.start()
        source = make_source(work / "cam.flv", seconds=900)
        pub = publish(source, svc.publish_url(APP, ROOM, "cam", "--uid", "alice"))
        assert len(svc.wait_streams(app, ROOM, 1)) == 1
        jo = JoCloud(svc.http, APP, app["server_secret"])
        load0, mem0 = machine()
        accepted: list[tuple[str, str]] = []
        refused: list[dict[str, object]] = []
        took: list[float] = []
        began = time.monotonic()
        while len(refused) < args.extra:
            t = time.monotonic()
            body = jo.start_body(jo.apply(), ROOM, "alice", storagecfg=storage())
            answer = jo.call("POST", "startrecord", body)
            took.append(time.monotonic() - t)
            if answer["code"] == 0:
                accepted.append((body["resid"], answer["recordid"]))
                continue
            refused.append({**answer, "after": len(accepted)})
        started_in = time.monotonic() - began
        deadline = time.monotonic() + 600
        where: Counter[str] = Counter()
        while True:
            tasks = [svc.task(app, record_id) for _, record_id in accepted]
            recording = [t for t in tasks if t["state"] == "recording" and t["files"]]
            if len(recording) == len(tasks) or time.monotonic() > deadline:
                where = Counter(str(t["node"]) for t in recording)
                break
            time.sleep(1)
        all_in = time.monotonic() - began
        time.sleep(10)
        load1, mem1 = machine()
        for resid, record_id in accepted:
            jo.stop(resid, ROOM, record_id)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            states = Counter(svc.task(app, r)["state"] for _, r in accepted)
            if set(states) <= {"completed", "failed"}:
                break
            time.sleep(2)
        listed = s3.client().list_objects_v2(Bucket="own").get("Contents", [])
        codes = Counter(a["code"] for a in refused)
        print(f"nodes: {dict(zip(names, capacities, strict=True))} units; head records nothing")
        print(
            f"accepted {len(accepted)} of {len(accepted) + len(refused)} starts; "
            f"refused {len(refused)}: codes {dict(codes)}"
        )
        print(f"  first refusal: {refused[0]}")
        print(f"  recording per node: {dict(where)} ({sum(where.values())} recording)")
        print(
            f"  start answer median {statistics.median(took) * 1000:.0f} ms, "
            f"max {max(took) * 1000:.0f} ms; all starts in {started_in:.1f} s; "
            + (
                f"every accepted one recording {all_in:.1f} s after the first start"
                if sum(where.values()) == len(accepted)
                else f"only {sum(where.values())} of {len(accepted)} recording when the wait "
                f"ended, {all_in:.1f} s after the first start"
            )
        )
        print(
            f"  machine: load {load0:.1f} -> {load1:.1f}, memory in use {mem0:.1f} -> "
            f"{mem1:.1f} GB ({os.cpu_count()} cores)"
        )
        print(f"  after stop: states {dict(states)}, {len(listed)} files in the bucket")
    finally:
        if pub is not None:
            pub.kill()
            pub.wait()
        if svc is not None:
            with contextlib.suppress(Exception):
                svc.stop(60)
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(60)
            except Exception:
                proc.kill()
        s3.stop()
        with contextlib.suppress(Exception), admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
