"""The HTTP API in processes of its own beside ``serve``'s ingest (issue 13): a killed API
process is replaced and the API answers again; ``serve`` killed with SIGKILL takes its API
processes with it, so the port is free for the next ``serve``; a recording started through an
API process is started by ``serve`` (its worker is serve's child, not the API's)."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import httpx

from tests.e2e.test_ownership import worker_pid
from tests.service import Service, ffmpeg_publish


def api_children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z" and b"api-worker" in cmdline:
            found.append(int(stat.parent.name))
    return found


def wait_for(check, timeout_s: float = 15.0):
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.1)
    return result


def healthy(svc: Service) -> bool:
    try:
        return httpx.get(svc.http + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_killed_api_process_is_replaced(tmp_path):
    (tmp_path / "data").mkdir()
    svc = Service(tmp_path / "data", env={"CLOUDREC_API_PROCESSES": "2"}).start()
    try:
        assert svc.proc is not None
        first = wait_for(lambda: (c := api_children(svc.proc.pid)) and len(c) == 2 and c)
        wait_for(lambda: healthy(svc))
        os.kill(first[0], signal.SIGKILL)
        now = wait_for(lambda: (c := api_children(svc.proc.pid)) and len(c) == 2 and c)
        assert first[0] not in now and first[1] in now
        wait_for(lambda: healthy(svc))
        assert any(e.get("event") == "api.process_died" for e in svc.log_events())
    finally:
        assert svc.stop() == 0


def test_serve_killed_takes_its_api_processes_and_frees_the_port(tmp_path):
    (tmp_path / "data").mkdir()
    svc = Service(tmp_path / "data").start()
    assert svc.proc is not None
    [child] = wait_for(lambda: api_children(svc.proc.pid))
    wait_for(lambda: healthy(svc))
    svc.proc.send_signal(signal.SIGKILL)
    svc.proc.wait()
    wait_for(lambda: not Path(f"/proc/{child}").exists() or _zombie(child), 10)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", svc.http_port))  # nothing holds it any more
    svc.start()
    try:
        wait_for(lambda: healthy(svc))
    finally:
        assert svc.stop() == 0


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_recording_started_through_the_api_runs_under_serve(tmp_path):
    (tmp_path / "data").mkdir()
    svc = Service(tmp_path / "data").start()
    svc.app = svc.create_app(1234)
    pub = ffmpeg_publish(svc.publish_url(1234, "r1", "s1", "--uid", "alice"), 60)
    try:
        assert svc.proc is not None
        assert len(svc.wait_streams(svc.app, "r1", 1)) == 1
        r = httpx.post(
            f"{svc.http}/v1/apps/1234/tasks",
            json={"room_id": "r1"},
            auth=("1234", svc.app["server_secret"]),
            timeout=30,
        )
        assert r.status_code == 201, r.text
        task_id = r.json()["task_id"]
        svc.wait_task(svc.app, task_id, lambda t: t["state"] == "recording")
        worker = worker_pid(svc, task_id)  # the recorder host (or the worker) recording it
        assert worker is not None and parent_of(worker) == svc.proc.pid
        assert worker not in api_children(svc.proc.pid)
        events = [e["kind"] for e in svc.task(svc.app, task_id)["events"]]
        assert "worker_restarted" not in events  # started at once, not left to the reconciler
    finally:
        pub.kill()
        pub.wait()
        assert svc.stop() == 0
