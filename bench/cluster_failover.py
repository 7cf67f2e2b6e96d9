"""Failover time of a recording on a Ray cluster (docs/cluster.md): a local cluster (a head that
records nothing, two worker nodes, the health checks of docs/cluster.md), PostgreSQL, an S3
server and ``cloudrec serve --executor ray`` on loopback; one publisher.  Each trial starts a
recording, lets it run 3 s, then kills (SIGKILL of the recording's process and the node's
Ray processes) or freezes (SIGSTOP of all of them) the node holding it, and measures the time
until the next attempt records on another node (its lease renewed and its file open); then
stops the recording and replaces the node.

    CLOUDREC_TEST_POSTGRES_URL=postgresql+psycopg://cloudrec:cloudrec@127.0.0.1:5432/cloudrec \\
        PYTHONPATH=src python bench/cluster_failover.py [--trials 10] [--faults kill,freeze]

Prints each trial and, per fault, the median and the maximum.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray
from ray.cluster_utils import Cluster
from sqlalchemy import create_engine, text
from tests.conftest import POSTGRES_URL, free_port
from tests.e2e.test_cluster import (
    APP,
    HEALTH,
    NODES,
    ROOM,
    _node_pids,
    _signal_all,
    node_of,
    owner,
    recording_on,
    start_recording,
)
from tests.e2e.test_ownership import make_source, task_of, wait
from tests.media import copy_publish as publish
from tests.s3server import FaultyS3
from tests.service import Service

from cloudrec.cluster.executor import NAMESPACE, RESOURCE


def trial(svc: Service, cluster: Cluster, fault: str) -> float:
    jo, resid, record_id = start_recording(svc)
    first = recording_on(svc, record_id, 1, timeout_s=30)
    time.sleep(3)
    victim = node_of(cluster, first["node_id"])
    pids = _node_pids(victim, [first["pid"]])
    _signal_all(pids, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
    lost = time.monotonic()
    if fault == "kill":
        cluster.remove_node(victim, allow_graceful=False)  # reaps the raylet
    attempt = 2
    while True:
        try:
            recording_on(svc, record_id, attempt, timeout_s=lost + 60 - time.monotonic())
            break
        except AssertionError:
            _, current, _ = owner(svc, record_id)
            if current <= attempt:
                raise
            attempt = current
    moved = time.monotonic() - lost
    if fault == "freeze":
        _signal_all(pids, signal.SIGCONT)
        cluster.remove_node(victim, allow_graceful=False)
    assert jo.stop(resid, ROOM, record_id)["code"] == 0
    wait(svc, record_id, lambda t: t["state"] in ("completed", "failed"), timeout_s=90)
    state = task_of(svc, record_id)["state"]
    print(f"{fault}: attempt {attempt} recording on another node after {moved:.1f} s ({state})")
    while len(cluster.worker_nodes) < NODES:
        cluster.add_node(num_cpus=1, resources={RESOURCE: 4})
    cluster.wait_for_nodes()
    return moved


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--faults", default="kill,freeze")
    args = ap.parse_args()
    if not POSTGRES_URL:
        sys.exit("set CLOUDREC_TEST_POSTGRES_URL (scripts/start-postgres prints it)")
    work = Path(tempfile.mkdtemp(prefix="cloudrec-bench-cluster-"))
    name = f"cloudrec_bench_{os.getpid()}_{free_port()}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"
    os.environ["CLOUDREC_DATABASE_URL"] = url  # the ``cloudrec app`` commands read it too
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "_system_config": HEALTH},
    )
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
    s3 = FaultyS3().start()
    s3.client().create_bucket(Bucket="own")
    data = work / "data"
    data.mkdir()
    svc = Service(
        data,
        env={
            "CLOUDREC_STORAGE_ENDPOINT_OVERRIDE": s3.url,
            "CLOUDREC_EXECUTOR": "ray",
            "CLOUDREC_RAY_ADDRESS": cluster.address,
        },
    )
    svc.app = svc.create_app(APP)  # type: ignore[attr-defined]
    svc.s3 = s3  # type: ignore[attr-defined]
    svc.database_url = url  # type: ignore[attr-defined]
    faults = args.faults.split(",")
    source = make_source(work / "cam.flv", seconds=60 * args.trials * len(faults) + 60)
    pub = None
    results: dict[str, list[float]] = {f: [] for f in faults}
    try:
        while len(cluster.worker_nodes) < NODES:
            cluster.add_node(num_cpus=1, resources={RESOURCE: 4})
        cluster.wait_for_nodes()
        svc.start()
        pub = publish(source, svc.publish_url(APP, ROOM, "cam", "--uid", "alice"))
        for _ in range(args.trials):
            for fault in faults:
                results[fault].append(trial(svc, cluster, fault))
    finally:
        if pub is not None:
            pub.kill()
            pub.wait()
        with contextlib.suppress(Exception):
            svc.stop(30)
        s3.stop()
        ray.shutdown()
        cluster.shutdown()
        with contextlib.suppress(Exception), admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    for fault, times in results.items():
        if times:
            print(
                f"{fault}: {len(times)} trials, median {statistics.median(times):.1f} s, "
                f"max {max(times):.1f} s"
            )


if __name__ == "__main__":
    main()
