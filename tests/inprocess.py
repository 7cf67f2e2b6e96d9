"""The HTTP app in-process: ``create_app`` over a real database, driven through
``httpx.ASGITransport`` (no socket, no uvicorn), with an executor that starts no worker.

What the tests see is what a client over the network sees, status codes and bodies alike; what
they do not see is a worker: tasks stay as the API left them unless a test moves them.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from cloudrec.api.app import create_app
from cloudrec.bootstrap import Container, bootstrap, utc_now
from cloudrec.config import load_settings
from cloudrec.core.rooms import StreamMeta
from cloudrec.core.service import Clock

META = StreamMeta(
    video_codec="h264",
    audio_codec="aac",
    width=320,
    height=240,
    fps=25.0,
    audio_rate=44100,
    audio_channels=2,
)


class FakeExecutor:
    """The core's Executor port without processes: records what it was asked to start."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def start(self, task_id: str, attempt: int = 1, units: int = 1) -> str:
        self.started.append(task_id)
        return f"fake:{task_id}"

    def room_for(self, units: int) -> str | None:
        return None

    def alive(self, handle: str) -> bool | None:
        return True

    def exit_detail(self, handle: str) -> str:
        return "still running"

    def kill(self, handle: str) -> None:
        pass

    def reap(self) -> None:
        pass


class InProcess:
    """A client of the app: ``request`` answers like ``httpx.request`` does."""

    def __init__(self, container: Container, client: tuple[str, int] = ("127.0.0.1", 50000)):
        self.container = container
        self.executor: FakeExecutor = container.executor  # type: ignore[assignment]
        self.app = create_app(container)
        self.client = client
        self.secret = ""  # a test's app's server secret, when it keeps one here
        self.auth = ""  # and its Basic credentials

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=self.client)
            async with httpx.AsyncClient(transport=transport, base_url="http://cloudrec") as c:
                return await c.request(method, url, **kw)

        return asyncio.run(go())

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def publish(self, app_id: int, room: str, stream: str, uid: str) -> None:
        """A stream goes live, as the embedded ingest would announce it."""
        c = self.container
        target = c.rooms.understand(app_id, room, f"{stream}?uid={uid}")
        c.rooms.published(target, META, c.rtmp_pull_url(app_id, room, stream), "embedded", "")


def basic(app_id: int, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{app_id}:{secret}".encode()).decode()


@contextmanager
def in_process(
    database_url: str, data_dir: Path, clock: Clock = utc_now, **settings: Any
) -> Iterator[InProcess]:
    """The app over a fresh database (``database_url``), private targets allowed (callbacks
    and storage on loopback) unless ``settings`` say otherwise; ``clock`` is the services'
    (ZEGO signatures are checked against the wall clock whatever it says)."""
    values = {
        "data_dir": data_dir,
        "database_url": database_url,
        "allow_private_targets": True,
        "storage_endpoint_override": "http://127.0.0.1:9",
        **settings,
    }
    container = bootstrap(load_settings(values, env={}), clock=clock, executor=FakeExecutor())
    try:
        yield InProcess(container)
    finally:
        container.engine.dispose()
