"""The local executor: the worker's command line, its settings, and no zombie left behind."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from pathlib import Path

from cloudrec.cli import build_parser
from cloudrec.config import load_settings
from cloudrec.executor import LocalExecutor, worker_argv


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
