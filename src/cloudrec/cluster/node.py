"""``cloudrec worker``: one node of a recording cluster (docs/cluster.md), as ``ray start`` with
cloudrec's resource, label and health-check settings, run in the foreground.

- ``--head``: Ray's control plane (GCS), with health checks every second and a node declared
  dead after 3 missed ones; capacity 0 by default (it records nothing).
- ``--ray-address HOST:PORT``: a node that records up to ``--capacity`` units (a remux is one;
  docs/cluster.md, "Cost model") and spools them in ``--data-dir``.

On SIGTERM (or SIGINT) a recording node drains: Ray is told to place nothing more on it, each
of its recordings closes its files and gives its task up (the next attempt goes on on another
node at once), and the node stops once the last has left, or after ``--drain-timeout``.

Ray is imported only here and only when the command runs (the ``cluster`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The custom resource a node's capacity is declared in, and the label that names the node.
RESOURCE = "cloudrec_recording"
LABEL = "cloudrec-node"
# Health checks of the head (Ray reads RAY_<setting> from the environment of its processes):
# a killed node is declared dead in about 3-5 s instead of about 13 s with Ray's defaults.
HEALTH_ENV = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}
# The node's own settings, given to its recordings through the environment of its Ray
# processes (cluster/actor.py, NODE_LOCAL); the drain file tells them to leave.
ENV_NODE_NAME = "CLOUDREC_NODE_NAME"
ENV_SPOOL = "CLOUDREC_SPOOL_ROOT"
ENV_DRAIN_FILE = "CLOUDREC_NODE_DRAIN_FILE"
DEFAULT_PORT = 6379
MAX_NAME = 200  # tasks.node
STOP_WAIT_S = 15.0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "worker",
        help="run a node of a recording cluster (Ray; docs/cluster.md)",
        description="Run one node of a recording cluster in the foreground: the head "
        "(--head) or a recording node joining it (--ray-address). A recording node drains on "
        "SIGTERM: its recordings go on on other nodes, then it stops. Needs "
        "pip install 'cloudrec[cluster]'.",
    )
    role = p.add_mutually_exclusive_group(required=True)
    role.add_argument("--head", action="store_true", help="start the cluster's head node")
    role.add_argument("--ray-address", metavar="HOST:PORT", help="join the head at HOST:PORT")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"the head's port (default {DEFAULT_PORT})"
    )
    p.add_argument(
        "--capacity",
        type=int,
        help="recording units this node takes (a remux is one; docs/cluster.md); "
        "default 0 on the head, 40 per CPU core on a recording node",
    )
    p.add_argument("--name", help="the node's name in tasks and events (default: the host name)")
    p.add_argument(
        "--data-dir",
        type=Path,
        help="where this node's recordings spool (DIR/spool; default: the service's data dir)",
    )
    p.add_argument(
        "--node-ip-address", help="the address other nodes reach this one at (default: Ray's)"
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds a draining node waits for its recordings to leave (default 30)",
    )


def default_capacity(head: bool) -> int:
    return 0 if head else 40 * (os.cpu_count() or 1)


def ray_start_argv(args: argparse.Namespace, name: str, capacity: int) -> list[str]:
    argv = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block"]
    argv += ["--disable-usage-stats", "--labels", f"{LABEL}={name}"]
    if capacity:
        argv += ["--resources", json.dumps({RESOURCE: capacity})]
    if args.head:
        argv += ["--head", "--port", str(args.port), "--num-cpus", "0"]
        argv += ["--include-dashboard", "false"]
    else:
        argv += ["--address", args.ray_address]
    if args.node_ip_address:
        argv += ["--node-ip-address", args.node_ip_address]
    return argv


def node_env(args: argparse.Namespace, name: str, drain_file: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HEALTH_ENV)
    env[ENV_NODE_NAME] = name
    env[ENV_DRAIN_FILE] = str(drain_file)
    env.pop(ENV_SPOOL, None)
    if args.data_dir is not None:
        env[ENV_SPOOL] = str((args.data_dir / "spool").resolve())
    return env


def _say(what: str) -> None:
    print(f"cloudrec worker: {what}", file=sys.stderr, flush=True)


def gcs_client(address: str) -> Any:
    """A client of the cluster's control plane (Ray's own, as ``ray drain-node`` uses)."""
    from ray._raylet import GcsClient  # type: ignore[attr-defined]

    return GcsClient(address=address)


@dataclass(frozen=True)
class LiveNode:
    node_id: str  # hex
    name: str  # its ``cloudrec-node`` label
    total: float  # recording units it declares
    free: float  # of them, as Ray last reported
    draining: bool


def live_nodes(gcs: Any) -> list[LiveNode]:
    """The cluster's live nodes with their recording units (one read of each table)."""
    draining = set(gcs.get_draining_nodes())  # node ids in hex
    alive = {
        node_id.binary(): str(info.labels.get(LABEL, ""))
        for node_id, info in gcs.get_all_node_info().items()
        if info.state == 0  # ALIVE
    }
    usage = {u.node_id: u for u in gcs.get_all_resource_usage().resource_usage_data.batch}
    nodes = []
    for node_id, name in alive.items():
        u = usage.get(node_id)
        total = float(u.resources_total.get(RESOURCE, 0)) if u is not None else 0.0
        free = float(u.resources_available.get(RESOURCE, 0)) if u is not None else 0.0
        nodes.append(LiveNode(node_id.hex(), name, total, free, node_id.hex() in draining))
    return nodes


