"""``cloudrec serve``: the HTTP API and the embedded RTMP ingest on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import uvicorn

from cloudrec.api.app import create_app
from cloudrec.bootstrap import Container, EmbeddedIngestGate
from cloudrec.core.tasks import RecordedFile
from cloudrec.media.ingest.limits import IngestLimits
from cloudrec.media.ingest.server import RtmpServer
from cloudrec.media.recorder.remux import probe_file

log = logging.getLogger("cloudrec.serve")


SUPERVISE_S = 1.0


async def _supervise(container: Container) -> None:
    """Fail the tasks whose worker died, keeping what they recorded (in a thread: db + probe)."""
    while True:
        try:
            await asyncio.to_thread(container.tasks.supervise, _finalise)
        except Exception:
            log.exception("supervisor.error")
        await asyncio.sleep(SUPERVISE_S)


DELIVER_S = 0.5
UPLOAD_THREADS = 4
CALLBACK_THREADS = 4


def _deliver_forever(container: Container, stop: threading.Event) -> None:
    """Uploads and callbacks (each on its own small pool, so that a dead bucket or a
    blackholed callback URL holds up nothing else) and task completion, until ``stop``."""
    d = container.delivery
    busy: set[tuple[str, int]] = set()
    lock = threading.Lock()

    def run(key: tuple[str, int], work: Callable[[], object]) -> None:
        try:
            work()
        except Exception:
            log.exception("delivery.%s_error", key[0])
        finally:
            with lock:
                busy.discard(key)

    def submit(pool: ThreadPoolExecutor, key: tuple[str, int], work: Callable[[], object]) -> None:
        with lock:
            if key in busy:
                return
            busy.add(key)
        pool.submit(run, key, work)

    with (
        ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="upload") as uploads,
        ThreadPoolExecutor(CALLBACK_THREADS, thread_name_prefix="callback") as callbacks,
    ):
        while not stop.wait(DELIVER_S):
            try:
                d.register_segments()
                for file in d.files_due():
                    submit(uploads, ("file", file.id or 0), partial(d.deliver_file, file))
                for cb in d.callbacks_due():
                    submit(callbacks, ("callback", cb.id or 0), partial(d.send, cb))
                d.complete_tasks()
            except Exception:
                log.exception("delivery.error")


def _finalise(file: RecordedFile) -> dict[str, object]:
    return probe_file(Path(file.path), file.format)


class _Server(uvicorn.Server):
    """uvicorn, minus its own signal handling: ``serve`` owns SIGTERM/SIGINT so that the
    ingest is closed after the HTTP side, and no signal is re-raised at the end."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(container: Container) -> None:
    """Run until SIGTERM or SIGINT; then disconnect publishers and players, record their
    unpublish, and stop the HTTP server."""
    s = container.settings
    await asyncio.to_thread(
        container.rooms.close_stale, EmbeddedIngestGate.SOURCE, "service restarted"
    )
    limits = IngestLimits.from_settings(s)
    rtmp = RtmpServer(EmbeddedIngestGate(container), s.host, s.rtmp_port, limits=limits)
    await rtmp.start()
    config = uvicorn.Config(
        create_app(container),
        host=s.host,
        port=s.http_port,
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()
    stop_reason: list[str] = []

    def _stop(sig: signal.Signals) -> None:
        stop_reason.append(sig.name)
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop, sig)
    log.info(
        "service.started",
        extra={
            "fields": {
                "http": f"http://{s.host}:{s.http_port}",
                "rtmp": f"rtmp://{s.host}:{rtmp.port}",
                "data_dir": str(s.data_dir.resolve()),
            }
        },
    )
    supervisor = asyncio.create_task(_supervise(container))
    stop_delivery = threading.Event()
    delivery = threading.Thread(
        target=_deliver_forever, args=(container, stop_delivery), name="delivery", daemon=True
    )
    delivery.start()
    try:
        await server.serve()
    finally:
        supervisor.cancel()
        stop_delivery.set()
        await asyncio.to_thread(delivery.join, 30)
        await rtmp.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        container.engine.dispose()
        log.info("service.stopped", extra={"fields": {"signal": ",".join(stop_reason)}})
