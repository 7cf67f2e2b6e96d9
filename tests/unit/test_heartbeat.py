"""The worker's heartbeat: it renews the lease while the worker's loop ticks (or the worker
closes its files), lets it run out while the loop is stalled, and says when the lease is lost."""

from __future__ import annotations

import threading
import time

import pytest

from cloudrec.core.control import LeaseLostError
from cloudrec.media.recorder import worker as worker_module
from cloudrec.media.recorder.worker import Heartbeat


class Control:
    task_id = "t1"

    def __init__(self) -> None:
        self.renewals = 0
        self.lose = False
        self.fail = False
        self.renewed = threading.Event()

    def renew(self) -> None:
        if self.lose:
            raise LeaseLostError("t1: attempt 1 lost its lease")
        if self.fail:
            raise OSError("database is locked")
        self.renewals += 1
        self.renewed.set()


@pytest.fixture
def beat(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(worker_module, "HEARTBEAT_S", 0.01)
    control = Control()
    hb = Heartbeat(control)  # type: ignore[arg-type]
    hb.STALL_S = 0.5
    yield hb, control
    hb.stop()
    hb.join(5)


def _renewals_over(control: Control, seconds: float) -> int:
    before = control.renewals
    time.sleep(seconds)
    return control.renewals - before


def test_a_ticking_worker_keeps_its_lease(beat):  # type: ignore[no-untyped-def]
    hb, control = beat
    hb.start()
    for _ in range(30):
        hb.ticked = time.monotonic()
        time.sleep(0.01)
    assert control.renewals >= 3
    assert not hb.lost.is_set()


def test_a_stalled_worker_stops_renewing_so_its_lease_runs_out(beat):  # type: ignore[no-untyped-def]
    hb, control = beat
    hb.ticked = time.monotonic() - 10  # the loop has not ticked for longer than STALL_S
    hb.start()
    assert _renewals_over(control, 0.3) == 0
    # It comes back (the stall was a long wait, not a hang): renewals go on.
    hb.ticked = time.monotonic()
    assert control.renewed.wait(5)
    assert not hb.lost.is_set()


def test_a_worker_closing_its_files_keeps_its_lease_without_ticking(beat):  # type: ignore[no-untyped-def]
    hb, control = beat
    hb.ticked = time.monotonic() - 10
    hb.closing = True
    hb.start()
    assert control.renewed.wait(5)


def test_a_lost_lease_is_said_and_the_heartbeat_ends(beat):  # type: ignore[no-untyped-def]
    hb, control = beat
    control.lose = True
    hb.start()
    assert hb.lost.wait(5)
    hb.join(5)
    assert not hb.is_alive()


def test_a_failing_database_is_retried_not_taken_for_a_lost_lease(beat):  # type: ignore[no-untyped-def]
    hb, control = beat
    control.fail = True
    hb.start()
    time.sleep(0.1)
    assert hb.is_alive() and not hb.lost.is_set()
    control.fail = False
    hb.ticked = time.monotonic()
    assert control.renewed.wait(5)
