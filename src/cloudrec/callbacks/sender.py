"""Callbacks over HTTP, through the outbound guard (no private targets unless allowed, the
checked address connected to, no redirects, short timeouts)."""

from __future__ import annotations

import json

from cloudrec.outbound import OutboundPolicy, json_body, post_json


class HttpCallbackSender:
    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        data = json.loads(body)
        # The core signed ``body``; post_json sends json_body(data): the same bytes.
        assert json_body(data) == body
        return post_json(url, data, headers, self._policy).status
