"""The recorder host's line protocol (``run``, ``abandon``, ``exit``, ``done``), read from a real
pipe by a real :class:`RecorderHost`; the workers are fakes that end when the test says."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloudrec.callbacks.formats import callback_formats
from cloudrec.config import Settings, load_settings
from cloudrec.core.control import TaskControl
from cloudrec.core.tasks import TaskState
from cloudrec.media.recorder.host import RecorderHost


class FakeWorker:
    def __init__(self, control: TaskControl, settings: Settings) -> None:
        self.task_id = control.task_id
        self.attempt = control.attempt
        self.terminated = threading.Event()
        self.lost = threading.Event()
        self.finish = threading.Event()
        self.result: Any = TaskState.COMPLETED
        self.leftover = 0
        self.threads_stopped = False

    def run(self) -> object:
        while not (self.finish.is_set() or self.lost.is_set() or self.terminated.is_set()):
            time.sleep(0.005)
        if isinstance(self.result, BaseException):
            raise self.result
        return None if self.lost.is_set() or self.terminated.is_set() else self.result

    def lease_lost(self) -> None:
        self.lost.set()

    def stop_threads(self, wait_s: float) -> int:
        self.threads_stopped = True
        return self.leftover


class Lines:
    """The host's stdout as the service reads it: line by line, in order."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()

    def write(self, text: str) -> int:
        with self._cond:
            self.lines += text.splitlines()
            self._cond.notify_all()
        return len(text)

    def flush(self) -> None:
        pass

    def wait_for(self, prefix: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                left = deadline - time.monotonic()
                assert left > 0, f"no line {prefix!r} in {self.lines}"
                self._cond.wait(left)


class Harness:
    def __init__(self, tmp_path: Path, make_worker: Any = None) -> None:
        self.workers: dict[tuple[str, int], FakeWorker] = {}
        self.refuse: set[str] = set()

        def make(control: TaskControl, settings: Settings) -> FakeWorker:
            if control.task_id in self.refuse:
                raise OSError("no more threads")
            w = FakeWorker(control, settings)
            self.workers[(control.task_id, control.attempt)] = w
            return w

        self.out = Lines()
        settings = load_settings({"data_dir": tmp_path}, env={})
        clock = lambda: datetime.now(UTC)  # noqa: E731
        self.host = RecorderHost(
            None,  # type: ignore[arg-type]
            clock,
            settings,
            self.out,
            make_worker or make,
            callbacks=callback_formats(),
        )
        read_fd, self._write_fd = os.pipe()
        self._commands = os.fdopen(read_fd, "r")
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.exit_code = self.host.serve(self._commands)

    def send(self, line: str) -> None:
        os.write(self._write_fd, (line + "\n").encode())

    def worker(self, task_id: str, attempt: int = 1) -> FakeWorker:
        deadline = time.monotonic() + 10
        while (task_id, attempt) not in self.workers:
            assert time.monotonic() < deadline, f"{task_id} {attempt} never started"
            time.sleep(0.005)
        return self.workers[(task_id, attempt)]

    def close_stdin(self) -> None:
        os.close(self._write_fd)

    def ended(self, timeout: float = 10.0) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    for w in h.workers.values():
        w.finish.set()
    if h.thread.is_alive():
        h.send("exit")
        h.ended()


def test_run_starts_the_attempt_and_done_reports_how_it_ended(harness: Harness) -> None:
    harness.send("run t1 3")
    w = harness.worker("t1", 3)
    assert (w.task_id, w.attempt) == ("t1", 3)
    assert not any(line.startswith("done") for line in harness.out.lines)
    w.finish.set()
    assert harness.out.wait_for("done t1 3") == "done t1 3 completed"
    # Its threads were stopped before it was said to be done; it is no longer the host's.
    assert w.threads_stopped
    assert ("t1", 3) not in harness.host.workers


def test_a_task_id_with_dashes_and_several_attempts_run_side_by_side(harness: Harness) -> None:
    harness.send("run -SHnu0-ZPQ 1")
    harness.send("run -SHnu0-ZPQ 2")
    first, second = harness.worker("-SHnu0-ZPQ", 1), harness.worker("-SHnu0-ZPQ", 2)
    second.finish.set()
    assert harness.out.wait_for("done -SHnu0-ZPQ 2") == "done -SHnu0-ZPQ 2 completed"
    assert not first.threads_stopped  # the other attempt goes on
    first.finish.set()
    harness.out.wait_for("done -SHnu0-ZPQ 1")


def test_abandon_stops_only_that_attempt(harness: Harness) -> None:
    harness.send("run a 1")
    harness.send("run b 1")
    a, b = harness.worker("a"), harness.worker("b")
    harness.send("abandon a 1")
    assert harness.out.wait_for("done a 1") == "done a 1 gave the task up"
    assert a.lost.is_set() and not b.lost.is_set()
    harness.send("abandon nosuch 4")  # an attempt the host does not run: nothing happens
    harness.send("run c 1")
    harness.worker("c")
    assert not b.lost.is_set()


def test_a_bad_line_is_refused_and_the_host_reads_on(harness: Harness) -> None:
    for bad in ["hello", "run t1", "run t1 x", "run t1 1 2", "abandon", "done t1 1 ok", ""]:
        harness.send(bad)
    harness.send("run good 1")
    harness.worker("good").finish.set()
    harness.out.wait_for("done good 1")
    assert len(harness.workers) == 1  # none of the bad lines started anything
    assert [line.split()[1] for line in harness.out.lines] == ["good"]


def test_a_run_that_fails_to_start_is_answered_done_and_the_reader_goes_on(
    harness: Harness,
) -> None:
    harness.refuse.add("broken")
    harness.send("run broken 1")
    assert harness.out.wait_for("done broken 1") == (
        "done broken 1 start failed: OSError: no more threads"
    )
    harness.send("run fine 1")
    harness.worker("fine").finish.set()
    assert harness.out.wait_for("done fine 1") == "done fine 1 completed"


def test_the_same_attempt_twice_is_refused_not_run_twice(harness: Harness) -> None:
    harness.send("run t 1")
    w = harness.worker("t")
    harness.send("run t 1")
    assert harness.out.wait_for("done t 1").startswith("done t 1 start failed: RuntimeError")
    assert not w.threads_stopped  # the one running is untouched
    w.finish.set()


def test_a_worker_that_crashes_is_reported_and_costs_no_other_task(harness: Harness) -> None:
    harness.send("run bad 1")
    harness.send("run other 1")
    bad, other = harness.worker("bad"), harness.worker("other")
    bad.result = ValueError("native\nsurprise")
    bad.finish.set()
    # One line however the message runs, so that the service reads one answer.
    assert harness.out.wait_for("done bad 1") == (
        "done bad 1 worker crashed: ValueError: native surprise"
    )
    assert bad.threads_stopped
    other.finish.set()
    assert harness.out.wait_for("done other 1") == "done other 1 completed"


def test_recorder_threads_that_do_not_stop_are_said_in_done(harness: Harness) -> None:
    harness.send("run t 1")
    w = harness.worker("t")
    w.leftover = 2
    w.finish.set()
    assert harness.out.wait_for("done t 1") == (
        "done t 1 completed; 2 recorder thread(s) still running"
    )


def test_exit_takes_no_more_tasks_and_the_host_ends_when_the_last_is_over(
    harness: Harness,
) -> None:
    harness.send("run t 1")
    w = harness.worker("t")
    harness.send("exit")
    deadline = time.monotonic() + 10
    while not harness.host.closing.is_set():
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert not harness.ended(0.3)  # its task still runs
    w.finish.set()
    assert harness.ended()
    assert harness.exit_code == 0
    assert harness.out.lines == ["done t 1 completed"]


def test_a_run_while_closing_is_answered_at_once_so_it_is_started_elsewhere(
    harness: Harness,
) -> None:
    harness.send("run t 1")
    w = harness.worker("t")
    harness.host.terminate()  # SIGTERM: the workers give their tasks up, no more tasks
    assert w.terminated.is_set()
    harness.out.wait_for("done t 1")
    harness.send("run late 1")
    assert harness.out.wait_for("done late 1") == "done late 1 refused: this host is closing"
    assert ("late", 1) not in harness.workers
    assert harness.ended()


def test_the_end_of_stdin_lets_running_tasks_finish_then_the_host_exits(
    harness: Harness,
) -> None:
    """The service died: its host keeps recording (the database is the truth) and exits once
    its tasks are over."""
    harness.send("run t 1")
    w = harness.worker("t")
    harness.close_stdin()
    assert not harness.ended(0.3)
    assert not w.lost.is_set() and not w.terminated.is_set()
    w.finish.set()
    assert harness.ended()


def test_a_long_lived_host_keeps_no_ended_threads(harness: Harness) -> None:
    for i in range(50):
        harness.send(f"run t{i} 1")
        harness.worker(f"t{i}").finish.set()
        harness.out.wait_for(f"done t{i} 1")
    harness.send("run last 1")
    harness.worker("last")
    assert len(harness.host._threads) <= 2
    assert len(harness.host.workers) == 1
