"""Typed reading of JoCloud request fields: every refusal names the parameter (code 2101)."""

from __future__ import annotations

from typing import Any

from cloudrec.core.errors import CloudrecError


def bad(message: str, reason: str | None = None) -> CloudrecError:
    return CloudrecError.invalid_argument(message, reason)


def require(body: dict[str, Any], name: str, where: str = "") -> Any:
    if name not in body or body[name] is None:
        raise bad(f"missing required parameter {where}{name} (parameters are case-sensitive)")
    return body[name]


def get_int(
    body: dict[str, Any],
    name: str,
    where: str = "",
    *,
    required: bool = True,
    default: int | None = None,
    allowed: range | set[int] | None = None,
) -> int | None:
    if not required and body.get(name) is None:
        return default
    value = require(body, name, where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"{where}{name} must be an integer, not {value!r}")
    if allowed is not None and value not in allowed:
        shown = (
            f"{allowed.start}..{allowed.stop - 1}"
            if isinstance(allowed, range)
            else ", ".join(map(str, sorted(allowed)))
        )
        raise bad(f"{where}{name} must be one of {shown}, not {value}")
    return value


def get_str(
    body: dict[str, Any], name: str, where: str = "", *, required: bool = True, max_len: int = 256
) -> str | None:
    if not required and body.get(name) is None:
        return None
    value = require(body, name, where)
    if not isinstance(value, str) or not value:
        raise bad(f"{where}{name} must be a non-empty string, not {value!r}")
    if len(value) > max_len:
        raise bad(f"{where}{name} is longer than {max_len} characters")
    return value
