"""ZEGO Cloud Recording return codes (return-codes.mdx, plus the two that are only in ZEGO's
Chinese table: 300000005 and 300000006), and the one table mapping cloudrec's errors to them."""

from __future__ import annotations

from cloudrec.core.errors import CloudrecError, Kind

OK = 0
SIGNATURE_EXPIRED = 100000004
SIGNATURE_INVALID = 100000005
NOT_ACTIVATED = 300000002
TOO_MANY_REQUESTS = 300000003
INVALID_PARAMETER = 300000004
GATEWAY_VERIFICATION_FAILED = 300000005
TOO_MANY_TASKS = 300000006
TASK_NOT_FOUND = 300001000
TASK_STOPPED = 300001001
NOT_PAUSED = 300001004
SYSTEM_ERROR = 300010000

BY_REASON = {
    "signature_expired": SIGNATURE_EXPIRED,
    "signature_invalid": SIGNATURE_INVALID,
    "signature_replayed": SIGNATURE_INVALID,
    "app_unknown": NOT_ACTIVATED,
    "rate_limited": TOO_MANY_REQUESTS,
    "too_many_tasks": TOO_MANY_TASKS,
    "no_room": TOO_MANY_TASKS,  # no machine has room for the recording now
    "task_unknown": TASK_NOT_FOUND,
    "task_ended": TASK_STOPPED,
    "not_paused": NOT_PAUSED,
    "room_not_publishing": INVALID_PARAMETER,
}

BY_KIND = {
    Kind.INVALID_ARGUMENT: INVALID_PARAMETER,
    Kind.UNAUTHENTICATED: SIGNATURE_INVALID,
    Kind.PERMISSION_DENIED: GATEWAY_VERIFICATION_FAILED,
    Kind.NOT_FOUND: TASK_NOT_FOUND,
    Kind.CONFLICT: INVALID_PARAMETER,
    Kind.RESOURCE_EXHAUSTED: TOO_MANY_REQUESTS,
    Kind.FAILED_PRECONDITION: INVALID_PARAMETER,
    Kind.UNAVAILABLE: SYSTEM_ERROR,
    Kind.INTERNAL: SYSTEM_ERROR,
}


def code_for(exc: CloudrecError) -> int:
    return BY_REASON.get(exc.reason or "", BY_KIND[exc.kind])
