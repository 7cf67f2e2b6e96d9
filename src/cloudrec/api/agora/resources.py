"""Agora resource ids: cloudrec's own resource (one task, valid five minutes, as Agora's is)
bound to the acquire's ``cname``, ``uid`` and ``resourceExpiredHour``.

``{core}.{hours}.{tag}``: ``tag`` is an HMAC (the app's server secret) of the rest, so a
``start`` is refused unless it names the channel and UID its ``acquire`` did ("Must match the
cname used in the acquire request"), and the hours come back as the acquire gave them.
"""

from __future__ import annotations

import hashlib
import hmac

from cloudrec.api.agora.fields import bad

TAG_CHARS = 24


def _tag(secret: str, core: str, cname: str, uid: str, hours: int) -> str:
    message = "\n".join((core, cname, uid, str(hours))).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()[:TAG_CHARS]


def issue(secret: str, core: str, cname: str, uid: str, hours: int) -> str:
    return f"{core}.{hours}.{_tag(secret, core, cname, uid, hours)}"


def redeem(secret: str, resource_id: str, cname: str, uid: str) -> tuple[str, int]:
    """(cloudrec's resource, resourceExpiredHour) of ``resource_id``; code 2 when it was not
    issued to this app for this ``cname`` and ``uid``."""
    parts = resource_id.split(".")
    hours_ok = parts[1:2] != [] and parts[1].isascii() and parts[1].isdigit() and len(parts[1]) <= 3
    if len(parts) != 3 or not hours_ok or len(parts[2]) != TAG_CHARS:
        raise bad(
            f"resourceid {resource_id!r} was not issued by acquire", reason="resource_unknown"
        )
    core, hours, tag = parts[0], int(parts[1]), parts[2]
    if not hmac.compare_digest(tag, _tag(secret, core, cname, uid, hours)):
        raise bad(
            f"resourceid {resource_id!r} was not acquired for cname {cname!r} and uid {uid!r}: "
            "start must name the cname and uid of its acquire",
            reason="resource_unknown",
        )
    return core, hours
