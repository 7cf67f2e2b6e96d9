"""``cloudrec serve``: the embedded RTMP ingest, the reconciler and the delivery threads, and
the HTTP API in processes of its own (``api_processes``; 0 runs it on the ingest's event loop
as before: :mod:`cloudrec.api_processes`).

One ``serve`` per data directory: a second one is refused before it touches anything (a lock
file), and the ports are bound before stale streams of a previous run are closed, so that a
second service on the same database (another data directory) that cannot bind dies without
disturbing the first one's streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import ssl
import threading
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import uvicorn

from cloudrec.api.app import create_app
from cloudrec.api_processes import ApiProcesses, answer_starts, write_ingest_stats
from cloudrec.bootstrap import Container, EmbeddedIngestGate
from cloudrec.config import Settings, node_files
from cloudrec.core.reconcile import FileFinaliser, Reconciler, RestartPolicy
from cloudrec.core.service import RoomService
from cloudrec.core.tasks import RecordedFile
from cloudrec.media.ingest.limits import IngestLimits
from cloudrec.media.ingest.server import RtmpServer
from cloudrec.media.recorder.remux import probe_file

log = logging.getLogger("cloudrec.serve")


RECONCILE_S = 1.0


async def _reconcile(reconciler: Reconciler) -> None:
    """Move every unfinished task forward whose worker is gone (in a thread: db + probe)."""
    while True:
        try:
            for line in await asyncio.to_thread(reconciler.run_once):
                log.info("reconcile.acted", extra={"fields": {"action": line}})
        except Exception:
            log.exception("reconcile.error")
        await asyncio.sleep(RECONCILE_S)


async def _beat(
    rooms: RoomService,
    every_s: float,
    thread: ThreadPoolExecutor,
    gate: EmbeddedIngestGate,
    rtmp: RtmpServer,
) -> None:
    """This ingest node is alive (its streams stay its own), and the streams of one that has
    stopped beating end; on a thread of its own, so that slow starts or reconciler rounds in
    the shared pool cannot hold a beat back past the lease.  After each beat, the publishers
    still connected here whose streams another node ended (this one stalled past its lease)
    are live here again (:meth:`EmbeddedIngestGate.readopt`)."""
    loop = asyncio.get_running_loop()
    readopting: asyncio.Task[None] | None = None
    while True:
        await asyncio.sleep(every_s)
        try:
            ended = await loop.run_in_executor(thread, rooms.beat)
            if ended:
                log.info("streams.node_lost", extra={"fields": {"ended": ended}})
        except Exception:
            log.exception("beat.error")
        if readopting is None or readopting.done():  # beside the beats: never holds one back
            readopting = asyncio.create_task(_readopt(gate, rtmp))


async def _readopt(gate: EmbeddedIngestGate, rtmp: RtmpServer) -> None:
    try:
        again = await gate.readopt(rtmp)
        if again:
            log.warning("streams.readopted", extra={"fields": {"streams": again}})
    except Exception:
        log.exception("readopt.error")


DELIVER_S = 0.5
EXPIRE_EVERY = 120  # delivery rounds: the kept files' retention is looked at once a minute
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
        rounds = 0
        while not stop.wait(DELIVER_S):
            rounds += 1
            try:
                if rounds % EXPIRE_EVERY == 1:
                    d.expire_kept()
                d.renew_claims()
                d.register_segments()
                for file in d.files_due():
                    fid = file.id or 0
                    submit(uploads, ("file", fid), partial(d.deliver_file, fid))
                for cb in d.callbacks_due():
                    submit(callbacks, ("callback", cb.id or 0), partial(d.send, cb))
                d.complete_tasks()
            except Exception:
                log.exception("delivery.error")


async def _watch_api(
    api: ApiProcesses, rtmp: RtmpServer, data_dir: Path, stopping: asyncio.Event
) -> None:
    """Until told to stop: every second, restart a dead API process and publish the
    ingest's figures for their ``/metrics``."""
    while not stopping.is_set():
        await asyncio.to_thread(api.watch)  # a respawn forks: never on the ingest's loop
        received, connections = rtmp.stats()
        await asyncio.to_thread(write_ingest_stats, data_dir, received, connections)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), 1.0)


def finaliser(settings: Settings) -> FileFinaliser:
    """How the reconciler keeps a lost attempt's file: cut back to its last whole fragment and
    probed; a file another node wrote (its disk may be gone with the machine) is first
    assembled from what the node shipped to the fragment store, into this service's spool."""
    remote = node_files(settings)

    def finalise(file: RecordedFile) -> dict[str, object]:
        path, fields = Path(file.path), dict[str, object]()
        local = remote.fetch(file) if remote is not None else None
        if local is not None:  # what was shipped stays until the row names the copy
            path, fields["path"] = Path(local), local
        return fields | probe_file(path, file.format)

    return finalise


