"""Path parts a request chooses, checked in the core below every dialect (issue 11)."""

from __future__ import annotations

import pytest

from cloudrec.core.errors import CloudrecError, Kind
from cloudrec.core.paths import check_parts, is_inside
from cloudrec.core.tasks import RecordingSpec

BAD_PARTS = ["", ".", "..", "/etc", "a/b", "a\\b", "a\x00b", "a\x1fb", "a\x7fb"]


@pytest.mark.parametrize("part", BAD_PARTS)
def test_a_recording_spec_refuses_an_output_prefix_part_that_could_leave_its_directory(part):
    """Bug (issue 11): nothing below the dialects checked the output prefix, so a part such
    as '..' reached the worker's path join."""
    with pytest.raises(CloudrecError) as raised:
        RecordingSpec(room_id="r", output_prefix=("rec", part))
    assert raised.value.kind is Kind.INVALID_ARGUMENT
    assert "output prefix" in raised.value.message


def test_a_stored_spec_with_a_climbing_prefix_is_refused_when_read():
    data = RecordingSpec(room_id="r").to_json()
    data["output_prefix"] = ["..", "..", "tmp"]
    with pytest.raises(CloudrecError):
        RecordingSpec.from_json(data)


def test_plain_parts_pass_unchanged():
    assert check_parts(["rec", "day-1", "A.b_c", "录制"]) == ("rec", "day-1", "A.b_c", "录制")
    assert RecordingSpec(room_id="r", output_prefix=("a", "b")).output_prefix == ("a", "b")


@pytest.mark.parametrize(
    ("root", "path", "inside"),
    [
        ("/spool/1/t", "/spool/1/t", True),
        ("/spool/1/t", "/spool/1/t/a/b.mp4", True),
        ("/spool/1/t", "/spool/1/t2/b.mp4", False),
        ("/spool/1/t", "/spool/1", False),
        ("/spool/1/t", "/tmp/x", False),
        ("/", "/anything", True),
    ],
)
def test_is_inside_compares_whole_segments(root, path, inside):
    assert is_inside(root, path) is inside
