"""The local executor: the worker's command line, its settings, and no zombie left behind."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloudrec import executor as executor_module
from cloudrec.bootstrap import bootstrap
from cloudrec.cli import build_parser
from cloudrec.config import load_settings
from cloudrec.executor import API_ONLY, HostExecutor, LocalExecutor, worker_argv


def test_a_task_id_that_starts_with_a_dash_reaches_the_worker_as_its_task_id():
    """Regression: ZEGO TaskIds are URL-safe base64 and may start with "-"; argparse took
    ``run-task -SHnu0-ZPQMiWWY7`` for an option and the worker exited with status 2."""
    argv = worker_argv("-SHnu0-ZPQMiWWY7", 3)
    args = build_parser().parse_args(argv[argv.index("run-task") :])
    assert (args.command, args.task_id, args.attempt) == ("run-task", "-SHnu0-ZPQMiWWY7", 3)


def test_a_worker_runs_with_every_setting_the_service_has_a_config_files_included(tmp_path):
    """Issue 10 #7: workers did not get ``--config`` (a TOML file outside the data dir) and
    ran with the defaults of allow_private_targets, room_notice_s, ..."""
    config = tmp_path / "elsewhere.toml"
    config.write_text(
        "allow_private_targets = true\nroom_notice_s = 7.5\nidle_timeout_s = 11\n"
        'hook_secret = "h"\nmax_worker_restarts = 2\n'
    )
    settings = load_settings({"data_dir": tmp_path / "data"}, env={}, config_file=config)
    env = LocalExecutor(settings)._env()
    assert "CLOUDREC_CONFIG" not in env  # the worker needs no file: it has every value
    seen = load_settings(env=env)
    assert seen.database == settings.database  # the data dir's SQLite, made explicit
    for f in dataclasses.fields(settings):
        if f.name == "database_url":
            continue
        if f.name in API_ONLY:  # the HTTP side's secrets stay out of workers
            assert getattr(seen, f.name) == "", f.name
            continue
        mine, theirs = getattr(settings, f.name), getattr(seen, f.name)
        if isinstance(mine, Path):
            mine, theirs = mine.resolve(), theirs.resolve()
        assert mine == theirs, f.name


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_an_ended_worker_is_reaped_and_leaves_no_zombie(tmp_path):
    """Issue 10 #6: workers that ended after their task was uploading were never waited
    for: zombies piled up under ``cloudrec serve``."""
    settings = load_settings({"data_dir": tmp_path}, env={})
    executor = LocalExecutor(settings)
    proc = subprocess.Popen(["true"])
    executor._procs[proc.pid] = proc
    deadline = time.monotonic() + 10
    while _state(proc.pid) != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    executor.reap()
    assert _state(proc.pid) is None
    assert executor.alive(f"local:{proc.pid}") is False
    assert "status 0" in executor.exit_detail(f"local:{proc.pid}")


# A recorder host as the executor sees it: ``run`` of a task named quick* is done at once, any
# other runs until abandoned; ``exit`` ends it.
FAKE_HOST = r"""
import sys
for line in sys.stdin:
    verb, *rest = line.split()
    if verb == "exit":
        break
    task_id, attempt = rest
    if verb == "run" and task_id.startswith("quick"):
        print("done", task_id, attempt, "completed", flush=True)
    elif verb == "abandon":
        print("done", task_id, attempt, "gave the task up", flush=True)
