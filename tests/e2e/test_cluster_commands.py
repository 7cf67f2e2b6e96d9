"""A recording cluster started by hand from README's "Cluster" commands, as a newcomer would
(issue 14): ``cloudrec worker --head``, two ``cloudrec worker --ray-address … --name …
--data-dir …`` nodes with their own data directories, ``cloudrec serve --executor ray``, real
PostgreSQL, a real S3 server, ffmpeg publishing.  The task says which node records it
(``node``, ``attempt`` in ``GET /v1/apps/{appid}/tasks/{id}``), its files spool in that
node's data directory, and SIGTERM to that node's ``cloudrec worker`` drains it: the recording
goes on on the other node (a ``failover`` event from node to node), the drained node stops,
and both parts are delivered, holding the published packets."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import POSTGRES_URL
from tests.e2e.test_ownership import APP, storage, wait
from tests.jocloud import JoCloud
from tests.media import copy_publish as publish
from tests.s3server import FaultyS3
from tests.service import Service

pytest.importorskip("ray", reason="ray is not installed (pip install '.[cluster]')")

from tests.e2e.test_cluster import ROOM, stop_and_check_parts
from tests.e2e.test_ownership import make_source
from tests.media import packet_hashes

pytestmark = [
    pytest.mark.slow,
    pytest.mark.cluster,
    pytest.mark.skipif(
        not POSTGRES_URL, reason="a cluster shares PostgreSQL: set CLOUDREC_TEST_POSTGRES_URL"
    ),
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

NODES = ("node-a", "node-b")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_source(tmp_path_factory.mktemp("src") / "cam.flv", seconds=120)


@pytest.fixture(scope="module")
def source_hashes(source) -> dict[str, list[str]]:
    return {kind: packet_hashes(source, kind) for kind in ("video", "audio")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker(log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``cloudrec worker ARGS`` as a user types it (its output in ``log``)."""
    cmd = [sys.executable, "-m", "cloudrec.cli", "worker", "--node-ip-address", "127.0.0.1"]
    return subprocess.Popen([*cmd, *args], stdout=log.open("wb"), stderr=subprocess.STDOUT)


def live_nodes(address: str) -> dict[str, dict[str, float]]:
    """The cluster's live nodes by their ``cloudrec-node`` label: their total resources."""
    from ray._raylet import GcsClient

    gcs = GcsClient(address=address)
    names = {
        node_id.binary(): info.labels.get("cloudrec-node", "")
        for node_id, info in gcs.get_all_node_info().items()
        if info.state == 0
    }
    usage = gcs.get_all_resource_usage().resource_usage_data.batch
    return {names[u.node_id]: dict(u.resources_total) for u in usage if u.node_id in names}


def join(tmp_path: Path, address: str, name: str, log: str) -> subprocess.Popen[bytes]:
    """``cloudrec worker --ray-address`` for node ``name`` (4 units, its own data directory),
    once it has joined the cluster."""
    proc = worker(
        tmp_path / log,
        *("--ray-address", address, "--capacity", "4", "--name", name),
        *("--data-dir", str(tmp_path / name)),
    )
    deadline = time.monotonic() + 90
    while name not in live_nodes(address):
        assert proc.poll() is None, (tmp_path / log).read_text()
        assert time.monotonic() < deadline, live_nodes(address)
        time.sleep(0.5)
    return proc


