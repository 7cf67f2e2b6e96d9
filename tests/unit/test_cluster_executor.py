"""The Ray executor's wiring (docs/cluster.md): the default executor never imports Ray, and
``executor = "ray"`` builds the Ray executor without joining a cluster until it is used.  Its
behaviour on a real cluster: tests/e2e/test_cluster.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cloudrec.config import load_settings

DEFAULT_SERVICE = """
import sys
from cloudrec.bootstrap import bootstrap
from cloudrec.config import load_settings
c = bootstrap(load_settings(env={"CLOUDREC_DATA_DIR": sys.argv[1]}))
print(type(c.executor).__name__, "ray" in sys.modules)
"""


def test_the_default_executor_needs_no_ray(tmp_path):
    """``pip install . && cloudrec serve``: the service is built without importing Ray."""
    out = subprocess.run(
        [sys.executable, "-c", DEFAULT_SERVICE, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.split() == ["HostExecutor", "False"]  # recorder hosts, the default


def test_executor_ray_is_built_lazily_and_handles_name_each_attempt(tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install '.[cluster]')")
    from cloudrec.bootstrap import bootstrap
    from cloudrec.cluster.executor import RayExecutor, actor_name, parse_handle

    settings = load_settings(
        env={
            "CLOUDREC_DATA_DIR": str(tmp_path),
            "CLOUDREC_EXECUTOR": "ray",
            "CLOUDREC_RAY_ADDRESS": "127.0.0.1:1",
        }
    )
    container = bootstrap(settings)
    assert isinstance(container.executor, RayExecutor)
    assert not ray.is_initialized()  # no cluster joined until the service warms it
    # An attempt this service did not start: the lease tells.
    assert container.executor.alive("ray:abc:1") is None
    assert container.executor.alive("local:123") is None
    # ZEGO task ids may hold "-" and "_", a ":" only in the handle's own separators.
    assert parse_handle("ray:-Ab_c:12") == ("-Ab_c", 12)
    assert parse_handle("ray:abc") is None and parse_handle("local:5") is None
    assert actor_name("-Ab_c", 12) == "cloudrec:-Ab_c:12"


@pytest.mark.slow
def test_serve_on_a_cluster_nobody_runs_exits_at_once_saying_so(tmp_path):
    """Ray's own join retries for minutes (and the service ignored SIGTERM meanwhile)."""
    pytest.importorskip("ray", reason="ray is not installed (pip install '.[cluster]')")
    from tests.conftest import free_port

    port = free_port()
    out = subprocess.run(
        [
            *(sys.executable, "-m", "cloudrec.cli", "serve", "--data-dir", str(tmp_path)),
            *("--http-port", str(free_port()), "--rtmp-port", str(free_port())),
            *("--executor", "ray", "--ray-address", f"127.0.0.1:{port}"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert f"cannot join the Ray cluster at 127.0.0.1:{port}" in out.stderr
