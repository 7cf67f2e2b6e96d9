"""``cloudrec task list|show|stop`` and ``cloudrec room list``: the recordings and rooms of an
app, read from the service's database (run them where ``cloudrec serve`` runs, with the same
data directory or ``--database-url``).  A table for people, ``--json`` for scripts."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudrec.bootstrap import Container

Common = Callable[[argparse.ArgumentParser], None]


def add_parsers(sub: Any, common: Common) -> None:
    task = sub.add_parser("task", help="list, show and stop an app's recordings")
    task_sub = task.add_subparsers(dest="task_command", required=True, metavar="ACTION")
    lst = task_sub.add_parser("list", help="an app's recordings, newest first")
    lst.add_argument("--app-id", type=int, required=True)
    lst.add_argument("--room", help="only this room's")
    lst.add_argument("--ended", action="store_true", help="ended ones (default: running)")
    lst.add_argument("--hours", type=int, default=24, help="created in the last hours (24)")
    lst.add_argument("--limit", type=int, default=50, help="at most this many (50)")
    show = task_sub.add_parser("show", help="one recording: state, files, callbacks, events")
    stop = task_sub.add_parser("stop", help="stop a recording")
    stop.add_argument(
        "--wait",
        action="store_true",
        help="wait until its files are delivered, with a progress line",
    )
    stop.add_argument("--timeout", type=float, default=600, help="seconds --wait waits (600)")
    for p in (show, stop):
        p.add_argument("--app-id", type=int, required=True)
        p.add_argument("task_id")
    room = sub.add_parser("room", help="an app's rooms and their live streams")
    room_sub = room.add_subparsers(dest="room_command", required=True, metavar="ACTION")
    rooms = room_sub.add_parser("list", help="rooms with a live stream, and their streams")
    rooms.add_argument("--app-id", type=int, required=True)
    for p in (lst, show, stop, rooms):
        p.add_argument("--json", action="store_true", help="print JSON")
        common(p)


def task_view(c: Container, task: Any) -> dict[str, Any]:
    from cloudrec.api.tasks import task_view as view  # the API's own view (imports FastAPI)

    return view(c, task)


def run(args: argparse.Namespace, c: Container) -> int:
    if args.command == "room":
        return _rooms(args, c)
    if args.task_command == "list":
        return _list(args, c)
    if args.task_command == "show":
        view = task_view(c, c.tasks.get(args.app_id, args.task_id))
        print(json.dumps(view) if args.json else _describe(view))
        return 0
    c.tasks.stop(args.app_id, args.task_id)
    if not args.wait:
        view = task_view(c, c.tasks.get(args.app_id, args.task_id))
        print(json.dumps(view) if args.json else f"{args.task_id}: stopping")
        return 0
    return _wait(args, c)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    )


def _list(args: argparse.Namespace, c: Container) -> int:
    until = datetime.now(UTC) + timedelta(minutes=1)
    since = until - timedelta(hours=args.hours)
    total, tasks = c.tasks.page(
        args.app_id, args.room, not args.ended, since, until, 0, max(1, args.limit)
    )
    if args.json:
        print(json.dumps({"total": total, "tasks": [task_view(c, t) for t in tasks]}))
        return 0
    rows = [
        [
            t.task_id,
            t.spec.room_id,
            t.spec.mode.value,
            t.state.value,
            t.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            t.end_reason or "",
        ]
        for t in tasks
    ]
    print(table(rows, ["TASK", "ROOM", "MODE", "STATE", "CREATED (UTC)", "END REASON"]))
    if total > len(tasks):
        print(f"({len(tasks)} of {total}; --limit for more)")
    return 0


def _describe(view: dict[str, Any]) -> str:
    lines = [
        f"task {view['task_id']}  room {view['room_id']}  {view['mode']}",
        f"state {view['state']} (desired {view['desired']})"
        + (f"  ended: {view['end_reason']}" if view["end_reason"] else "")
        + (f"  error: {view['error']}" if view["error"] else ""),
    ]
    files = [
        [
            f["name"],
            f["status"],
            str(f["size"] or 0),
            f"{(f['duration_ms'] or 0) / 1000:.1f}",
            f["url"] or "",
        ]
        for f in view["files"]
    ]
    if files:
        lines += ["", table(files, ["FILE", "STATUS", "BYTES", "SECONDS", "URL"])]
    callbacks = [[cb["event"], cb["status"], str(len(cb["attempts"]))] for cb in view["callbacks"]]
    if callbacks:
        lines += ["", table(callbacks, ["CALLBACK", "STATUS", "ATTEMPTS"])]
    lines += [
        "",
        table(
            [[e["at"], e["kind"], e["detail"]] for e in view["events"]], ["AT", "EVENT", "DETAIL"]
        ),
    ]
    return "\n".join(lines)


def _wait(args: argparse.Namespace, c: Container) -> int:
    """Until the task has ended: a progress line on stderr; the task's outcome as the exit
    status (0 completed, 1 failed or timed out)."""
    deadline = time.monotonic() + args.timeout
    while True:
        view = task_view(c, c.tasks.get(args.app_id, args.task_id))
        counts = Counter(f["status"] for f in view["files"])
        files = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none yet"
        line = f"{args.task_id}: {view['state']}; files: {files}"
        print(f"\r{line}", end="", file=sys.stderr, flush=True)
        if view["state"] in ("completed", "failed"):
            print(file=sys.stderr)
            print(json.dumps(view) if args.json else _describe(view))
            return 0 if view["state"] == "completed" else 1
        if time.monotonic() > deadline:
            print(
                f"\n{args.task_id}: still {view['state']} after {args.timeout:g} s", file=sys.stderr
            )
            return 1
        time.sleep(0.5)


def _rooms(args: argparse.Namespace, c: Container) -> int:
    from cloudrec.api.rooms import stream_view

    streams = [stream_view(s) for s in c.rooms.live(args.app_id)]
    if args.json:
        print(json.dumps({"app_id": args.app_id, "streams": streams}))
        return 0
    rows = [
        [
            s["room_id"],
            s["stream_id"],
            s["user_id"] or "",
            "/".join(x for x in (s["video_codec"], s["audio_codec"]) if x),
            f"{s['width']}x{s['height']}" if s["width"] else "",
            f"{s['fps']:g}" if s["fps"] else "",
            s["started_at"][:19],
        ]
        for s in streams
    ]
    print(table(rows, ["ROOM", "STREAM", "USER", "CODECS", "SIZE", "FPS", "SINCE (UTC)"]))
    return 0
