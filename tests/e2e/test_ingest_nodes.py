"""Two ingest nodes on one PostgreSQL, each a real ``cloudrec serve`` with its own data dir and
node name, publishers on both (issue 14, "Ingest nodes"): a node that starts again ends only its
own streams; a node killed with -9 loses its streams on the other within its lease, and its
publisher reconnecting to the other node is recorded on by the same task."""

from __future__ import annotations

import itertools
import os
import signal
import time

import av
import httpx
import pytest
from cryptography.fernet import Fernet

from tests.conftest import POSTGRES_URL
from tests.service import Service, descendants, ffmpeg_publish

pytestmark = [
    pytest.mark.skipif(
        not POSTGRES_URL, reason="ingest nodes share PostgreSQL: set CLOUDREC_TEST_POSTGRES_URL"
    ),
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

APP, ROOM = 77, "hall"
LEASE_S = 10  # the default ingest_lease_s; nodes beat every fifth of it


def kill_machine(svc: Service) -> None:
    """kill -9 of the node's serve and everything it started, as if its machine were gone."""
    assert svc.proc is not None
    everyone = [svc.proc.pid, *descendants(svc.proc.pid)]
    for pid in everyone:
        os.kill(pid, signal.SIGKILL)
    svc.proc.wait(10)


def nodes_of(svc: Service, app: dict) -> dict[str, str | None]:
    return {s["stream_id"]: s["node"] for s in svc.streams(app, ROOM)}


def wait_nodes(svc: Service, app: dict, want: dict, timeout_s: float) -> float:
    """Seconds until the room's live streams are ``want`` (stream id -> node)."""
    start = time.monotonic()
    while (seen := nodes_of(svc, app)) != want:
        assert time.monotonic() - start < timeout_s, seen
        time.sleep(0.2)
    return time.monotonic() - start


def test_a_node_ends_only_its_own_streams_and_a_dead_nodes_publisher_is_recorded_elsewhere(
    tmp_path, database_url, monkeypatch
):
    monkeypatch.setenv("CLOUDREC_DATABASE_URL", database_url)  # for the cli, as for the nodes
    monkeypatch.setenv("CLOUDREC_SECRET_KEY", Fernet.generate_key().decode())
    a, b = (Service(tmp_path / name, env={"CLOUDREC_NODE_NAME": f"ingest-{name}"}) for name in "ab")
    for svc in (a, b):
        svc.data_dir.mkdir()
        svc.start()
    app = a.create_app(APP)
    auth = (str(APP), app["server_secret"])
    pubs = [ffmpeg_publish(b.publish_url(APP, ROOM, "bob", "--uid", "bob"), 120)]
    try:
        pubs.append(ffmpeg_publish(a.publish_url(APP, ROOM, "ann", "--uid", "ann"), 120))
        wait_nodes(a, app, {"ann": "ingest-a", "bob": "ingest-b"}, 20)
        # A restarts (its publisher is cut off with it): B's stream is B's, and stays live.
        assert a.stop() == 0
        a.start()
        assert nodes_of(a, app) == {"bob": "ingest-b"}
        pubs.append(ffmpeg_publish(a.publish_url(APP, ROOM, "ann", "--uid", "ann"), 120))
        wait_nodes(a, app, {"ann": "ingest-a", "bob": "ingest-b"}, 20)

        base = f"{a.http}/v1/apps/{APP}/tasks"
        r = httpx.post(base, json={"room_id": ROOM}, auth=auth, timeout=10)
        assert r.status_code == 201, r.text
        task_id = r.json()["task_id"]
        a.wait_task(app, task_id, lambda t: len(t["files"]) == 2)
        time.sleep(4)

        kill_machine(b)  # bob's machine is gone: its ingest, its API, its publisher's link
        ended_in = wait_nodes(a, app, {"ann": "ingest-a"}, LEASE_S + 8)
        assert ended_in > LEASE_S - 3  # not before B's lease ran out (B beat <= 2 s before)
        ends = [e for e in a.log_events() if e.get("event") == "stream.unpublished"]
        assert [(e.get("stream_id"), e.get("detail")) for e in ends][-1:] == [
            ("bob", "ingest node ingest-b lost")
        ], ends
        # bob's publisher reconnects to A: accepted at once, and the task records it again
        pubs.append(ffmpeg_publish(a.publish_url(APP, ROOM, "bob", "--uid", "bob"), 120))
        wait_nodes(a, app, {"ann": "ingest-a", "bob": "ingest-a"}, 15)
        a.wait_task(app, task_id, lambda t: len(t["files"]) == 3)
        time.sleep(4)
        assert httpx.post(f"{base}/{task_id}/stop", auth=auth, timeout=10).status_code == 200
        task = a.wait_task(app, task_id, lambda t: t["state"] in ("completed", "failed"))
        assert task["state"] == "completed", task
        files = sorted(task["files"], key=lambda f: (f["stream_id"], f["begin_ms"]))
        assert [f["stream_id"] for f in files] == ["ann", "bob", "bob"]
        assert all(f["status"] == "recorded" for f in files), files
        first, second = files[1:]
        assert second["begin_ms"] >= first["begin_ms"] + first["duration_ms"]
        frames = {}
        for f in files:  # each file plays: bob's from B's ingest, then from A's
            path = tmp_path / f["name"].replace("/", "_")
            got = httpx.get(f"{base}/{task_id}/files/{f['name']}", auth=auth, timeout=30)
            path.write_bytes(got.content)
            with av.open(str(path)) as c:
                frames[f["name"]] = sum(1 for _ in c.decode(c.streams.video[0]))
        assert min(frames.values()) >= 2 * 25, frames  # at least ~2 s of 25 fps each
    finally:
        for pub in pubs:
            pub.kill()
            pub.wait()
        if b.proc is not None and b.proc.poll() is None:
            b.stop()
        assert a.stop() == 0


def test_a_mix_shows_a_dead_nodes_publisher_again_once_it_reconnects_elsewhere_at_once(
    tmp_path, database_url, monkeypatch
):
    """Regression (issue 14, "recordings follow", for a mix): bob publishes blue on B; B is
    killed with -9; bob's publisher retries on A (refused as live until B's lease runs out,
    then taken) with green.  The mixer replaced an ended input reader only for the same URL:
    while B's row was still live it re-read B's dead address (refused, ended), and once bob
    was on A the ended reader's URL was B's, so bob's region never showed A's stream (this
    test failed on that code, at the green check)."""
    from tests.e2e.test_record_mixed import colour_at, colour_publish, frames_of

    monkeypatch.setenv("CLOUDREC_DATABASE_URL", database_url)
    monkeypatch.setenv("CLOUDREC_SECRET_KEY", Fernet.generate_key().decode())
    a, b = (Service(tmp_path / name, env={"CLOUDREC_NODE_NAME": f"ingest-{name}"}) for name in "ab")
    for svc in (a, b):
        svc.data_dir.mkdir()
        svc.start()
    app = a.create_app(APP)
    auth = (str(APP), app["server_secret"])
    pubs = [
        colour_publish(a.publish_url(APP, ROOM, "ann", "--uid", "ann"), "red", 500),
        colour_publish(b.publish_url(APP, ROOM, "bob", "--uid", "bob"), "blue", 700),
    ]
    try:
        wait_nodes(a, app, {"ann": "ingest-a", "bob": "ingest-b"}, 20)
        base = f"{a.http}/v1/apps/{APP}/tasks"
        mix = {"width": 640, "height": 360, "fps": 15, "layout": "grid"}
        body = {"room_id": ROOM, "mode": "mixed", "mix": mix}
        r = httpx.post(base, json=body, auth=auth, timeout=10)
        assert r.status_code == 201, r.text
        task_id = r.json()["task_id"]
        a.wait_task(app, task_id, lambda t: t["state"] == "recording")
        time.sleep(4)
        kill_machine(b)
        deadline = time.monotonic() + LEASE_S + 10
        while nodes_of(a, app) != {"ann": "ingest-a", "bob": "ingest-a"}:  # a publisher retrying
            assert time.monotonic() < deadline, nodes_of(a, app)
            if pubs[-1].poll() is not None or len(pubs) == 2:
                url = a.publish_url(APP, ROOM, "bob", "--uid", "bob")
                pubs.append(colour_publish(url, "lime", 900))
            time.sleep(0.5)
        time.sleep(6)
        assert httpx.post(f"{base}/{task_id}/stop", auth=auth, timeout=10).status_code == 200
        task = a.wait_task(app, task_id, lambda t: t["state"] in ("completed", "failed"))
        assert task["state"] == "completed", task
        [f] = [f for f in task["files"] if f["format"] == "mp4"]
        path = tmp_path / "mix.mp4"
        got = httpx.get(f"{base}/{task_id}/files/{f['name']}", auth=auth, timeout=30)
        path.write_bytes(got.content)
        frames = frames_of(path)
    finally:
        for pub in pubs:
            pub.kill()
            pub.wait()
        if b.proc is not None and b.proc.poll() is None:
            b.stop()
        assert a.stop() == 0

    def cells(rgb) -> set[str]:  # the grid of two: left and right halves
        found = {colour_at(rgb, x, 180) for x in (160, 480)}
        r, g, bl = (int(v) for v in rgb[180, 160 if "red" not in found else 480])
        return found | ({"green"} if g > 180 and r < 80 and bl < 80 else set())

    assert any(cells(fr) >= {"red", "blue"} for fr in frames[: len(frames) // 2])
    assert all(cells(fr) >= {"red", "green"} for fr in frames[-15:]), [
        cells(fr) for fr in frames[-15:]
    ]


def freeze(svc: Service, sig: signal.Signals) -> None:
    """SIGSTOP or SIGCONT to the node's serve and everything it started."""
    assert svc.proc is not None
    for pid in [svc.proc.pid, *descendants(svc.proc.pid)]:
        os.kill(pid, sig)


def test_a_frozen_nodes_publisher_is_live_again_and_recorded_once_the_node_wakes(
    tmp_path, database_url, monkeypatch
):
    """Regression (issue 14): node B frozen (SIGSTOP) past its lease: A ends B's streams, as
    for a dead node.  B's publisher is still connected when B wakes (its data waited in the
    kernel), but its stream's row stayed ended: no recording saw it again while it went on
    publishing.  Now B's next beat finds the publisher's stream no longer its own and opens
    it again, and the task on A records it in a new file; the old session's recorder, whose
    retry reconnected to B once it woke, stops where the new session begins instead of
    recording the same stream a second time (overlapping parts, seen while building this)."""
    monkeypatch.setenv("CLOUDREC_DATABASE_URL", database_url)
    monkeypatch.setenv("CLOUDREC_SECRET_KEY", Fernet.generate_key().decode())
    a, b = (Service(tmp_path / name, env={"CLOUDREC_NODE_NAME": f"ingest-{name}"}) for name in "ab")
    for svc in (a, b):
        svc.data_dir.mkdir()
        svc.start()
    app = a.create_app(APP)
    auth = (str(APP), app["server_secret"])
    pub = ffmpeg_publish(b.publish_url(APP, ROOM, "bob", "--uid", "bob"), 120)
    try:
        wait_nodes(a, app, {"bob": "ingest-b"}, 20)
        base = f"{a.http}/v1/apps/{APP}/tasks"
        r = httpx.post(base, json={"room_id": ROOM}, auth=auth, timeout=10)
        assert r.status_code == 201, r.text
        task_id = r.json()["task_id"]
        a.wait_task(app, task_id, lambda t: len(t["files"]) == 1)
        time.sleep(3)
        freeze(b, signal.SIGSTOP)
        try:
            wait_nodes(a, app, {}, LEASE_S + 8)  # A ended B's stream: B looks dead
            time.sleep(2)
        finally:
            woke, woke_ms = time.monotonic(), time.time() * 1000
            freeze(b, signal.SIGCONT)
        wait_nodes(a, app, {"bob": "ingest-b"}, 15)
        assert pub.poll() is None, "the publisher was dropped"
        # The new session's file: from the backlog's keyframe nearest B's wake (one GOP, 1 s,
        # before at most), where the old session's parts are of before the freeze.
        since = woke_ms - 4000
        a.wait_task(app, task_id, lambda t: any(f["begin_ms"] > since for f in t["files"]))
        again_in = time.monotonic() - woke
        time.sleep(4)
        assert httpx.post(f"{base}/{task_id}/stop", auth=auth, timeout=10).status_code == 200
        task = a.wait_task(app, task_id, lambda t: t["state"] in ("completed", "failed"))
        paths = {}
        for f in task["files"]:
            paths[f["name"]] = path = tmp_path / f["name"].replace("/", "_")
            got = httpx.get(f"{base}/{task_id}/files/{f['name']}", auth=auth, timeout=30)
            path.write_bytes(got.content)
    finally:
        pub.kill()
        pub.wait()
        for svc in (a, b):
            if svc.proc is not None and svc.proc.poll() is None:
                svc.stop()
    assert task["state"] == "completed", task
    assert again_in < 10, again_in
    files = sorted(task["files"], key=lambda f: f["begin_ms"])
    assert all(f["status"] == "recorded" for f in files), files
    # Parts of one stream that overlap by a GOP (1 s) at most: the old session's recorder may
    # write one more part (after its retry reconnected to the woken B) but stops where the new
    # session begins; the new session's file begins at the backlog keyframe nearest that.
    for before, after in itertools.pairwise(files):
        assert after["begin_ms"] >= before["begin_ms"] + before["duration_ms"] - 1100, files
    assert files[-1]["begin_ms"] > since and len(files) in (2, 3), files
    ends = [e for e in a.log_events() if e.get("event") == "stream.unpublished"]
    assert ("bob", "ingest node ingest-b lost") in [
        (e.get("stream_id"), e.get("detail")) for e in ends
    ]
    for f in files:  # each plays; the first (before the freeze) and the last (after) 2 s or more
        with av.open(str(paths[f["name"]])) as c:
            frames = sum(1 for _ in c.decode(c.streams.video[0]))
        assert frames >= (2 * 25 if f in (files[0], files[-1]) else 1), (f, frames)
