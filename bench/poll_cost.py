"""CPU per call of what a worker does most often, on a SQLite database in a temporary directory:
the whole read of its task and room (what each 0.25 s tick did before the watch), the watch
that replaced it, and the lease renewal through a unit of work and bare.

    PYTHONPATH=src python bench/poll_cost.py [--calls 2000]

One task in a room with one live stream; each figure is process CPU time over ``--calls``
calls after one warm-up call, in microseconds per call.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cloudrec.bootstrap import bootstrap
from cloudrec.config import load_settings
from cloudrec.core.control import TaskControl
from cloudrec.core.rooms import StreamMeta
from cloudrec.core.service import PublishTarget, RoomAddress
from cloudrec.core.tasks import RecordingSpec, StorageTarget

APP = 77


def per_call_us(call: Callable[[], object], calls: int) -> float:
    call()
    began = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - began) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cloudrec-poll-") as tmp:
        c = bootstrap(load_settings({"data_dir": Path(tmp)}, env={}))
        c.apps.create(APP)
        target = PublishTarget(RoomAddress(APP, "r1"), "s1", "u1", None)
        c.rooms.published(target, StreamMeta(), "rtmp://127.0.0.1:1/x", "embedded", "")
        storage = StorageTarget("s3", "http://127.0.0.1:9", "recs", "ak", "sk")
        task = c.tasks.start(APP, RecordingSpec(room_id="r1"), storage)
        clock = lambda: datetime.now(UTC)  # noqa: E731
        old = TaskControl(c.uow, clock, task.task_id, 1, callbacks=c.callbacks)  # no watch
        new = TaskControl(c.uow, clock, task.task_id, 1, watch=c.watch, callbacks=c.callbacks)
        new.poll("r1")
        rows = [
            ("tick, before: the whole task and room", lambda: old.poll("r1")),
            ("tick, now: the watch", lambda: new.changed("r1")),
            ("lease renewal through a unit of work", old.renew),
            ("lease renewal bare", new.renew),
        ]
        for name, call in rows:
            print(f"{name}: {per_call_us(call, args.calls):.0f} us CPU per call")
        c.engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
