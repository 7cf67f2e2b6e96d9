"""A real ``cloudrec serve`` process for end-to-end tests, driven as a user would drive it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port


def cli(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloudrec.cli", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def wait_port(host: str, port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open within {timeout_s} s")


def descendants(pid: int) -> list[int]:
    """Every process ``pid`` started, and theirs (from /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            found += [int(child), *descendants(int(child))]
    return found


@dataclass
class Service:
    data_dir: Path
    host: str = "127.0.0.1"
    http_port: int = field(default_factory=free_port)
    rtmp_port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    log_path: Path | None = None

    def start(self) -> Service:
        self.log_path = self.data_dir / f"serve-{len(list(self.data_dir.glob('serve-*')))}.log"
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cloudrec.cli",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--host",
                self.host,
                "--http-port",
                str(self.http_port),
                "--rtmp-port",
                str(self.rtmp_port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **self.env},
        )
        wait_port("127.0.0.1", self.http_port, 30.0)
        wait_port("127.0.0.1", self.rtmp_port, 30.0)
        self.wait_answering()
        return self

    def wait_answering(self, timeout_s: float = 30.0) -> None:
        """Until the HTTP API answers (its processes start after the port is bound), over
        HTTPS when the service has a certificate (not checked here: only that it answers)."""
        scheme = "https" if self.env.get("CLOUDREC_TLS_CERT_FILE") else "http"
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                url = f"{scheme}://127.0.0.1:{self.http_port}/healthz"
                if httpx.get(url, timeout=2, verify=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"cloudrec serve exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API did not answer within {timeout_s} s")
            time.sleep(0.1)

    def stop(self, timeout_s: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def create_app(self, app_id: int) -> dict[str, Any]:
        out = cli(self.data_dir, "app", "create", "--app-id", str(app_id), "--json").stdout
        creds: dict[str, Any] = json.loads(out)
        return creds

    def publish_url(self, app_id: int, room: str, stream: str, *extra: str) -> str:
        return cli(
            self.data_dir,
            "app",
            "publish-url",
            "--app-id",
            str(app_id),
            "--room",
            room,
            "--stream",
            stream,
            "--rtmp-port",
            str(self.rtmp_port),
            *extra,
        ).stdout.strip()

    def get(self, path: str, app: dict[str, Any], **kw: Any) -> httpx.Response:
        auth = (str(app["app_id"]), app["server_secret"])
        return httpx.get(self.http + path, auth=auth, timeout=10, **kw)

    def streams(self, app: dict[str, Any], room: str) -> list[dict[str, Any]]:
        r = self.get(f"/v1/apps/{app['app_id']}/rooms/{room}/streams", app)
        r.raise_for_status()
        streams: list[dict[str, Any]] = r.json()["streams"]
        return streams

    def wait_streams(
        self, app: dict[str, Any], room: str, count: int, timeout_s: float = 15.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            streams = self.streams(app, room)
            if len(streams) == count or time.monotonic() > deadline:
                return streams
            time.sleep(0.1)

    def task(self, app: dict[str, Any], record_id: str) -> dict[str, Any]:
        """The task as cloudrec's own API shows it (state, files, events, callbacks)."""
        r = self.get(f"/v1/apps/{app['app_id']}/tasks/{record_id}", app)
        r.raise_for_status()
        task: dict[str, Any] = r.json()
        return task

    def wait_task(
        self,
        app: dict[str, Any],
        record_id: str,
        check: Callable[[dict[str, Any]], bool],
        timeout_s: float = 40.0,
    ) -> dict[str, Any]:
        """The task once ``check`` holds for it; fails with the task as it was at the end."""
        deadline = time.monotonic() + timeout_s
        while True:
            task = self.task(app, record_id)
            if check(task):
                return task
            assert time.monotonic() < deadline, task
            time.sleep(0.2)

    def log_events(self) -> list[dict[str, Any]]:
        assert self.log_path is not None
        events = []
        for line in self.log_path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events


def lavfi_publish(
    url: str,
    video: str | None,
    audio: str | None,
    *,
    gop: int = 25,
    audio_args: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """Debian's ffmpeg publishing generated media (lavfi sources ``video`` and ``audio``)
    in real time, as H.264 (ultrafast, fixed GOP) and AAC."""
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re"]
    for source in (video, audio):
        if source is not None:
            args += ["-f", "lavfi", "-i", source]
    if video is not None:
        args += [
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            str(gop),
            "-pix_fmt",
            "yuv420p",
        ]
    if audio is not None:
        args += [*audio_args, "-c:a", "aac", "-b:a", "96k"]
    return subprocess.Popen(
        [*args, "-f", "flv", url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def ffmpeg_publish(
    url: str,
    seconds: float,
    *,
    size: str = "320x240",
    rate: int = 25,
    freq: int = 440,
    sample_rate: int = 44100,
    channels: int = 2,
    gop: int | None = None,
) -> subprocess.Popen[bytes]:
    """A testsrc2 picture and a sine tone: both tell publishers apart by size and pitch."""
    layout = "stereo" if channels == 2 else "mono"
    return lavfi_publish(
        url,
        f"testsrc2=size={size}:rate={rate}:duration={seconds}",
        f"sine=frequency={freq}:sample_rate={sample_rate}:duration={seconds}",
        gop=gop or rate,
        audio_args=("-af", f"aformat=channel_layouts={layout}"),
    )
