"""schemathesis against both dialects, as an attacker holding credentials would fuzz them:
the app served by uvicorn on a loopback port over a real database (SQLite, PostgreSQL), the
OpenAPI document fetched from its ``/openapi.json``, every JoCloud endpoint and every ZEGO
Action attacked with generated requests that fit its schema (positive) and requests that
break it (negative).

Seven requests in eight are authenticated so that they reach the handler: JoCloud's ``AppID``
and ``Token`` headers (and the body's ``appid``, which must be the URL's), ZEGO's signature
over a fresh ``SignatureNonce`` (a nonce is accepted once), and a fresh ``resid`` for
startrecord.  They go round several apps, so that the real per-app rate limits (10/s) let most
of them through, and every other one is steered at what exists (:func:`authenticate`).  The
eighth keeps a stranger's generated app id, with a wrong secret.

Checks per answer: no 5xx; an answer within ``TIMEOUT_S`` (no hang); the dialect's envelope
(JoCloud ``code``/``message``/``traceId``, ZEGO ``Code``/``Message``/``RequestId``, HTTP 200,
or JoCloud's documented bare 404); status code, content type and body conforming to the
published schema.  The number of cases run is printed (issue 11).

The executor is ``tests.inprocess.FakeExecutor``: a StartRecord that passes every check is
stored as a task, but no worker is started (the test marks the task recording, as a worker
would).  The target here is the API surface; workers are the e2e tests' (docs/security.md,
"Fuzzing the dialects").
"""

from __future__ import annotations

import base64
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import count, cycle
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cloudrec.api.zego.auth import signature
from cloudrec.core.tasks import TaskState
from tests.conftest import free_port
from tests.inprocess import InProcess, basic, in_process
from tests.integration.test_api_inprocess_jocloud import start_body as jocloud_body
from tests.integration.test_api_inprocess_zego import mix_body, start_body
from tests.zego import Zego

APP_IDS = range(7000001, 7000013)  # 12 apps: 120 JoCloud requests/s within the limits
# Per operation and mode: 336 cases per database, 15-30 s each on 2 cores;
# CLOUDREC_TEST_FUZZ_EXAMPLES=150 hunts longer.
EXAMPLES = int(os.environ.get("CLOUDREC_TEST_FUZZ_EXAMPLES", "12"))
TIMEOUT_S = 10.0  # per request: a loaded 2-core machine answers in well under a second
ROOM = "fuzzroom"  # published in every app: a StartRecord for it can succeed
# Refusals of the credentials: none may occur (the cases must reach the handlers).
STRANGER = "(a stranger's credentials)"
AUTH_CODES = {1000, 1001, 1002, 100000004, 100000005, 300000002}


@dataclass
class Known:
    """A task a fuzzed StartRecord started, for later cases to aim at."""

    task_id: str
    resid: str


@dataclass
class Target:
    """The served app: its base URL, its container, the apps' secrets, and the tasks the
    fuzzing has started (per app)."""

    base: str
    api: InProcess
    secrets: dict[int, str]
    tasks: dict[int, list[Known]] = field(default_factory=dict)  # every task, per app
    started: dict[int, list[Known]] = field(default_factory=dict)  # those the fuzzing started
    turn: Iterator[int] = field(default_factory=lambda: count())
    apps: Iterator[int] = field(init=False)
    steer: Iterator[bool] = field(default_factory=lambda: cycle([True, False]))
    # One case in 8 keeps the credentials schemathesis generated (an unknown or huge app id,
    # a wrong token or signature): the path an unauthenticated client takes.
    stranger: Iterator[bool] = field(default_factory=lambda: cycle([False] * 7 + [True]))

    def __post_init__(self) -> None:
        self.apps = cycle(self.secrets)


