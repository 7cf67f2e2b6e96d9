"""Path parts a request may choose (an output folder, a file prefix): pure string checks.

A task writes its files under ``<spool>/<app id>/<task id>/<parts...>/<name>`` and keeps
them under the same parts in the backup store and the bucket.  A part that is empty, ``.``,
``..``, absolute, or holds a backslash, NUL or another control character could leave that
directory (issue 11: a ZEGO OutputFolder ``../../../../tmp/x`` wrote outside the spool), so it
is refused here, below every dialect; the adapters that join the parts to a directory check
again that the resolved path stays inside it.
"""

from __future__ import annotations

from collections.abc import Iterable

from cloudrec.core.errors import CloudrecError


def part_problem(part: str) -> str | None:
    """Why ``part`` cannot be one path segment under a task's directory, or None if it can."""
    if not part:
        return "is empty"
    if part in (".", ".."):
        return f"is {part!r}"
    if "/" in part:
        return "holds '/' (give each folder as its own part)"
    if "\\" in part:
        return "holds a backslash"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in part):
        return "holds a control character"
    return None


def check_parts(parts: Iterable[str], what: str = "output prefix") -> tuple[str, ...]:
    """``parts`` as a tuple if every one is a safe path segment; ``invalid_argument`` naming
    ``what`` and the part otherwise."""
    checked = tuple(parts)
    for part in checked:
        if not isinstance(part, str):
            raise CloudrecError.invalid_argument(f"{what}: part {part!r} is not a string")
        problem = part_problem(part)
        if problem is not None:
            raise CloudrecError.invalid_argument(f"{what}: part {part!r} {problem}")
    return checked


def is_inside(root: str, path: str) -> bool:
    """Whether the normalised absolute ``path`` is ``root`` or below it (both already
    resolved by the caller, ``/``-separated)."""
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root if root == "/" else root + "/")
