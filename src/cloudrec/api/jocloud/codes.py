"""JoCloud response codes (Cloud Recording RESTful API, appendix "Response code") and the one
table that maps cloudrec's errors to them."""

from __future__ import annotations

from cloudrec.core.errors import CloudrecError, Kind

OK = 0
NO_TOKEN = 1000
INVALID_TOKEN = 1001
NO_APPID = 1002
INVALID_PARAMETER = 2101
INTERNAL_ERROR = 2104
TOO_FREQUENT = 2105
UNSUPPORTED = 4004
ROOM_NOT_PUBLISHING = 4005
TASK_EXISTS = 4011
RESID_INVALID = 4012
RECORDID_UNKNOWN = 4013
NOT_MIXED = 4019

BY_REASON = {
    "token_missing": NO_TOKEN,
    "appid_missing": NO_APPID,
    "rate_limited": TOO_FREQUENT,
    "too_many_tasks": TOO_FREQUENT,
    "no_room": TOO_FREQUENT,  # no machine has room for the recording now: try again later
    "unsupported": UNSUPPORTED,
    "room_not_publishing": ROOM_NOT_PUBLISHING,
    "resource_in_use": TASK_EXISTS,
    "resource_unknown": RESID_INVALID,
    "resource_expired": RESID_INVALID,
    "resource_used": RESID_INVALID,
    "task_unknown": RECORDID_UNKNOWN,
    "task_ended": RECORDID_UNKNOWN,
    "not_mixed": NOT_MIXED,
}

BY_KIND = {
    Kind.INVALID_ARGUMENT: INVALID_PARAMETER,
    Kind.UNAUTHENTICATED: INVALID_TOKEN,
    Kind.PERMISSION_DENIED: INVALID_TOKEN,
    Kind.NOT_FOUND: INVALID_PARAMETER,
    Kind.CONFLICT: TASK_EXISTS,
    Kind.RESOURCE_EXHAUSTED: TOO_FREQUENT,
    Kind.FAILED_PRECONDITION: INVALID_PARAMETER,
    Kind.UNAVAILABLE: INTERNAL_ERROR,
    Kind.INTERNAL: INTERNAL_ERROR,
}


def code_for(exc: CloudrecError) -> int:
    if exc.reason in BY_REASON:
        return BY_REASON[exc.reason]
    return BY_KIND[exc.kind]
