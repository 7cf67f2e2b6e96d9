"""Typed settings: command-line flags over ``CLOUDREC_*`` environment variables over an optional
TOML file over defaults.

Every field of :class:`Settings` can be set in the TOML file (same name), by the environment
variable ``CLOUDREC_<NAME>`` (upper case) and, for the common ones, by a flag.  The TOML file is
``--config PATH`` or ``CLOUDREC_CONFIG``; without either, ``<data_dir>/cloudrec.toml`` is read when
it exists.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "CLOUDREC_"
EXECUTORS = ("process", "host", "ray")


def fragment_store(settings: Settings) -> Any:
    """The fragment store of ``settings``, or None when files are not shipped."""
    if not settings.fragment_store:
        return None
    from cloudrec.storage.fragments import FragmentStore

    return FragmentStore(
        settings.fragment_store,
        settings.fragment_store_access_key,
        settings.fragment_store_secret_key,
    )


def node_files(settings: Settings) -> Any:
    """How this service takes the files other nodes wrote (from the fragment store), or None
    when files are not shipped (every file is read where its row says)."""
    store = fragment_store(settings)
    if store is None:
        return None
    from cloudrec.storage.fragments import NodeFiles

    return NodeFiles(store, node_name(settings), settings.spool_dir)


def node_name(settings: Settings) -> str:
    """The name of the machine this process runs on, as tasks report it."""
    return (settings.node_name or socket.gethostname())[:200]  # tasks.node


class SettingsError(ValueError):
    """A setting has a value of the wrong type or out of range."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    http_port: int = 8080
    rtmp_port: int = 1935
    data_dir: Path = field(default_factory=lambda: Path("./cloudrec-data"))
    # SQLAlchemy URL; empty means SQLite in the data dir.  PostgreSQL:
    # postgresql+psycopg://user:pass@host/db
    database_url: str = ""
    # Fernet key (urlsafe base64, 32 bytes) encrypting secrets at rest.  Empty means the key
    # file <data_dir>/secret.key, created with mode 0600 on first start.
    secret_key: str = ""
    # The host recorders pull RTMP from, as seen from the workers (loopback by default).
    rtmp_pull_host: str = "127.0.0.1"
    # The host written into publish URLs printed by ``cloudrec app publish-url``.
    rtmp_public_host: str = ""
    # Publish tokens: default lifetime printed by ``app publish-url``.
    publish_token_ttl_s: int = 86400
    # A recording stops when its room has had no wanted stream for this long.
    idle_timeout_s: int = 30
    # ... and when it has run this long (24 h).
    max_task_duration_s: int = 86400
    # ZEGO notices: a room without streams this long (event 4, again every as long), and a
    # RecordStreamList stream not live this long after the start (event 6).
    room_notice_s: float = 30.0
    # How long a JoCloud resid stays valid (the document: five minutes).
    resource_ttl_s: int = 300
    # Recordings running at once per app (ZEGO's default limit).
    max_tasks_per_app: int = 200
    # Where per-app rate limits are counted: "memory://" (one process) or "redis://HOST:PORT"
    # (several API processes share the limits).
    rate_limit_storage: str = "memory://"
    # Send every storage vendor to this S3 endpoint, path-style (on-premises S3, tests):
    # e.g. http://127.0.0.1:9000.  Empty: each vendor's own endpoint rules.
    storage_endpoint_override: str = ""
    # Seconds an upload may wait for the storage to answer one request.
    storage_timeout_s: float = 20.0
    # Uploads: tries per file before it goes to the backup store, and the first wait (doubles).
    upload_attempts: int = 3
    upload_backoff_s: float = 1.0
    # Re-uploads from the backup store: first wait (doubles, at most an hour), and how long a
    # backed-up file is kept (ZEGO: 3 days) before it is given up (file status 5).
    backup_retry_s: float = 30.0
    backup_retention_s: int = 259200
    # Files of recordings without storage stay on this server this long after the recording
    # ended, then are removed (status "expired").
    kept_retention_s: int = 604800
    # Callbacks: tries per event (the first and ZEGO's two retries), first wait (doubles).
    callback_attempts: int = 3
    callback_backoff_s: float = 5.0
    callback_backoff_max_s: float = 300.0
    # Embedded RTMP ingest bounds (docs/security.md, "RTMP ingest bounds"): the smallest Set
    # Chunk Size, chunk stream ids per connection, unfinished messages at once, the largest
    # message other than a publisher's audio/video (and all unfinished bytes before a publish is
    # accepted), all unfinished bytes of an accepted publisher, seconds from accept to an
    # accepted publish/play, unread replies, connections in all and per remote address (the
    # exempt addresses, comma-separated, count only in the total: recorders pull over loopback).
    rtmp_min_chunk_size: int = 128
    rtmp_max_chunk_streams: int = 64
    rtmp_max_unfinished_messages: int = 8
    rtmp_max_command_bytes: int = 65536
    rtmp_max_buffered_bytes: int = 16777216
    rtmp_auth_timeout_s: float = 10.0
    rtmp_max_reply_backlog_bytes: int = 65536
    rtmp_max_connections: int = 512
    rtmp_max_connections_per_address: int = 16
    rtmp_connection_cap_exempt: str = "127.0.0.1,::1"
    # Shared secret for /hooks/rtmp/* from non-loopback media servers (``?secret=``).
    hook_secret: str = ""
    # The operator's sign-in to the console (every app); empty: apps sign in only.
    admin_token: str = ""
    # HTTPS: a PEM certificate (chain) and its key; both empty: plain HTTP (put a reverse
    # proxy in front for TLS, or set these).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # HTTP API processes of their own beside the ingest (0: the API in the serve process,
    # on the ingest's event loop).  More than 1 spreads requests over cores; the in-memory
    # rate limits are then per process (use Redis storage for exact ones).
    api_processes: int = 1
    # How recordings run: "host" (the default), warm recorder-host processes each running up to
    # tasks_per_host recordings in threads (docs/benchmarks.md: a sixth of the memory, a fifth
    # less CPU, no interpreter start per recording); or "process", one process per recording
    # (a native crash costs one recording; docs/reliability.md, "Recorder hosts"); or "ray",
    # each recording an actor on a Ray cluster (docs/cluster.md; ``pip install
    # 'cloudrec[cluster]'``).
    executor: str = "host"
    tasks_per_host: int = 16
    # The Ray cluster of executor "ray": the head's GCS address HOST:PORT ("auto": the cluster
    # this machine's ``ray start`` joined).
    ray_address: str = "auto"
    # This machine's name as ``GET …/tasks/{id}`` and the ``failover`` event give it (the
    # task's ``node``); empty: the host name.  ``cloudrec worker --name`` sets it for a node.
    node_name: str = ""
    # Ingest nodes: each beats every fifth of this (seconds); the live streams of one that has
    # not beaten for this long are ended by another (its publishers reconnect elsewhere;
    # docs/cluster.md, "Ingest nodes").
    ingest_lease_s: float = 10.0
    # Recorders sign their RTMP play with this internal credential (the same on every node of
    # a cluster; keep it secret like the database's password), and an ingest accepts a play
    # signed with it without a publish token.  "": none (docs/cluster.md, "Pulling").
    pull_secret: str = ""
    # A player from a loopback address plays without a token (recorders on the ingest's own
    # machine, without pull_secret).  Turn it off where other local users must not watch
    # streams: then pull_secret is required.
    loopback_plays: bool = True
    # Where recordings spool ("": <data_dir>/spool); ``cloudrec worker --data-dir`` sets it for
    # the recordings of its node.
    spool_root: str = ""
    # Cluster: the operator's S3-protocol bucket that recording nodes ship their open files
    # into (http(s)://HOST[:PORT]/BUCKET[/PREFIX]; "": not shipped), so that a lost node's
    # part is assembled from it (docs/cluster.md, "Fragments"), and its keys.
    fragment_store: str = ""
    fragment_store_access_key: str = ""
    fragment_store_secret_key: str = ""
    # A worker that dies is replaced by a new attempt this many times, then its task fails.
    max_worker_restarts: int = 5
    # New recordings are refused while the spool's disk has less than this free (MiB).
    min_free_spool_mb: int = 256
    # Where recorders pull a stream announced by an nginx-rtmp hook: {hook_rtmp_base}/{app}/
    # {name}.  Never the client's own tcurl (issue 11).
    hook_rtmp_base: str = "rtmp://127.0.0.1:1935"
    # Largest HTTP request body accepted (bytes); a larger one is refused with 413 unread.
    max_body_bytes: int = 1048576
    log_level: str = "INFO"
    log_format: str = "json"  # "json" or "text"
    allow_private_targets: bool = False

    @property
    def database(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'cloudrec.db').resolve()}"

    @property
    def spool_dir(self) -> Path:
        return Path(self.spool_root) if self.spool_root else self.data_dir / "spool"

    @property
    def backup_dir(self) -> Path:
        return self.data_dir / "backup"

    @property
    def public_rtmp_host(self) -> str:
        return self.rtmp_public_host or self.host


