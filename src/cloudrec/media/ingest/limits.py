"""What one RTMP peer can make the ingest hold, and for how long (issue 11).

:class:`IngestLimits` gathers the bounds of the embedded server: the chunk reader's
(:class:`~cloudrec.media.ingest.chunks.ChunkLimits`), the time from TCP accept to an accepted
publish or play, the unsent replies a peer may leave unread, and how many connections one
address and everyone together may hold.  Every field is a setting (``rtmp_`` + its name) and
the defaults are the settings' defaults.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cloudrec.media.ingest.chunks import ChunkLimits

if TYPE_CHECKING:
    from cloudrec.config import Settings


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """``auth_timeout_s``: seconds from TCP accept (or from the end of a publish) to an accepted
    publish or play; ``max_reply_backlog_bytes``: replies (results, pongs) a connection that is
    not playing may leave unsent before it is closed; ``max_connections`` and
    ``max_connections_per_address``: connections open at once, in all and from one remote
    address; addresses in ``connection_cap_exempt`` (the recorders' loopback pulls) count only
    towards the total."""

    chunks: ChunkLimits = field(default_factory=ChunkLimits)
    auth_timeout_s: float = 10.0
    max_reply_backlog_bytes: int = 64 * 1024
    max_connections: int = 512
    max_connections_per_address: int = 16
    connection_cap_exempt: frozenset[str] = frozenset({"127.0.0.1", "::1"})

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestLimits:
        """The limits set by ``settings.rtmp_<field>`` (exempt addresses comma-separated)."""
        chunks = ChunkLimits(
            **{f.name: getattr(settings, f"rtmp_{f.name}") for f in dataclasses.fields(ChunkLimits)}
        )
        exempt = settings.rtmp_connection_cap_exempt.split(",")
        return cls(
            chunks=chunks,
            auth_timeout_s=settings.rtmp_auth_timeout_s,
            max_reply_backlog_bytes=settings.rtmp_max_reply_backlog_bytes,
            max_connections=settings.rtmp_max_connections,
            max_connections_per_address=settings.rtmp_max_connections_per_address,
            connection_cap_exempt=frozenset(normal_address(a) for a in exempt if a.strip()),
        )


def normal_address(address: str) -> str:
    """One spelling per address: IPv4-mapped IPv6 (a dual-stack socket) as plain IPv4."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address.strip()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
