"""Outbound HTTP to URLs that API users give us (callbacks, watermark images, storage endpoints).

The threat is server-side request forgery: a user names a URL that points back into our network
(loopback, the cloud metadata service at 169.254.169.254, a private database).  The defence:

1. :func:`resolve_target` parses the URL, resolves the host once, and refuses it if *any* resolved
   address is forbidden (:func:`forbidden_reason`); numeric spellings such as ``0x7f000001`` or
   ``127.1`` are whatever the OS resolver makes of them, and the result is what is checked.
2. :func:`post_json` and :func:`fetch` connect to that checked address, never re-resolving (no DNS
   rebinding window), while sending the original ``Host`` header and, for https, the original
   hostname for SNI and certificate verification.  Redirects are never followed: a 3xx answer is a
   failure (``target_redirect``), since following it would bypass step 1.

Every failure is a :class:`~cloudrec.core.errors.CloudrecError`: ``invalid_argument`` with reason
``target_invalid`` / ``target_forbidden`` for a URL we refuse to call, ``unavailable`` with a reason
(``target_unresolvable``, ``target_redirect``, ``too_large``, ``timeout``, ``connect_failed``,
``transfer_failed``, ``http_status``) when the call itself fails.  All of them are failures the
user caused (their URL, their server), not ours.

The calls are synchronous and blocking; async callers run them in a thread.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from cloudrec.core.errors import CloudrecError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: ``socket.getaddrinfo``-shaped: called as ``resolver(host, port)``; only each entry's
#: ``sockaddr[0]`` (the address string) is used.
Resolver = Callable[[str, int], Sequence[tuple[Any, Any, Any, Any, tuple[Any, ...]]]]

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class OutboundPolicy:
    """How outbound calls to user-given URLs are allowed and bounded.

    ``allow_private`` lifts the address check (for self-hosted setups whose storage or callback
    receiver lives on the LAN, and for tests).  ``read_timeout_s`` bounds each wait for data;
    ``total_timeout_s`` bounds a whole response so that a server dripping one byte per read
    timeout cannot hold a worker forever (checked between reads, so the worst case is
    ``total_timeout_s + read_timeout_s``).  ``max_bytes`` caps a response body.
    ``ssl_context`` replaces the system trust store (a self-hosted endpoint with a private CA).
    """

    allow_private: bool = False
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    total_timeout_s: float = 60.0
    max_bytes: int = DEFAULT_MAX_BYTES
    ssl_context: ssl.SSLContext | None = None


@dataclass(frozen=True)
class Target:
    """A checked URL: ``ip`` is the address to connect to, ``host`` the name to present."""

    url: str
    scheme: str
    host: str
    port: int
    ip: IPAddress

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


@dataclass(frozen=True)
class OutboundResponse:
    status: int
    text: str


# --- the address check ---------------------------------------------------------------------------
# IANA special-purpose registries (RFC 6890 and successors).  Documentation and benchmarking ranges
# are refused too: nothing legitimate lives there, and 198.18.0.0/15 is used inside real networks
# (VPN fake-IP pools).
_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
_V4_RULES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "unspecified (this-network) address"),
    (_V4("10.0.0.0/8"), "private address"),
    (_V4("100.64.0.0/10"), "carrier-grade NAT address"),
    (_V4("127.0.0.0/8"), "loopback address"),
    (_V4("169.254.169.254/32"), "cloud metadata address"),
    (_V4("169.254.0.0/16"), "link-local address"),
    (_V4("172.16.0.0/12"), "private address"),
    (_V4("192.0.0.0/24"), "IETF protocol assignment address"),
    (_V4("192.0.2.0/24"), "documentation address"),
    (_V4("192.88.99.0/24"), "6to4 relay anycast address"),
    (_V4("192.168.0.0/16"), "private address"),
    (_V4("198.18.0.0/15"), "benchmarking address"),
    (_V4("198.51.100.0/24"), "documentation address"),
    (_V4("203.0.113.0/24"), "documentation address"),
    (_V4("224.0.0.0/4"), "multicast address"),
    (_V4("255.255.255.255/32"), "broadcast address"),
    (_V4("240.0.0.0/4"), "reserved address"),
)
_V6_RULES: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified address"),
    (_V6("::1/128"), "loopback address"),
    (_V6("64:ff9b:1::/48"), "local-use NAT64 address"),
    (_V6("100::/64"), "discard-only address"),
    (_V6("2001:2::/48"), "benchmarking address"),
    (_V6("2001:10::/28"), "ORCHID address"),
    (_V6("2001:db8::/32"), "documentation address"),
    (_V6("3fff::/20"), "documentation address"),
    (_V6("fc00::/7"), "unique-local (private) address"),
    (_V6("fe80::/10"), "link-local address"),
    (_V6("fec0::/10"), "site-local address"),
    (_V6("ff00::/8"), "multicast address"),
)
# Only 2000::/3 is allocated for global unicast; everything else is special or unallocated.
_V6_GLOBAL_UNICAST = _V6("2000::/3")
# Forms that carry an IPv4 address in their last 32 bits and deliver to it.
_V6_EMBEDDING_V4: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::ffff:0:0/96"), "IPv4-mapped"),
    (_V6("::ffff:0:0:0/96"), "IPv4-translated"),
    (_V6("64:ff9b::/96"), "NAT64"),
    (_V6("::/96"), "IPv4-compatible"),
)


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why an outbound call to ``ip`` is refused (``"loopback address 127.0.0.1"``), or None."""
    if isinstance(ip, ipaddress.IPv4Address):
        return next((f"{label} {ip}" for network, label in _V4_RULES if ip in network), None)
    ip = ipaddress.IPv6Address(ip.packed)  # drop any %scope
    for network6, label in _V6_RULES:
        if ip in network6:
            return f"{label} {ip}"
    for network6, label in _V6_EMBEDDING_V4:
        if ip in network6:
            return _embedded(ip, label, ipaddress.IPv4Address(ip.packed[-4:]))
    if ip.sixtofour is not None:
        return _embedded(ip, "6to4", ip.sixtofour)
    if ip.teredo is not None:
        server, client = ip.teredo
        return _embedded(ip, "Teredo", client) or _embedded(ip, "Teredo", server)
    if ip not in _V6_GLOBAL_UNICAST:
        return f"reserved address {ip}"
    return None


