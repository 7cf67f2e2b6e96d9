"""Opening a remote media input: the one place that calls ``av.open`` on a URL.

Every input cloudrec pulls is an RTMP play URL (the embedded ingest's, or an nginx-rtmp's built
from the ``hook_rtmp_base`` setting); pictures are fetched by :mod:`cloudrec.outbound`, never by
FFmpeg.  So FFmpeg may use only the ``rtmp`` protocol over ``tcp``: a URL that names ``file:``,
``concat:``, ``http:`` (or a playlist that leads to them) is refused by FFmpeg itself before
anything is read (issue 11).
"""

from __future__ import annotations

from typing import Any

import av

# FFmpeg protocols an input may use; "tcp" carries rtmp.
PROTOCOL_WHITELIST = "rtmp,tcp"


def shown_url(url: str) -> str:
    """``url`` as logs show it: without its query, where a recorder's pull credential is."""
    return url.partition("?")[0]


def open_input(url: str, options: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """``av.open(url)`` for reading, with :data:`PROTOCOL_WHITELIST` (``kwargs`` go to
    ``av.open``, e.g. ``timeout``).  FFmpeg errors are raised as PyAV raises them."""
    return av.open(
        url, options={**(options or {}), "protocol_whitelist": PROTOCOL_WHITELIST}, **kwargs
    )
