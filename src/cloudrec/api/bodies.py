"""Request bodies: a size limit enforced while the body is read, and one JSON parser that
turns every malformed body into a parameter error.

:class:`BodyLimit` is a pure ASGI middleware.  A ``Content-Length`` above the limit is refused
before a byte of the body is read; a body without one (chunked) is counted as it arrives and
refused as soon as it passes the limit, so at most the limit plus one chunk is ever held
(issue 11: a 48 MB body was read whole, parsed and answered 200).  The refusal is HTTP 413 in
the envelope of the dialect the path belongs to (``refuse``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from cloudrec.core.errors import CloudrecError

log = logging.getLogger("cloudrec.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# (scope, message) → the refusal as an ASGI app (a Starlette Response is one).
Refusal = Callable[[Scope, str], ASGIApp]


class BodyTooLargeError(Exception):
    """Raised from ``receive`` once a body passes the limit; answered by :class:`BodyLimit`."""


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, refuse: Refusal) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, f"{declared} bytes declared")
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLargeError:
            if started:
                raise
            await self._refuse(scope, receive, send, f"more than {received} bytes sent")

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, detail: str) -> None:
        message = f"the request body is larger than {self.max_bytes} bytes ({detail})"
        log.warning(
            "http.body_refused",
            extra={
                "fields": {
                    "path": scope.get("path", ""),
                    "client": (scope.get("client") or ("",))[0],
                    "limit": self.max_bytes,
                    "reason": detail,
                }
            },
        )
        await self.refuse(scope, message)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            # A malformed length is the server's to refuse (uvicorn answers 400 itself).
            return int(text) if text.isdigit() else None
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON.  Every way a body can be malformed — not UTF-8, not JSON, NaN or
    Infinity, nested deeper than the parser recurses (issue 11: a RecursionError answered
    HTTP 500), an integer of more digits than Python converts, a NUL in a string — is
    ``invalid_argument``."""
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise CloudrecError.invalid_argument("the body is not JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise CloudrecError.invalid_argument(f"the body is not JSON: {exc}") from exc
    refuse_nul(body, "the body")
    return body


def refuse_nul(value: Any, where: str) -> None:
    """Refuse a NUL character in any string of ``value`` (a parsed body, its keys too, or a
    query's values): no vendor field means one, and PostgreSQL's text cannot hold one (issue
    11: a ``TaskId`` of ``"a\\u0000b"`` was answered HTTP 500 on PostgreSQL, in every Action
    and endpoint that looks a task up).  Iterative: a body nests as deep as
    the parser allowed."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                field = f" in {at}" if at else ""
                raise CloudrecError.invalid_argument(
                    f"{where} holds a NUL character (\\u0000){field}"
                )
        elif isinstance(item, dict):
            for key, inner in item.items():
                name = f"{at}.{key}" if at else str(key)
                stack += [(key, at or "a field name"), (inner, name)]
        elif isinstance(item, list):
            stack += [(inner, f"{at}[{n}]") for n, inner in enumerate(item)]
