"""The local executor's worker command line."""

from __future__ import annotations

from cloudrec.cli import build_parser
from cloudrec.executor import worker_argv


def test_a_task_id_that_starts_with_a_dash_reaches_the_worker_as_its_task_id():
    """Regression: ZEGO TaskIds are URL-safe base64 and may start with "-"; argparse took
    ``run-task -SHnu0-ZPQMiWWY7`` for an option and the worker exited with status 2."""
    argv = worker_argv("-SHnu0-ZPQMiWWY7")
    args = build_parser().parse_args(argv[argv.index("run-task") :])
    assert (args.command, args.task_id) == ("run-task", "-SHnu0-ZPQMiWWY7")
