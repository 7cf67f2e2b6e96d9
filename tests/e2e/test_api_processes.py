"""The HTTP API in processes of its own beside ``serve``'s ingest (issue 13): a killed API
process is replaced and the API answers again; ``serve`` killed with SIGKILL takes its API
processes with it, so the port is free for the next ``serve``."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import httpx

from tests.service import Service


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
