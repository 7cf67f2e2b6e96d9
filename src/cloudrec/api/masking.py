"""A request as it was sent, with its secrets hidden: kept with the task for the console."""

from __future__ import annotations

import json
import re
from typing import Any

# Keys whose values are secrets, in every dialect's words: storage keys, tokens, signatures.
SECRET_KEY = re.compile(r"secret|accesskey|access_?key|token|password|signature|credential", re.I)
HIDDEN = "(hidden)"
MAX_CHARS = 64 * 1024


def masked(value: Any) -> Any:
    """``value`` with every secret-named field's value replaced by ``(hidden)``."""
    if isinstance(value, dict):
        return {
            k: HIDDEN if isinstance(k, str) and SECRET_KEY.search(k) else masked(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


def request_record(body: Any) -> str:
    """The masked request as JSON, cut to ``MAX_CHARS`` (a start request is far smaller)."""
    text = json.dumps(masked(body), ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + "…"