def _embedded(ip: ipaddress.IPv6Address, form: str, v4: ipaddress.IPv4Address) -> str | None:
    inner = forbidden_reason(v4)
    return None if inner is None else f"{form} address {ip} (embeds {inner})"


# --- the URL check -------------------------------------------------------------------------------


def resolve_target(url: str, policy: OutboundPolicy, resolver: Resolver | None = None) -> Target:
    """Parse ``url``, resolve its host once, and check every address it resolves to.

    ``resolver`` defaults to :func:`socket.getaddrinfo` (this call blocks on DNS).  The returned
    target's ``ip`` is the first resolved address, the one to connect to.
    """
    scheme, host, port = _parse(url)
    ip = checked_address(host, port, policy, resolver)
    return Target(url=url, scheme=scheme, host=host, port=port, ip=ip)


def checked_address(
    host: str, port: int, policy: OutboundPolicy, resolver: Resolver | None = None
) -> IPAddress:
    """Resolve ``host`` once and return the address to connect to, refused (``target_forbidden``)
    if *any* address it resolves to is forbidden by ``policy``.

    The one check every outbound connection goes through: :func:`resolve_target` for callbacks
    and pictures, and each new storage connection (``cloudrec.storage.egress``) at connect time.
    """
    try:
        infos = (resolver or socket.getaddrinfo)(host, port)
    except (OSError, UnicodeError) as exc:
        raise CloudrecError.unavailable(
            f"cannot resolve {host!r}: {exc}", reason="target_unresolvable"
        ) from exc
    ips: list[IPAddress] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:  # an AF_UNIX or other non-IP entry from a custom resolver
            continue
        if ip not in ips:
            ips.append(ip)
    if not ips:
        raise CloudrecError.unavailable(
            f"{host!r} resolves to no IP address", reason="target_unresolvable"
        )
    if not policy.allow_private:
        for ip in ips:
            reason = forbidden_reason(ip)
            if reason is not None:
                raise CloudrecError.invalid_argument(
                    f"refusing to call {host!r}: {reason}", reason="target_forbidden"
                )
    return ips[0]


