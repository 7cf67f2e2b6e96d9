"""A live stream whose recorder keeps failing: after its restarts the task ends, saying why
(reason ``recorder failed``, the error, the stop callback as for any failure), and the files
that stream's recorders wrote are kept, marked incomplete.

Real parts: the worker, its recorders (PyAV) and a real database; the stream is an FLV served
over TCP on loopback (FFmpeg's ``tcp:`` input) by a server that resets every connection
halfway: an error while the stream is live."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloudrec.core.rooms import StreamMeta
from cloudrec.core.service import PublishTarget, RoomAddress
from cloudrec.core.tasks import END_RECORDER_FAILED, FileFormat, RecordingSpec, TaskState
from cloudrec.media.recorder import remux
from cloudrec.media.recorder import worker as worker_module
from cloudrec.media.recorder.singles import RECORDER_RESTARTS
from cloudrec.media.recorder.worker import TaskWorker
from tests.integration.test_ownership import APP, World
from tests.media import decode_file, write_flv


class BreakingServer:
    """A TCP server (FFmpeg's ``tcp:`` input, an FLV in it) that sends the first half of an
    FLV to each connection, then resets it (RST): an error while the stream is live."""

    def __init__(self, body: bytes) -> None:
        self.body, self.served = body, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.served += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                half = len(self.body) // 2
                for at in range(0, half, half // 40):  # 4 s of media over 2 s
                    conn.sendall(self.body[at : min(half, at + half // 40)])
                    time.sleep(0.05)
                time.sleep(0.5)
            except OSError:
                pass
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


@pytest.fixture
def breaking(tmp_path: Path) -> Iterator[BreakingServer]:
    server = BreakingServer(write_flv(tmp_path / "src.flv", duration_s=8.0, gop=25).read_bytes())
    yield server
    server.close()


def test_a_recorder_that_keeps_failing_while_live_ends_the_task_saying_so(
    database_url, data_dir, breaking, monkeypatch
):
    monkeypatch.setattr(remux, "RETRY_LIMIT", 0)  # each recorder gives up at its first error
    monkeypatch.setattr(worker_module, "RECONCILE_S", 0.05)
    world = World(database_url, data_dir)
    world.clock.now = datetime.now(UTC)  # the worker measures the task's age on the wall clock
    try:
        url = f"tcp://127.0.0.1:{breaking.port}"
        target = PublishTarget(RoomAddress(APP, "r2"), "cam", "u2", None)
        world.c.rooms.published(target, StreamMeta(), url, "hook", "")
        spec = RecordingSpec(
            room_id="r2", formats=(FileFormat.FLV,), callback_url="http://127.0.0.1:9/cb"
        )
        task_id = world.start(spec)
        worker = TaskWorker(world.control(task_id), world.c.settings)
        done: list[object] = []
        thread = threading.Thread(target=lambda: done.append(worker.run()), daemon=True)
        thread.start()
        thread.join(60)
        assert not thread.is_alive(), "the worker went on with a recorder that cannot record"

        task = world.task(task_id)
        assert done == [task.state]
        assert task.state in (TaskState.UPLOADING, TaskState.COMPLETED)
        assert task.end_reason == END_RECORDER_FAILED
        assert task.error is not None
        assert f"stream cam failed {RECORDER_RESTARTS + 1} times while it was live" in task.error
        assert "Errno" in task.error or "I/O" in task.error or "Error" in task.error
        events = world.events(task_id)
        assert events.count("recorder_restarted") == RECORDER_RESTARTS
        assert breaking.served == RECORDER_RESTARTS + 1, task.error

        # Each recorder wrote its part before the break: kept, decoding, marked incomplete.
        with world.c.uow() as uow:
            files = uow.tasks.files(task_id)
        assert len(files) == RECORDER_RESTARTS + 1
        for f in files:
            assert not f.complete
            decoded = decode_file(Path(f.path))
            assert decoded.video_frames > 0 and not decoded.errors

        # The app is told, in its dialect, as for any failure.
        with world.c.uow() as uow:
            callbacks = uow.delivery.callbacks(task_id)
        stopped = [json.loads(cb.body) for cb, _ in callbacks if cb.event == "task_stopped"]
        assert len(stopped) == 1
        assert stopped[0]["context"]["reason"] == END_RECORDER_FAILED
    finally:
        world.c.engine.dispose()