_RTMP_POSITIVE = (
    "rtmp_min_chunk_size",
    "rtmp_max_chunk_streams",
    "rtmp_max_unfinished_messages",
    "rtmp_max_command_bytes",
    "rtmp_max_buffered_bytes",
    "rtmp_auth_timeout_s",
    "rtmp_max_reply_backlog_bytes",
    "rtmp_max_connections",
    "rtmp_max_connections_per_address",
)


def _coerce(name: str, typ: Any, value: Any) -> Any:
    try:
        if typ in (bool, "bool"):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"not a boolean: {value!r}")
        if typ in (int, "int"):
            if isinstance(value, bool):
                raise ValueError("a boolean is not an integer")
            return int(value)
        if typ in (float, "float"):
            if isinstance(value, bool):
                raise ValueError("a boolean is not a number")
            return float(value)
        if typ in (Path, "Path"):
            return Path(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"setting {name}: {exc}") from exc


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Build settings from defaults, a TOML file, the environment and ``overrides`` (flags).

    ``overrides`` values of ``None`` mean "flag not given".  Unknown TOML keys are an error, so a
    typo does not silently fall back to a default.
    """
    env = os.environ if env is None else env
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    known = {f.name: f.type for f in fields(Settings)}
    values: dict[str, Any] = {}

    env_values = {
        name: env[ENV_PREFIX + name.upper()] for name in known if ENV_PREFIX + name.upper() in env
    }
    data_dir = Path(flags.get("data_dir") or env_values.get("data_dir") or "./cloudrec-data")
    path = config_file or (Path(env["CLOUDREC_CONFIG"]) if env.get("CLOUDREC_CONFIG") else None)
    if path is None and (data_dir / "cloudrec.toml").is_file():
        path = data_dir / "cloudrec.toml"
    if path is not None:
        try:
            toml = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"config file {path}: {exc}") from exc
        unknown = sorted(set(toml) - set(known))
        if unknown:
            raise SettingsError(f"config file {path}: unknown settings {', '.join(unknown)}")
        values.update(toml)
    values.update(env_values)
    values.update(flags)
    typed = {name: _coerce(name, known[name], value) for name, value in values.items()}
    settings = dataclasses.replace(Settings(), **typed)
    for port_name in ("http_port", "rtmp_port"):
        port = getattr(settings, port_name)
        if not 0 <= port <= 65535:
            raise SettingsError(f"setting {port_name}: {port} is not a TCP port")
    for name in _RTMP_POSITIVE:
        if getattr(settings, name) <= 0:
            raise SettingsError(f"setting {name}: {getattr(settings, name)} is not positive")
    if settings.executor not in EXECUTORS:
        raise SettingsError(
            f"setting executor: {settings.executor!r} is not one of {', '.join(EXECUTORS)}"
        )
    if settings.tasks_per_host < 1:
        raise SettingsError(f"setting tasks_per_host: {settings.tasks_per_host} is not positive")
    if not settings.loopback_plays and not settings.pull_secret:
        raise SettingsError(
            "setting loopback_plays: off needs pull_secret (else recorders could not pull)"
        )
    if settings.ingest_lease_s < 1:
        raise SettingsError(f"setting ingest_lease_s: {settings.ingest_lease_s} is less than 1 s")
    if settings.max_body_bytes < 1:
        raise SettingsError(f"setting max_body_bytes: {settings.max_body_bytes} is not positive")
    if not 0 <= settings.api_processes <= 64:
        raise SettingsError(f"setting api_processes: {settings.api_processes} is not in 0..64")
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise SettingsError("settings tls_cert_file and tls_key_file: give both, or neither")
    for name in ("tls_cert_file", "tls_key_file"):
        path = getattr(settings, name)
        if path and not Path(path).is_file():
            raise SettingsError(f"setting {name}: {path} is not a file")
    if not settings.hook_rtmp_base.startswith("rtmp://"):
        raise SettingsError(
            f"setting hook_rtmp_base: {settings.hook_rtmp_base!r} is not an rtmp:// URL"
        )
    if settings.log_format not in ("json", "text"):
        raise SettingsError(f"setting log_format: {settings.log_format!r} is not 'json' or 'text'")
    return settings