"""


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[HostExecutor]:
    settings = load_settings({"data_dir": tmp_path}, env={})
    executor = HostExecutor(settings, per_host=2, argv=[sys.executable, "-c", FAKE_HOST])
    yield executor
    for host in executor._hosts.values():
        if host.proc.poll() is None:
            host.proc.kill()
            host.proc.wait(5)


def _until(check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _pid(handle: str) -> int:
    return int(handle.split(":")[1])


def test_an_attempt_on_a_host_is_alive_until_the_host_says_it_is_done(hosts):
    slow = hosts.start("slow", 1)
    quick = hosts.start("quick", 2)
    assert _pid(slow) == _pid(quick)  # one host holds both
    _until(lambda: hosts.alive(quick) is False)
    assert hosts.exit_detail(quick) == "worker ended: completed"
    assert hosts.alive(slow) is True
    assert hosts.alive("local:123") is None  # not a host handle: the lease tells
    assert hosts.alive(f"host:{_pid(slow) + 100000}:slow:1") is None  # a host not ours


def test_kill_abandons_that_attempt_only_and_its_host_goes_on(hosts):
    a = hosts.start("a", 1)
    b = hosts.start("b", 1)
    hosts.kill(a)
    assert hosts.alive(a) is False
    _until(lambda: hosts.exit_detail(a) == "worker ended: gave the task up")
    assert hosts.alive(b) is True
    assert hosts._hosts[_pid(b)].proc.poll() is None


def test_a_host_that_dies_ends_every_attempt_it_held_and_starts_go_to_a_new_host(hosts):
    a = hosts.start("a", 1)
    b = hosts.start("b", 3)
    os.kill(_pid(a), signal.SIGKILL)
    _until(lambda: hosts.alive(a) is False and hosts.alive(b) is False)
    assert hosts.exit_detail(b) == "recorder host killed by signal 9 (SIGKILL)"
    c = hosts.start("c", 1)
    assert _pid(c) != _pid(a)
    assert hosts.alive(c) is True


def test_a_full_host_has_a_spare_started_beside_it(hosts):
    first = [hosts.start(f"t{i}", 1) for i in range(2)]
    assert len({_pid(h) for h in first}) == 1
    running = [h for h in hosts._hosts.values() if h.proc.poll() is None]
    assert len(running) == 2  # the spare, warm before the next start needs it
    third = hosts.start("t2", 1)
    assert _pid(third) != _pid(first[0])


def test_reap_forgets_ended_attempts_and_lets_idle_hosts_beyond_one_spare_exit(hosts, monkeypatch):
    """Review: a long-running service kept every ended attempt of every host (``done``)."""
    for i in range(4):
        hosts.start(f"quick{i}", 1)  # two hosts, each with two quick tasks, plus a spare
    pids = list(hosts._hosts)
    assert len(pids) == 3
    _until(lambda: all(not h.tasks for h in hosts._hosts.values()))
    monkeypatch.setattr(executor_module, "KEEP_ENDED_S", -1.0)
    hosts.reap()
    assert all(not h.done for h in hosts._hosts.values())
    assert hosts.alive(f"host:{pids[0]}:quick0:1") is False  # forgotten: still not alive
    # Three idle hosts: two are asked to exit; once they have, they are collected.
    _until(lambda: sum(h.proc.poll() is not None for h in hosts._hosts.values()) == 2)
    hosts.reap()
    assert len(hosts._hosts) == 1
    for pid in pids:
        assert _state(pid) != "Z"  # exited and waited for (no zombie), or the spare


def test_a_real_recorder_host_answers_a_run_it_cannot_own(tmp_path):
    """The real ``cloudrec recorder-host`` over its pipes: a task the database does not
    have is given up at once and said done; the host goes on taking tasks."""
    settings = load_settings({"data_dir": tmp_path}, env={})
    bootstrap(settings).engine.dispose()  # the database migrated, as serve does
    hosts = HostExecutor(settings, per_host=4)
    try:
        handle = hosts.start("nosuchtask", 1)
        _until(lambda: hosts.alive(handle) is False, timeout=60)
        assert hosts.exit_detail(handle) == "worker ended: gave the task up"
        again = hosts.start("nosuchtask", 2)
        assert _pid(again) == _pid(handle)
        _until(lambda: hosts.alive(again) is False, timeout=60)
    finally:
        for host in hosts._hosts.values():
            host.proc.kill()
            host.proc.wait(5)


def test_a_workers_environment_has_every_setting_but_the_api_only_secrets(monkeypatch, tmp_path):
    from cloudrec.config import load_settings
    from cloudrec.executor import settings_env, worker_env

    monkeypatch.setenv("CLOUDREC_ADMIN_TOKEN", "from-the-environment")
    settings = load_settings(
        {"data_dir": tmp_path, "admin_token": "op", "hook_secret": "hk"}, env={}
    )
    env = worker_env(settings)
    assert "CLOUDREC_ADMIN_TOKEN" not in env and "CLOUDREC_HOOK_SECRET" not in env
    assert env["CLOUDREC_DATA_DIR"] == str(tmp_path.resolve())
    assert "CLOUDREC_SECRET_KEY" in env  # a worker decrypts its storage target
    api = settings_env(settings, for_api=True)
    assert api["CLOUDREC_ADMIN_TOKEN"] == "op" and api["CLOUDREC_HOOK_SECRET"] == "hk"
