"""The table from cloudrec's errors to Agora's answers: every status, code and reason the
dialect emits is one of status-codes.mdx's, with the body shape it gives."""

from __future__ import annotations

import pytest

from cloudrec.api.agora import codes
from cloudrec.core.errors import CloudrecError, Kind

# (reason raised, HTTP status, body) — status-codes.mdx, verbatim.
EMITTED = [
    ("agora_no_credentials", 401, {"message": "Unauthorized"}),
    ("rate_limited", 429, {"message": "API rate limit exceeded"}),
    ("invalid_channel_name", 400, {"code": 401, "reason": "invalid_channel_name"}),
    ("vendor_over_load", 400, {"code": 406, "reason": "vendor_over_load"}),
    ("resource_in_use", 201, {"code": 7, "reason": "already started"}),
    ("task_conflict", 400, {"code": 53, "reason": "task conflict"}),
    ("too_many_tasks", 500, {"code": 502, "reason": "Failed to allocate worker"}),
    ("disk_full", 500, {"code": 502, "reason": "Failed to allocate worker"}),
    ("worker_unknown", 404, {"code": 404, "reason": "failed to find worker"}),
    ("task_unknown", 404, {"code": 404, "reason": "failed to find worker"}),
    ("task_ended", 400, {"code": 49, "reason": "invalid operation"}),
    ("no_recorded_data", 206, {"code": 435, "reason": "no recorded data"}),
    ("resource_unknown", 400, {"code": 2, "reason": "the message"}),
    ("resource_expired", 400, {"code": 2, "reason": "the message"}),
    ("resource_used", 400, {"code": 2, "reason": "the message"}),
]


@pytest.mark.parametrize(("reason", "status", "body"), EMITTED)
def test_each_reason_is_answered_as_the_document_says(reason, status, body):
    failure = codes.failure_for(CloudrecError(Kind.INTERNAL, "the message", reason))
    assert failure.status == status
    assert failure.body("the message") == body


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        (Kind.INVALID_ARGUMENT, 400, 2),
        (Kind.FAILED_PRECONDITION, 400, 2),
        (Kind.CONFLICT, 400, 2),
        (Kind.NOT_FOUND, 404, 404),
        (Kind.UNAVAILABLE, 500, 500),
        (Kind.INTERNAL, 500, 500),
    ],
)
def test_other_errors_by_kind(kind, status, code):
    failure = codes.failure_for(CloudrecError(kind, "why"))
    assert (failure.status, failure.code) == (status, code)
    assert set(failure.body("why")) == {"code", "reason"}


def test_authentication_failures_are_a_message():
    for kind in (Kind.UNAUTHENTICATED, Kind.PERMISSION_DENIED):
        failure = codes.failure_for(CloudrecError(kind, "wrong secret"))
        assert failure.status == 401
        assert failure.body("wrong secret") == {"message": "Invalid authentication credentials"}


def test_code_2_carries_the_refusals_message_as_its_reason():
    exc = CloudrecError.invalid_argument("clientRequest.resourceExpiredHour must be in [1, 720]")
    assert codes.failure_for(exc).body(exc.message) == {"code": 2, "reason": exc.message}