@pytest.fixture
def target(database_url, data_dir) -> Iterator[Target]:
    with in_process(database_url, data_dir) as api:
        app_secrets = {a: api.container.apps.create(a).server_secret for a in APP_IDS}
        for app_id in APP_IDS:
            api.publish(app_id, ROOM, "stream1", "user1")
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(api.app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        try:
            t = Target(f"http://127.0.0.1:{port}", api, app_secrets)
            for app_id in APP_IDS[:3]:
                seed(t, app_id)
            yield t
        finally:
            server.should_exit = True
            thread.join(timeout=30)


def authenticate(t: Target, case: schemathesis.Case) -> int | None:
    """Make ``case`` reach its handler: the credentials of the next app, signed afresh; every
    other case is steered at what exists (the published room, a task started earlier, a
    DescribeTasks window of the last hour) so that the handlers get past their first check.
    Returns the app id, or None for a stranger's case (the generated app id, made consistent
    enough to reach the app lookup: JoCloud's AppID header and Token user are the path's, with
    a wrong secret; ZEGO's generated signature, its Timestamp now)."""
    if next(t.stranger):
        if case.path.startswith("/app/"):
            appid = str(case.path_parameters.get("appid", ""))
            token = "Basic " + base64.b64encode(f"{appid}:wrong".encode()).decode()
            case.headers = {**dict(case.headers or {}), "AppID": appid, "Token": token}
        else:
            case.query = {**(case.query or {}), "Timestamp": int(time.time())}
        return None
    app_id = next(t.apps)
    steer = next(t.steer)
    task = None
    if steer and not case.path.lower().endswith("/startrecord"):
        # A stop aims at a task the fuzzing started, anything else at any task: the seeded
        # ones stay recording for pause, resume, layout and snapshot cases.
        stop = case.path.lower().endswith("/stoprecord")
        pool = t.started if stop else t.tasks
        if pool:
            app_id = list(pool)[next(t.turn) % len(pool)]
            known = pool[app_id]
            task = known[-1] if stop else known[next(t.turn) % len(known)]
    secret = t.secrets[app_id]
    body = case.body if isinstance(case.body, dict) else None
    if case.path.startswith("/app/"):
        case.path_parameters = {**case.path_parameters, "appid": app_id}
        case.headers = {**dict(case.headers or {}), "AppID": str(app_id)}
        case.headers["Token"] = basic(app_id, secret)
        if body is not None:
            body["appid"] = app_id
            if case.path.endswith("/startrecord"):
                body["resid"] = t.api.container.tasks.apply_resource(app_id)
                if steer:
                    body.update(roomid=ROOM, uid="user1")
            elif task is not None:
                body.update(resid=task.resid, roomid=ROOM, recordid=task.task_id)
        if task is not None and "recordid" in case.path_parameters:
            case.path_parameters.update(roomid=ROOM, recordid=task.task_id)
        return app_id
    nonce, now = secrets.token_hex(8), int(time.time())
    case.query = {
        **(case.query or {}),
        "AppId": app_id,
        "SignatureNonce": nonce,
        "Timestamp": now,
        "SignatureVersion": "2.0",
        "Signature": signature(app_id, nonce, secret, now),
    }
    if body is not None and steer:
        if case.path.endswith("/StartRecord"):
            body["RoomId"] = ROOM
        elif case.path.endswith("/DescribeTasks"):
            body.update(StartTime=(now - 3600) * 1000, EndTime=now * 1000)
        elif task is not None:
            body["TaskId"] = task.task_id
    return app_id


def remember(
    t: Target, app_id: int | None, case: schemathesis.Case, answer: dict[str, Any]
) -> None:
    """A task a StartRecord started, for later cases to aim at."""
    if app_id is None:
        return
    if case.path.endswith("/startrecord") and answer.get("code") == 0:
        assert isinstance(case.body, dict)
        known = Known(answer["recordid"], case.body["resid"])
    elif case.path.endswith("/StartRecord") and answer.get("Code") == 0:
        known = Known(answer["Data"]["TaskId"], "")
    else:
        return
    t.started.setdefault(app_id, []).append(known)
    t.tasks.setdefault(app_id, []).append(known)
    recording(t.api, known.task_id)


def recording(api: InProcess, task_id: str) -> None:
    """What the task's worker would write once it records (the executor starts none)."""
    with api.container.uow() as uow:
        uow.tasks.update(task_id, state=TaskState.RECORDING)
        uow.commit()


def seed(t: Target, app_id: int) -> None:
    """Four recording tasks of ``app_id`` for the fuzzing to aim at, started as a client
    would: a ZEGO mix, a ZEGO single-stream task, a JoCloud source stream, a JoCloud mix."""
    zego = Zego(t.base, app_id, t.secrets[app_id])
    mix = mix_body()
    single = start_body()
    for body in (mix, single):
        body["RoomId"] = ROOM
        answer = zego.call("StartRecord", body)
        assert answer["Code"] == 0, answer
        t.tasks.setdefault(app_id, []).append(Known(answer["Data"]["TaskId"], ""))
    audio_mix = {"templateid": 1, "output": {"streamtype": 2}}
    for over in ({"uid": "user1"}, {"streamtype": 1, "mixconfig": audio_mix}):
        resid = t.api.container.tasks.apply_resource(app_id)
        r = httpx.post(
            f"{t.base}/app/{app_id}/v1/recordoss/startrecord",
            json=jocloud_body(resid, appid=app_id, roomid=ROOM, **over),
            headers={"AppID": str(app_id), "Token": basic(app_id, t.secrets[app_id])},
            timeout=TIMEOUT_S,
        )
        assert r.json()["code"] == 0, r.text
        t.tasks[app_id].append(Known(r.json()["recordid"], resid))
    for known in t.tasks[app_id]:
        recording(t.api, known.task_id)


def in_envelope(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every answer is the dialect's: HTTP 200 (or 413) with its envelope, or JoCloud's bare
    404 for an unknown endpoint, method or Content-Type."""
    jocloud = case.path.startswith("/app/")
    if jocloud and response.status_code == 404:
        assert not response.content, response.text
        return
    assert response.status_code in (200, 413), (response.status_code, response.text)
    answer = response.json()
    keys = ("code", "message", "traceId") if jocloud else ("Code", "Message", "RequestId")
    assert isinstance(answer, dict) and set(keys) <= set(answer), answer
    code, message = answer[keys[0]], answer[keys[1]]
    assert isinstance(code, int) and isinstance(message, str), answer
    assert (code == 0) == (message in ("success", "succeed")), answer


CHECKS: list[Callable[..., Any]] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def fuzz(
    t: Target, operation: Any, mode: schemathesis.GenerationMode, ran: list[tuple[str, int, str]]
) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def attack(case: schemathesis.Case) -> None:
        app_id = authenticate(t, case)
        response = case.call(base_url=t.base, timeout=TIMEOUT_S)
        case.validate_response(response, checks=CHECKS, additional_checks=[in_envelope])
        answer = response.json() if response.content else {}
        remember(t, app_id, case, answer)
        code = answer.get("code", answer.get("Code", response.status_code))
        message = answer.get("message", answer.get("Message", ""))
        name = f"{operation.method.upper()} {operation.path}"
        ran.append((name if app_id is not None else STRANGER, code, message))

    attack()


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_hang_or_answer_outside_the_envelope(
    target: Target,
) -> None:
    schema = schemathesis.openapi.from_url(f"{target.base}/openapi.json")
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        if result.ok().path.startswith(("/app/", "/zego/"))
    ]
    assert len(operations) == 5 + 9, [op.path for op in operations]
    ran: list[tuple[str, int, str]] = []
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            fuzz(target, operation, mode, ran)
    print(f"\nschemathesis: {len(ran)} cases over {len(operations)} operations, every answer")
    print("in its dialect's envelope (cases, answered code 0, distinct codes):")
    for op in operations:
        name = f"{op.method.upper()} {op.path}"
        codes = [code for n, code, _ in ran if n == name]
        print(f"  {len(codes):4d} {codes.count(0):4d} {len(set(codes)):3d}  {name}")
    strangers = [code for n, code, _ in ran if n == STRANGER]
    print(f"  {len(strangers):4d} {strangers.count(0):4d} {len(set(strangers)):3d}  {STRANGER}")
    assert strangers and 0 not in strangers  # none got through
    assert {n for n, _, _ in ran} - {STRANGER} == {
        f"{op.method.upper()} {op.path}" for op in operations
    }
    # Every case reached its handler: none was refused for its credentials.
    refused = [(n, c, m) for n, c, m in ran if c in AUTH_CODES and n != STRANGER]
    assert not refused, refused[:5]