def _parse(url: str) -> tuple[str, str, int]:
    def invalid(why: str) -> CloudrecError:
        return CloudrecError.invalid_argument(
            f"invalid URL {url!r}: {why}", reason="target_invalid"
        )

    if not url.isprintable() or any(c.isspace() for c in url):
        raise invalid("whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise invalid(str(exc)) from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise invalid("the scheme must be http or https")
    if "@" in parts.netloc:
        raise invalid("credentials in the URL are not allowed")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise invalid("no host")
    if "%" in host:
        raise invalid("IPv6 zone identifiers are not allowed")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise invalid("the host is not a valid internationalized domain name") from exc
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        raise invalid(f"port {port} is out of range")
    return scheme, host, port


# --- the calls -----------------------------------------------------------------------------------


def json_body(body: Mapping[str, Any]) -> bytes:
    """The exact bytes :func:`post_json` sends for ``body`` (sign these)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def post_json(
    url: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    policy: OutboundPolicy,
    *,
    resolver: Resolver | None = None,
) -> OutboundResponse:
    """POST ``body`` as JSON; return any non-3xx answer (the caller judges 2xx vs 4xx/5xx).

    The response body is read up to ``policy.max_bytes`` (``too_large`` beyond that).
    """
    target = resolve_target(url, policy, resolver)
    status, content, encoding = _request(
        "POST",
        target,
        policy,
        {**headers, "Content-Type": "application/json"},
        json_body(body),
        policy.max_bytes,
    )
    return OutboundResponse(status, content.decode(encoding or "utf-8", errors="replace"))


def fetch(
    url: str,
    policy: OutboundPolicy,
    max_bytes: int | None = None,
    *,
    resolver: Resolver | None = None,
) -> bytes:
    """GET ``url`` and return its body; a non-2xx answer is a failure (``http_status``).

    ``max_bytes`` (default ``policy.max_bytes``) caps the body: ``too_large`` beyond it.
    """
    target = resolve_target(url, policy, resolver)
    limit = policy.max_bytes if max_bytes is None else max_bytes
    status, content, _ = _request("GET", target, policy, {}, None, limit)
    if not 200 <= status < 300:
        raise CloudrecError.unavailable(
            f"{target.host} answered HTTP {status} to GET", reason="http_status"
        )
    return content


def _request(
    method: str,
    target: Target,
    policy: OutboundPolicy,
    headers: Mapping[str, str],
    content: bytes | None,
    max_bytes: int,
) -> tuple[int, bytes, str | None]:
    split = urlsplit(target.url)
    ip = f"[{target.ip}]" if target.ip.version == 6 else str(target.ip)
    path = (split.path or "/") + (f"?{split.query}" if split.query else "")
    timeout = httpx.Timeout(
        connect=policy.connect_timeout_s,
        read=policy.read_timeout_s,
        write=policy.read_timeout_s,
        pool=policy.connect_timeout_s,
    )
    deadline = time.monotonic() + policy.total_timeout_s
    what = f"{method} {target.scheme}://{target.host_header}"
    # trust_env=False: an HTTP(S)_PROXY from the environment would connect elsewhere than the
    # checked address, and would not apply the SNI pin.
    with httpx.Client(
        trust_env=False,
        follow_redirects=False,
        timeout=timeout,
        verify=policy.ssl_context if policy.ssl_context is not None else True,
    ) as client:
        request = client.build_request(
            method,
            f"{target.scheme}://{ip}:{target.port}{path}",
            # identity: a compressed body would be inflated a whole chunk at a time before the
            # size cap sees it (a decompression bomb).
            headers={**headers, "Host": target.host_header, "Accept-Encoding": "identity"},
            content=content,
            extensions={"sni_hostname": target.host},
        )
        try:
            response = client.send(request, stream=True)
            try:
                content = _read(response, what, max_bytes, deadline, policy.total_timeout_s)
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            raise CloudrecError.unavailable(f"{what} timed out: {exc}", reason="timeout") from exc
        except httpx.ConnectError as exc:
            raise CloudrecError.unavailable(
                f"{what} could not connect: {exc}", reason="connect_failed"
            ) from exc
        except httpx.HTTPError as exc:
            raise CloudrecError.unavailable(
                f"{what} failed: {exc}", reason="transfer_failed"
            ) from exc
    return response.status_code, content, response.charset_encoding


def _read(
    response: httpx.Response, what: str, max_bytes: int, deadline: float, total_timeout_s: float
) -> bytes:
    """The body of a non-redirect answer, at most ``max_bytes`` of it, read before ``deadline``."""
    if 300 <= response.status_code < 400:
        raise CloudrecError.unavailable(
            f"{what} answered HTTP {response.status_code} redirect to "
            f"{response.headers.get('Location', '')!r}; redirects are not followed",
            reason="target_redirect",
        )
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(what, max_bytes)
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(what, max_bytes)
        if time.monotonic() > deadline:
            raise CloudrecError.unavailable(
                f"{what} took longer than {total_timeout_s} s", reason="timeout"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(what: str, max_bytes: int) -> CloudrecError:
    return CloudrecError.unavailable(
        f"{what} answered with more than {max_bytes} bytes", reason="too_large"
    )
