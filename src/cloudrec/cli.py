"""The ``cloudrec`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from cloudrec import __version__
from cloudrec.cli_tasks import add_parsers as add_task_parsers
from cloudrec.cluster.node import add_parser as add_worker_parser
from cloudrec.config import EXECUTORS, Settings, SettingsError, load_settings, node_name
from cloudrec.core.errors import CloudrecError
from cloudrec.logs import setup_logging


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        help="database, spool and backup store (env CLOUDREC_DATA_DIR; default ./cloudrec-data)",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="TOML settings file (env CLOUDREC_CONFIG; "
        "default <data-dir>/cloudrec.toml if present)",
    )
    p.add_argument(
        "--database-url",
        help="SQLAlchemy URL (env CLOUDREC_DATABASE_URL; default SQLite in the data dir)",
    )
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (env CLOUDREC_LOG_LEVEL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudrec",
        description="Self-hostable cloud recording for live audio/video rooms. Settings: "
        "flags over CLOUDREC_* environment variables over a TOML file over defaults.",
    )
    parser.add_argument("--version", action="version", version=f"cloudrec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the HTTP API and the embedded RTMP ingest",
        description="Run the HTTP API and the embedded RTMP ingest until SIGTERM or SIGINT. "
        "Recordings run in warm recorder-host processes it starts, up to 16 each "
        "(CLOUDREC_EXECUTOR=process: a process per recording).",
    )
    serve.add_argument("--host", help="address to listen on (env CLOUDREC_HOST; default 127.0.0.1)")
    serve.add_argument(
        "--http-port", type=int, help="HTTP port (env CLOUDREC_HTTP_PORT; default 8080)"
    )
    serve.add_argument(
        "--rtmp-port", type=int, help="RTMP port (env CLOUDREC_RTMP_PORT; default 1935)"
    )
    serve.add_argument(
        "--tls-cert-file", help="PEM certificate for HTTPS (env CLOUDREC_TLS_CERT_FILE)"
    )
    serve.add_argument("--tls-key-file", help="its PEM key (env CLOUDREC_TLS_KEY_FILE)")
    serve.add_argument(
        "--executor",
        choices=EXECUTORS,
        help="how recordings run (env CLOUDREC_EXECUTOR; default host; ray: docs/cluster.md)",
    )
    serve.add_argument(
        "--ray-address",
        help="the Ray cluster's HOST:PORT, executor ray (env CLOUDREC_RAY_ADDRESS; default auto)",
    )
    _common(serve)

    migrate = sub.add_parser("migrate", help="apply database migrations and exit")
    _common(migrate)

    app = sub.add_parser("app", help="manage apps and their credentials")
    app_sub = app.add_subparsers(dest="app_command", required=True, metavar="ACTION")
    create = app_sub.add_parser("create", help="create an app and print its secrets")
    create.add_argument("--app-id", type=int, required=True)
    create.add_argument("--json", action="store_true", help="print JSON")
    _common(create)
    lst = app_sub.add_parser("list", help="list apps (no secrets)")
    lst.add_argument("--json", action="store_true", help="print JSON")
    _common(lst)
    rotate = app_sub.add_parser("rotate-secret", help="replace one of an app's secrets")
    rotate.add_argument("--app-id", type=int, required=True)
    rotate.add_argument(
        "--kind",
        choices=["server", "callback", "publish"],
        default="server",
        help="which secret (default server)",
    )
    rotate.add_argument("--json", action="store_true", help="print JSON")
    _common(rotate)
    callback = app_sub.add_parser(
        "set-callback-url",
        help="set the app's callback URL (Agora's notifications: docs/agora.md)",
        description="Where the callbacks go of tasks whose requests name no URL (the Agora "
        "dialect's notifications), signed with the app's callback secret. Tasks started "
        "afterwards use it.",
    )
    callback.add_argument("--app-id", type=int, required=True)
    callback.add_argument("--url", required=True, help='http(s) URL; "" for none')
    callback.add_argument("--json", action="store_true", help="print JSON")
    _common(callback)
    url = app_sub.add_parser("publish-url", help="print an RTMP publish URL with a token")
    url.add_argument("--app-id", type=int, required=True)
    url.add_argument("--room", required=True)
    url.add_argument("--stream", required=True)
    url.add_argument("--uid", help="user id (default: the stream id)")
    url.add_argument("--ttl", type=int, help="token lifetime in seconds (default 86400)")
    url.add_argument("--rtmp-port", type=int, help="RTMP port in the URL (default: the setting)")
    url.add_argument("--host", help="host in the URL (default: rtmp_public_host or host)")
    _common(url)

    add_task_parsers(sub, _common)
    add_worker_parser(sub)

    run_task = sub.add_parser("run-task")  # the per-task worker; started by the service
    run_task.add_argument("--attempt", type=int, default=1)
    run_task.add_argument("task_id")
    _common(run_task)
    host = sub.add_parser("recorder-host")  # a warm process running many tasks' workers
    _common(host)
    api = sub.add_parser("api-worker")  # an HTTP API process of serve's, on its socket
    api.add_argument("--fd", type=int, required=True)
    api.add_argument("--parent", type=int, required=True)
    api.add_argument("--starts", type=int, required=True)
    _common(api)
    # Hide the worker entry points from --help: users never run them themselves.
    hidden = ("run-task", "recorder-host", "api-worker")
    sub._choices_actions = [a for a in sub._choices_actions if a.dest not in hidden]
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    flags = {
        name: getattr(args, name, None)
        for name in (
            "host",
            "http_port",
            "rtmp_port",
            "data_dir",
            "database_url",
            "log_level",
            "tls_cert_file",
            "tls_key_file",
            "executor",
            "ray_address",
        )
    }
    return load_settings(flags, config_file=args.config)


def _print(obj: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, indent=None))
    elif isinstance(obj, list):
        for item in obj:
            print("  ".join(f"{k}={v}" for k, v in item.items()))
    else:
        for k, v in obj.items():
            print(f"{k}: {v}")


def _run(args: argparse.Namespace) -> int:
    from cloudrec.bootstrap import bootstrap

    if args.command == "worker":
        from cloudrec.cluster.node import run as run_node

        return run_node(args)

    settings = _settings(args)
    setup_logging(settings.log_level, settings.log_format)
    if args.command == "api-worker":
        from cloudrec.api_processes import run_api_worker

        return run_api_worker(settings, args.fd, args.parent, args.starts)
    # The service migrated the database before it started any worker.
    container = bootstrap(settings, migrate=args.command not in ("run-task", "recorder-host"))
    if args.command == "serve":
        from cloudrec.serve import AlreadyServingError, serve

        try:
            asyncio.run(serve(container))
        except (AlreadyServingError, OSError) as exc:
            print(f"cloudrec serve: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "migrate":
        print(f"database at head: {settings.database.split('@')[-1]}")
        return 0
    if args.command == "recorder-host":
        from cloudrec.media.recorder.host import main as host_main

        return host_main(
            container.uow, container.clock, settings, container.watch, container.callbacks
        )
    if args.command == "run-task":
        from cloudrec.core.control import TaskControl
        from cloudrec.media.recorder.worker import TaskWorker

        control = TaskControl(
            container.uow,
            container.clock,
            args.task_id,
            args.attempt,
            watch=container.watch,
            callbacks=container.callbacks,
            node=node_name(settings),
        )
        TaskWorker(control, settings).run()
        return 0
    if args.command in ("task", "room"):
        from cloudrec.cli_tasks import run

        return run(args, container)
    if args.app_command == "create":
        _print(container.apps.create(args.app_id).credentials(), args.json)
    elif args.app_command == "list":
        _print([a.public_view() for a in container.apps.list()], args.json)
    elif args.app_command == "rotate-secret":
        _print(container.apps.rotate_secret(args.app_id, args.kind).credentials(), args.json)
    elif args.app_command == "set-callback-url":
        _print(container.apps.set_callback_url(args.app_id, args.url).public_view(), args.json)
    elif args.app_command == "publish-url":
        ttl = args.ttl or settings.publish_token_ttl_s
        token = container.apps.publish_token(args.app_id, args.room, args.stream, ttl)
        query = {"uid": args.uid} if args.uid else {}
        query["token"] = token
        host = args.host or settings.public_rtmp_host
        port = args.rtmp_port or settings.rtmp_port
        print(f"rtmp://{host}:{port}/{args.app_id}/{args.room}/{args.stream}?{urlencode(query)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (SettingsError, CloudrecError) as exc:
        message = exc.message if isinstance(exc, CloudrecError) else str(exc)
        print(f"cloudrec: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
