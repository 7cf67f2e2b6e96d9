"""Agora's answers to a failed request (status-codes.mdx) and the one table that maps
cloudrec's errors to them.

A failure is an HTTP status and either ``{"message"}`` (the general codes: authentication,
routes, rate limit) or ``{"code", "reason"}`` (the endpoint's own codes).  Code 2 carries the
refusal's own message as its ``reason``, as the document's example does ("Acquire: invalid
resourceExpiredHour value!").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloudrec.core.errors import CloudrecError, Kind

INVALID_PARAMETER = 2


@dataclass(frozen=True)
class Failure:
    """An answer of a failed request: ``status`` and a body of ``message`` or (code, reason)."""

    status: int
    code: int | None = None
    reason: str | None = None
    message: str | None = None

    def body(self, detail: str) -> dict[str, Any]:
        if self.message is not None:
            return {"message": self.message}
        return {"code": self.code, "reason": self.reason if self.reason is not None else detail}


# The general status codes, answered with ``message``.
UNAUTHORIZED = Failure(401, message="Unauthorized")
BAD_CREDENTIALS = Failure(401, message="Invalid authentication credentials")
NO_ROUTE = Failure(404, message="no Route matched with those values")
RATE_LIMITED = Failure(429, message="API rate limit exceeded")
# The endpoints' codes, answered with ``code`` and ``reason`` (None: the error's message).
INVALID = Failure(400, INVALID_PARAMETER)
INVALID_CHANNEL_NAME = Failure(400, 401, "invalid_channel_name")
VENDOR_OVER_LOAD = Failure(400, 406, "vendor_over_load")
INTERNAL = Failure(500, 500, "internal_error")
ALREADY_STARTED = Failure(201, 7, "already started")
TASK_CONFLICT = Failure(400, 53, "task conflict")
NO_WORKER = Failure(500, 502, "Failed to allocate worker")
WORKER_NOT_FOUND = Failure(404, 404, "failed to find worker")
INVALID_OPERATION = Failure(400, 49, "invalid operation")
NO_RECORDED_DATA = Failure(206, 435, "no recorded data")

# Reasons the dialect raises itself, and the core's reasons that need a code of their own.
BY_REASON = {
    "agora_no_credentials": UNAUTHORIZED,
    "rate_limited": RATE_LIMITED,
    "invalid_channel_name": INVALID_CHANNEL_NAME,
    "vendor_over_load": VENDOR_OVER_LOAD,
    "resource_in_use": ALREADY_STARTED,
    "resource_unknown": INVALID,  # a resourceid never issued (or of another app): the URL's
    "resource_expired": INVALID,
    "resource_used": INVALID,  # start again with the resource of a running task
    "task_conflict": TASK_CONFLICT,
    "too_many_tasks": NO_WORKER,  # the app's limit, met at start
    "disk_full": NO_WORKER,
    "no_room": NO_WORKER,  # no node of a cluster has room for the recording (docs/cluster.md)
    "worker_unknown": WORKER_NOT_FOUND,
    "task_unknown": WORKER_NOT_FOUND,
    "task_ended": INVALID_OPERATION,  # stop of a task that is already exiting
    "no_recorded_data": NO_RECORDED_DATA,
}

BY_KIND = {
    Kind.INVALID_ARGUMENT: INVALID,
    Kind.UNAUTHENTICATED: BAD_CREDENTIALS,
    Kind.PERMISSION_DENIED: BAD_CREDENTIALS,
    Kind.NOT_FOUND: WORKER_NOT_FOUND,
    Kind.CONFLICT: INVALID,
    Kind.RESOURCE_EXHAUSTED: RATE_LIMITED,
    Kind.FAILED_PRECONDITION: INVALID,
    Kind.UNAVAILABLE: INTERNAL,
    Kind.INTERNAL: INTERNAL,
}


def failure_for(exc: CloudrecError) -> Failure:
    if exc.reason in BY_REASON:
        return BY_REASON[exc.reason]
    return BY_KIND[exc.kind]