def _drain(address: str, name: str, deadline_s: float) -> int:
    """Ask Ray to place nothing more on the live nodes named ``name``; how many."""
    from ray.core.generated import autoscaler_pb2

    gcs = gcs_client(address)
    reason = autoscaler_pb2.DrainNodeReason.Value(  # type: ignore[attr-defined]
        "DRAIN_NODE_REASON_PREEMPTION"
    )
    deadline_ms = int((time.time() + deadline_s) * 1000)
    count = 0
    for node_id, info in gcs.get_all_node_info().items():
        if info.state == 0 and info.labels.get(LABEL) == name:  # ALIVE
            why = f"cloudrec worker {name}: SIGTERM"
            accepted, refusal = gcs.drain_node(node_id.hex(), reason, why, deadline_ms)
            if not accepted:
                _say(f"Ray refused to drain {name}: {refusal}")
                continue
            count += 1
    return count


def _live_names(address: str) -> set[str]:
    """The names of the cluster's live nodes (none when the head is not reached)."""
    try:
        return {n.name for n in live_nodes(gcs_client(address))}
    except Exception:
        return set()


def _in_use(address: str, name: str) -> float:
    """Recording units still taken on the live nodes named ``name``."""
    return sum(n.total - n.free for n in live_nodes(gcs_client(address)) if n.name == name)


def _wait_drained(proc: subprocess.Popen[bytes], address: str, name: str, timeout_s: float) -> bool:
    """Wait until the node's recordings have left (their units free again); False on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if _in_use(address, name) == 0:
                return True
        except Exception:  # the head gone: nothing to wait for
            return True
        time.sleep(0.5)
    return proc.poll() is not None


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.terminate()  # ``ray start --block`` stops the node's processes
        try:
            proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


def run(args: argparse.Namespace) -> int:
    try:
        import ray  # noqa: F401
    except ImportError:
        _say("needs Ray: pip install 'cloudrec[cluster]'")
        return 1
    name = args.name or socket.gethostname()
    capacity = default_capacity(args.head) if args.capacity is None else args.capacity
    if capacity < 0:
        _say("--capacity must be 0 or more")
        return 2
    if not 0 < len(name) <= MAX_NAME or "," in name or "=" in name:
        _say(f"--name must be 1 to {MAX_NAME} characters without ',' or '=': {name!r}")
        return 2
    if not args.head and name in _live_names(args.ray_address):
        # Tasks name their node by it, and a drain finds its node by it: one live node each.
        _say(f"a live node of the cluster is already named {name!r}: give this one --name")
        return 2
    home = Path(tempfile.mkdtemp(prefix="cloudrec-worker-"))
    drain_file = home / "draining"
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    proc = subprocess.Popen(
        ray_start_argv(args, name, capacity),
        env=node_env(args, name, drain_file),
        start_new_session=True,  # a Ctrl-C reaches this process only: it drains first
    )
    role = "head" if args.head else "recording node"
    _say(f"{role} {name} starting, capacity {capacity} (pid {proc.pid})")
    while not stop.is_set() and proc.poll() is None:
        stop.wait(0.5)
    if proc.poll() is not None:
        _say(f"Ray exited with status {proc.returncode}")
        return proc.returncode or 1
    if not args.head and capacity:
        try:  # first: nothing more is placed here while the recordings leave
            drained = _drain(args.ray_address, name, args.drain_timeout)
        except Exception as exc:  # the head gone: the recordings leave all the same
            _say(f"could not tell Ray to drain this node: {exc}")
            drained = 0
        drain_file.touch()  # each recording of the node closes its files and leaves
        _say(f"draining {name} ({drained} node(s) told), up to {args.drain_timeout:g} s")
        if not _wait_drained(proc, args.ray_address, name, args.drain_timeout):
            _say("drain timeout: stopping with recordings still on the node")
    _stop(proc)  # Ray's own status says nothing here: a drained node's raylet exits by itself
    _say(f"{name} stopped")
    return 0
