"""Every connection boto3 makes to a storage endpoint goes through the outbound policy.

boto3 resolves names itself (through urllib3), so checking an endpoint URL before the upload
leaves two ways in (issue 11, #5): the virtual-hosted name ``{bucket}.{endpoint}`` that is really
connected to is never checked (a wildcard domain can point any bucket name anywhere), and a
name checked once can resolve elsewhere a moment later (DNS rebinding).  So the check is made
where the socket is opened: :class:`PinnedHTTPConnection` resolves the name the request goes to
with :func:`cloudrec.outbound.checked_address` and connects to *that* address, while the request
keeps its ``Host`` header and, for https, its name for SNI and certificate verification.

The connections are installed with botocore's ``before-send`` event: a handler sends each
prepared request through :class:`PinnedSession` (a ``URLLib3Session`` whose connection pools
make pinned connections) and returns the answer, so botocore's own session never opens a
socket.  Proxies from the environment are not used (a proxy would connect elsewhere than the
checked address).  Redirects are never followed: urllib3 is called with ``redirect=False``, a 3xx
answer is refused before botocore sees it, and a new connection made for any reason is checked
again.

A refused connection raises the policy's :class:`~cloudrec.core.errors.CloudrecError`
(``target_forbidden``); botocore wraps it, and :func:`egress_refusal` finds it again.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Any

from botocore.awsrequest import (
    AWSHTTPConnection,
    AWSHTTPConnectionPool,
    AWSHTTPSConnection,
    AWSHTTPSConnectionPool,
    AWSPreparedRequest,
    AWSResponse,
)
from botocore.httpsession import URLLib3Session
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.connection import create_connection

from cloudrec.core.errors import CloudrecError
from cloudrec.outbound import OutboundPolicy, Resolver, checked_address

#: ``(host, port) -> address``: the check made before each new connection.
Guard = Callable[[str, int], str]


def policy_guard(policy: OutboundPolicy, resolver: Resolver | None = None) -> Guard:
    """The guard of ``policy``: resolve once, refuse forbidden addresses, return the address."""

    def guard(host: str, port: int) -> str:
        return str(checked_address(host, port, policy, resolver))

    return guard


class _Pinned:
    """Mixin for urllib3 connections: connect to the guard's address for the host, not to
    whatever the system resolver says when the socket is opened."""

    guard: Guard
    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any

    def _new_conn(self) -> socket.socket:
        name = self.host.strip("[]")  # urllib3 brackets IPv6 literals
        address = self.guard(name, self.port)  # raises CloudrecError: not caught below
        try:
            return create_connection(
                (address, self.port),
                self.timeout,
                source_address=self.source_address,
                socket_options=self.socket_options,
            )
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out (connect timeout={self.timeout})"
            ) from exc
        except OSError as exc:
            raise NewConnectionError(
                self,  # type: ignore[arg-type]
                f"Failed to establish a new connection: {exc.strerror or type(exc).__name__}",
            ) from exc


class _NoRedirects:
    """Mixin for urllib3 pools: never act on a 3xx (urllib3 rewrites a 303 into a GET even when
    retries are off); the answer goes back as it is, and :func:`install` refuses it."""

    def urlopen(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["redirect"] = False
        return super().urlopen(*args, **kwargs)  # type: ignore[misc]


# botocore ships no types: its classes are Any to mypy, hence the ignores on subclassing them.
class PinnedSession(URLLib3Session):  # type: ignore[misc]
    """botocore's HTTP session whose every new connection is checked by ``guard`` and pinned to
    the address it returned.  Never uses a proxy."""

    def __init__(
        self, guard: Guard, ssl_context: ssl.SSLContext | None = None, **kwargs: Any
    ) -> None:
        self._ssl_context = ssl_context  # read by _get_ssl_context, during super().__init__
        super().__init__(proxies={}, **kwargs)

        class HTTPConnection(_Pinned, AWSHTTPConnection):  # type: ignore[misc]
            pass

        class HTTPSConnection(_Pinned, AWSHTTPSConnection):  # type: ignore[misc]
            pass

        for cls in (HTTPConnection, HTTPSConnection):
            cls.guard = staticmethod(guard)

        class HTTPPool(_NoRedirects, AWSHTTPConnectionPool):  # type: ignore[misc]
            ConnectionCls = HTTPConnection

        class HTTPSPool(_NoRedirects, AWSHTTPSConnectionPool):  # type: ignore[misc]
            ConnectionCls = HTTPSConnection

        # The pool manager holds this very dict (URLLib3Session.__init__), so updating it in
        # place is what makes every pool it creates, and so every connection, a pinned one.
        self._pool_classes_by_scheme.update({"http": HTTPPool, "https": HTTPSPool})

    def _get_ssl_context(self) -> Any:
        """The policy's trust store (a private CA) when it has one, botocore's otherwise."""
        return self._ssl_context or super()._get_ssl_context()


def install(client: Any, session: PinnedSession) -> None:
    """Send every request of the boto3 ``client`` through ``session``; a redirect answer is
    refused (``target_redirect``) before botocore can act on it (its S3 region redirector
    would ask the same server again, without end when the server always redirects)."""

    def send(request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        response = session.send(request)
        if 300 <= response.status_code < 400:
            raise CloudrecError.unavailable(
                f"the storage answered HTTP {response.status_code}: redirects are not followed",
                reason="target_redirect",
            )
        return response

    client.meta.events.register_first("before-send", send)


def egress_refusal(exc: BaseException) -> CloudrecError | None:
    """The policy's refusal inside a botocore/boto3 exception, if that is what it is: botocore
    raises ``HTTPClientError(error=...)`` while handling it, so it is in the context chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, CloudrecError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
