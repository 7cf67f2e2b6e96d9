"""A fragmented MP4 cut anywhere (a worker killed mid-write) is trimmed to whole fragments
and then decodes without error."""

from __future__ import annotations

import subprocess

import av
import pytest

from cloudrec.core.tasks import FileFormat
from cloudrec.media.recorder.remux import MP4_FLAGS, probe_file, trim_to_last_box


@pytest.fixture(scope="module")
def fragmented(tmp_path_factory):
    path = tmp_path_factory.mktemp("mp4") / "full.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=25:duration=4",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-c:a",
            "aac",
            "-movflags",
            MP4_FLAGS,
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path.read_bytes()


def _decode_all(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.mark.parametrize("fraction", [0.3, 0.55, 0.77, 0.93])
def test_a_cut_file_is_trimmed_to_whole_fragments_and_decodes(tmp_path, fragmented, fraction):
    path = tmp_path / "cut.mp4"
    path.write_bytes(fragmented[: int(len(fragmented) * fraction)])
    removed = trim_to_last_box(path)
    assert removed > 0
    frames = _decode_all(path)
    assert frames >= 25 * int(4 * fraction - 1)
    info = probe_file(path, FileFormat.MP4)
    assert info["size"] == path.stat().st_size
    assert abs(info["duration_ms"] - frames * 40) <= 100


def test_a_whole_file_is_left_alone(tmp_path, fragmented):
    path = tmp_path / "whole.mp4"
    path.write_bytes(fragmented)
    assert trim_to_last_box(path) == 0
    assert _decode_all(path) == 100