def kill_node(proc: subprocess.Popen[bytes], name: str) -> None:
    """The machine is lost: SIGKILL of its ``cloudrec worker`` and of every process of the
    node (Ray's and its recordings', all started with the node's ``CLOUDREC_NODE_NAME``)."""
    proc.kill()
    proc.wait()
    mark = f"CLOUDREC_NODE_NAME={name}".encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark in environ.read_bytes().split(b"\0"):
                os.kill(int(environ.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


@pytest.fixture
def nodes(tmp_path):
    port = free_port()
    address = f"127.0.0.1:{port}"
    procs: dict[str, subprocess.Popen[bytes]] = {}
    procs["head"] = worker(tmp_path / "head.log", "--head", "--port", str(port), "--name", "head")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert procs["head"].poll() is None, (tmp_path / "head.log").read_text()
                assert time.monotonic() < deadline, "the head did not come up"
                time.sleep(0.5)
        for name in NODES:  # one after the other, as on a loaded machine Ray's start is slow
            procs[name] = join(tmp_path, address, name, f"{name}.log")
        yield address, procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def svc(tmp_path, nodes, database_url, monkeypatch):
    address, _ = nodes
    s3 = FaultyS3().start()
    s3.client().create_bucket(Bucket="own")
    s3.client().create_bucket(Bucket="frags")
    monkeypatch.setenv("CLOUDREC_DATABASE_URL", database_url)
    data = tmp_path / "service"
    data.mkdir()
    service = Service(
        data,
        env={
            "CLOUDREC_STORAGE_ENDPOINT_OVERRIDE": s3.url,
            "CLOUDREC_EXECUTOR": "ray",
            "CLOUDREC_RAY_ADDRESS": address,
            # The nodes ship their open files here (docs/cluster.md, "Fragments").
            "CLOUDREC_FRAGMENT_STORE": f"{s3.url}/frags",
            "CLOUDREC_FRAGMENT_STORE_ACCESS_KEY": "operator",
            "CLOUDREC_FRAGMENT_STORE_SECRET_KEY": "operator-secret",
        },
    )
    service.app = service.create_app(APP)
    service.s3 = s3
    service.database_url = database_url
    service.start()
    try:
        yield service
    finally:
        assert service.stop(30) == 0
        s3.stop()


def test_the_cluster_commands_record_on_named_nodes_through_a_drain_and_a_lost_machine(
    tmp_path, nodes, svc, source, source_hashes
):
    address, procs = nodes
    totals = live_nodes(address)
    assert totals["head"].get("cloudrec_recording", 0) == 0  # the head records nothing
    assert all(totals[name]["cloudrec_recording"] == 4 for name in NODES)
    pub = publish(source, svc.publish_url(APP, ROOM, "cam", "--uid", "alice"))
    try:
        assert len(svc.wait_streams(svc.app, ROOM, 1)) == 1
        jo = JoCloud(svc.http, APP, svc.app["server_secret"])
        # A 1280x720 30 fps mix of one input costs 17 + 7 + 1 units (docs/cluster.md): more
        # than a node takes, so it is refused at once with JoCloud's overload answer.
        out = {"streamtype": 0, "videowidth": 1280, "videoheight": 720, "videofps": 30}
        out |= {"videobitrate": 1500, "videogop": 60}
        mix = {"templateid": 1, "output": out}
        body = jo.start_body(jo.apply(), ROOM, "alice", streamtype=1, mixconfig=mix)
        refused = jo.call("POST", "startrecord", body)
        assert refused["code"] == 2105, refused
        assert "needs 25 recording unit(s), the most free on one node is 4" in str(refused)
        resid, record_id = jo.start(ROOM, "alice", storagecfg=storage())
        started = time.monotonic()
        task = wait(svc, record_id, lambda t: t["state"] == "recording" and t["files"], 60)
        first = task["node"]
        assert first in NODES and task["attempt"] == 1, task
        # Its file spools in that node's own data directory.
        paths = [str(f) for f in (tmp_path / first / "spool").rglob("*") if f.is_file()]
        assert any(record_id in p for p in paths), paths
        time.sleep(4)
        procs[first].terminate()  # SIGTERM: the node drains
        drained = time.monotonic()
        # The next attempt claimed the task on the other node and opened its part.
        moved = wait(
            svc, record_id, lambda t: t["node"] != first and len(t["files"]) >= 2, timeout_s=30
        )
        moved_in = time.monotonic() - drained
        (other,) = set(NODES) - {first}
        assert moved["node"] == other, moved
        failovers = [e for e in moved["events"] if e["kind"] == "failover"]
        assert [e["detail"] for e in failovers] == [
            f"attempt {moved['attempt']}: from node {first} to node {other}"
        ], moved["events"]
        kinds = [e["kind"] for e in moved["events"]]
        assert "worker_released" in kinds and "worker_died" not in kinds, kinds
        assert procs[first].wait(40) == 0  # the drained node stopped by itself
        log = (tmp_path / f"{first}.log").read_text()
        assert f"draining {first} (1 node(s) told)" in log and f"{first} stopped" in log, log
        # The drained node comes back (its operator restarts it) and the other machine is
        # lost with its disk: its processes killed, its data directory deleted.
        taken = worker(tmp_path / "same-name.log", "--ray-address", address, "--name", other)
        assert taken.wait(60) == 2  # one live node per name: tasks and drains go by it
        assert "already named" in (tmp_path / "same-name.log").read_text()
        procs[first] = join(tmp_path, address, first, f"{first}-again.log")
        time.sleep(6)  # the part on the other node is shipped (every 2 s) as it grows
        kill_node(procs[other], other)
        shutil.rmtree(tmp_path / other)
        killed = time.monotonic()
        back = wait(
            svc, record_id, lambda t: t["node"] == first and len(t["files"]) >= 3, timeout_s=30
        )
        back_in = time.monotonic() - killed
        assert back_in < 10, back_in
        assert [e["detail"] for e in back["events"] if e["kind"] == "failover"][-1].endswith(
            f"from node {other} to node {first}"
        )
        time.sleep(5)
        spans = stop_and_check_parts(
            svc, jo, resid, record_id, tmp_path, source_hashes, time.monotonic() - started
        )
        assert len(spans) == 3, spans
        done: dict[str, Any] = svc.task(svc.app, record_id)
        parts = sorted(done["files"], key=lambda f: f["begin_ms"])
        assert parts[0]["complete"], parts  # the drained attempt closed its file whole
        assert not parts[1]["complete"] and parts[1]["duration_ms"] > 3000, parts  # assembled
        # No machine shares its disk here (as across machines): each part came to the
        # service through the store, and nothing shipped stays behind once delivered.
        deadline = time.monotonic() + 20
        while leftover := svc.s3.client().list_objects_v2(Bucket="frags").get("Contents", []):
            assert time.monotonic() < deadline, leftover
            time.sleep(0.5)
        assembled = [e for e in svc.log_events() if e.get("event") == "file.assembled"]
        assert len(assembled) == 3, assembled  # each part assembled from the store by the service
        left = [p for p in (tmp_path / first / "spool").rglob("*") if p.is_file()]
        assert not [p for p in left if record_id in str(p)], left  # off the node once shipped
        print(
            f"drained node: recording on {other} {moved_in:.1f} s after SIGTERM; "
            f"killed node: back on {first} {back_in:.1f} s later"
        )
    finally:
        pub.kill()
        pub.wait()
