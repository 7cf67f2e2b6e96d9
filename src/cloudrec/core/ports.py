"""Ports: what the core needs from the outside, as ``typing.Protocol``s."""

from __future__ import annotations

from typing import Protocol

from cloudrec.core.rooms import PlayRequest, PublishRequest, StreamMeta


class IngestGate(Protocol):
    """What an ingest (the embedded RTMP server) asks the core.

    The ingest owns the event loop; each method is awaited on it.  ``authorize_publish`` and
    ``authorize_play`` raise :class:`cloudrec.core.errors.CloudrecError` to refuse, before any
    media is accepted.  ``published`` is awaited once per accepted publish, when the stream's
    first media message arrives (its metadata is known by then); ``unpublished`` once when the
    publisher stops or disconnects, if ``published`` was called.
    """

    async def authorize_publish(self, req: PublishRequest) -> None: ...

    async def published(self, req: PublishRequest, meta: StreamMeta) -> None: ...

    async def unpublished(self, req: PublishRequest) -> None: ...

    async def authorize_play(self, req: PlayRequest) -> None: ...
