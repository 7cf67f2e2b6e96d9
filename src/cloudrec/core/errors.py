"""One error vocabulary for the whole service.

A :class:`CloudrecError` has a :class:`Kind` and a message for the user.  Each API dialect maps
kinds (and, where it needs finer codes, ``reason``) to its own codes in one table.
"""

from __future__ import annotations

import enum


class Kind(enum.Enum):
    INVALID_ARGUMENT = "invalid_argument"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    FAILED_PRECONDITION = "failed_precondition"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class CloudrecError(Exception):
    """A failure with a kind, a user-facing message, and an optional dialect-neutral reason.

    ``reason`` is a short stable token (``"token_expired"``, ``"stream_live"``) that a dialect may
    use to pick a finer code than the kind alone gives.
    """

    def __init__(self, kind: Kind, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.reason = reason

    def __repr__(self) -> str:
        return f"CloudrecError({self.kind.value}, {self.message!r}, reason={self.reason!r})"

    @classmethod
    def invalid_argument(cls, message: str, reason: str | None = None) -> CloudrecError:
        return cls(Kind.INVALID_ARGUMENT, message, reason)

    @classmethod
    def unauthenticated(cls, message: str, reason: str | None = None) -> CloudrecError:
        return cls(Kind.UNAUTHENTICATED, message, reason)

    @classmethod
    def permission_denied(cls, message: str, reason: str | None = None) -> CloudrecError:
        return cls(Kind.PERMISSION_DENIED, message, reason)

    @classmethod
    def not_found(cls, message: str, reason: str | None = None) -> CloudrecError:
        return cls(Kind.NOT_FOUND, message, reason)

    @classmethod
    def conflict(cls, message: str, reason: str | None = None) -> CloudrecError:
        return cls(Kind.CONFLICT, message, reason)

    @classmethod
    def resource_exhausted(cls, message: str, reason: str | None = None) -> CloudrecError:
        return cls(Kind.RESOURCE_EXHAUSTED, message, reason)

    @classmethod
    def failed_precondition(cls, message: str, reason: str | None = None) -> CloudrecError:
        return cls(Kind.FAILED_PRECONDITION, message, reason)

    @classmethod
    def unavailable(cls, message: str, reason: str | None = None) -> CloudrecError:
        return cls(Kind.UNAVAILABLE, message, reason)

    @classmethod
    def internal(cls, message: str, reason: str | None = None) -> CloudrecError:
        return cls(Kind.INTERNAL, message, reason)