class _Server(uvicorn.Server):
    """uvicorn, minus its own signal handling: ``serve`` owns SIGTERM/SIGINT so that the
    ingest is closed after the HTTP side, and no signal is re-raised at the end."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class AlreadyServingError(RuntimeError):
    """Another ``cloudrec serve`` holds this data directory."""


def _lock_data_dir(data_dir: Path) -> int:
    """Hold ``serve.lock`` in the data directory for as long as this process lives (the
    kernel lets go of it when the process dies, however it dies)."""
    path = data_dir / "serve.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise AlreadyServingError(
            f"another cloudrec serve (pid {holder}) runs on data dir {data_dir.resolve()}"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    # Listening from now on: connections wait in the backlog until an API process accepts.
    sock.listen(2048)
    return sock


async def serve(container: Container) -> None:
    """Run until SIGTERM or SIGINT; then disconnect publishers and players, record their
    unpublish, and stop the HTTP server.  Workers are left running: they are adopted (by
    their leases) when the service comes back."""
    s = container.settings
    lock = _lock_data_dir(s.data_dir)
    if s.tls_cert_file:  # a certificate that does not load is refused now, not per process
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            s.tls_cert_file, s.tls_key_file
        )
    http_socket = _bind(s.host, s.http_port)
    limits = IngestLimits.from_settings(s)
    gate = EmbeddedIngestGate(container)
    rtmp = RtmpServer(gate, s.host, s.rtmp_port, limits=limits)
    beat_thread = ThreadPoolExecutor(1, thread_name_prefix="beat")
    await asyncio.get_running_loop().run_in_executor(beat_thread, container.rooms.beat)
    await rtmp.start()
    # Only now that this service owns the ports: the streams a previous one left open.
    await asyncio.to_thread(
        container.rooms.close_stale, EmbeddedIngestGate.SOURCE, "service restarted"
    )
    beating = asyncio.create_task(
        _beat(container.rooms, s.ingest_lease_s / 5, beat_thread, gate, rtmp)
    )
    loop = asyncio.get_running_loop()
    server: _Server | None = None
    api: ApiProcesses | None = None
    if s.api_processes == 0:
        app = create_app(container)
        app.state.metrics.watch_ingest(rtmp)
        config = uvicorn.Config(
            app,
            host=s.host,
            port=s.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            ssl_certfile=s.tls_cert_file or None,
            ssl_keyfile=s.tls_key_file or None,
        )
        server = _Server(config)
    else:
        api = ApiProcesses(s, http_socket, s.api_processes)
        answering: set[asyncio.Task[None]] = set()

        def _answering(channel: socket.socket) -> None:
            job = asyncio.create_task(answer_starts(channel, container.executor))
            answering.add(job)
            job.add_done_callback(answering.discard)

        def _answer(channel: socket.socket) -> None:
            # A respawn happens in a thread (_watch_api): its channel is answered on the loop.
            loop.call_soon_threadsafe(_answering, channel)

        api.on_channel = _answer
        api.start()
    stop_reason: list[str] = []
    stopping = asyncio.Event()

    def _stop(sig: signal.Signals) -> None:
        stop_reason.append(sig.name)
        stopping.set()
        if server is not None:
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
    warm = getattr(container.executor, "warm", None)
    if warm is not None:
        await asyncio.to_thread(warm)  # a recorder host ready before the first start
    reconciler = Reconciler(
        container.uow,
        container.clock,
        container.executor,
        finaliser(s),
        RestartPolicy(max_restarts=s.max_worker_restarts),
        callbacks=container.callbacks,
    )
    supervisor = asyncio.create_task(_reconcile(reconciler))
    stop_delivery = threading.Event()
    delivery = threading.Thread(
        target=_deliver_forever, args=(container, stop_delivery), name="delivery", daemon=True
    )
    delivery.start()
    try:
        if server is not None:
            await server.serve(sockets=[http_socket])
        else:
            assert api is not None
            await _watch_api(api, rtmp, s.data_dir, stopping)
    finally:
        if api is not None:
            await asyncio.to_thread(api.stop)
        supervisor.cancel()
        stop_delivery.set()
        await asyncio.to_thread(delivery.join, 30)
        await rtmp.close()
        beating.cancel()  # only now: the publishers were this node's until they were cut off
        beat_thread.shutdown(wait=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        container.engine.dispose()
        os.close(lock)
        log.info("service.stopped", extra={"fields": {"signal": ",".join(stop_reason)}})
