"""Typed reading of Agora request fields: every refusal names the parameter with its path
(``clientRequest.recordingConfig.maxIdleTime``) and is code 2."""

from __future__ import annotations

from typing import Any

from cloudrec.core.errors import CloudrecError

MAX_UID = 2**32 - 1


def bad(message: str, reason: str | None = None) -> CloudrecError:
    return CloudrecError.invalid_argument(message, reason)


def obj(
    body: dict[str, Any], name: str, where: str = "", *, required: bool = False
) -> dict[str, Any]:
    """The JSON object ``name`` of ``body`` ({} when absent and not required)."""
    value = body.get(name)
    if value is None:
        if required:
            raise bad(f"missing required parameter {where}{name} (parameters are case-sensitive)")
        return {}
    if not isinstance(value, dict):
        raise bad(f"{where}{name} must be a JSON object")
    return value


def number(
    body: dict[str, Any],
    name: str,
    where: str = "",
    *,
    default: int | None = None,
    allowed: range | set[int] | None = None,
) -> int:
    """An integer parameter (``default`` when absent; required when there is none)."""
    value = body.get(name)
    if value is None:
        if default is None:
            raise bad(f"missing required parameter {where}{name} (parameters are case-sensitive)")
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"{where}{name} must be an integer, not {value!r}")
    if allowed is not None and value not in allowed:
        shown = (
            f"[{allowed.start}, {allowed.stop - 1}]"
            if isinstance(allowed, range)
            else ", ".join(map(str, sorted(allowed)))
        )
        raise bad(f"{where}{name} must be in {shown}, not {value}")
    return value


def text(
    body: dict[str, Any],
    name: str,
    where: str = "",
    *,
    required: bool = True,
    max_len: int = 1024,
) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise bad(f"missing required parameter {where}{name} (parameters are case-sensitive)")
        return None
    if not isinstance(value, str) or not value:
        raise bad(f"{where}{name} must be a non-empty string, not {value!r}")
    if len(value.encode()) > max_len:
        raise bad(f"{where}{name} is longer than {max_len} bytes")
    return value


def uid(value: Any, where: str) -> str:
    """A UID as Agora has them: an integer in [1, 2³²−1] written as a string ("527841")."""
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() or len(value) > 10:
        raise bad(f'{where} must be an integer in quotes, such as "527841", not {value!r}')
    if not 1 <= int(value) <= MAX_UID or value != str(int(value)):
        raise bad(f"{where} must be in [1, {MAX_UID}] without leading zeros, not {value!r}")
    return value


def flag(body: dict[str, Any], name: str, where: str = "", *, default: bool = False) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise bad(f"{where}{name} must be true or false, not {value!r}")
    return value


def strings(body: dict[str, Any], name: str, where: str, max_items: int) -> list[str] | None:
    """An array of strings, None when absent."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad(f"{where}{name} must be an array of strings")
    if len(value) > max_items:
        raise bad(f"{where}{name} holds {len(value)} entries; at most {max_items} are allowed")
    return value
