"""Sound-wave files: the volume scale (0-100 from RMS dBFS), one entry per second of the
recording, and a file a killed worker left closed into valid JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cloudrec.media.recorder.soundwave import SoundWave, mean_square, repair, volume

RATE = 48000


def sine(amplitude: float, seconds: float = 1.0, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize(
    ("amplitude", "expected"),
    [
        (1.0, 95),  # full-scale sine: -3 dBFS RMS
        (1 / 8, 65),  # ffmpeg's sine source: -21 dBFS RMS
        (10 ** (-57 / 20) * np.sqrt(2), 5),  # -57 dBFS RMS
        (10 ** (-70 / 20), 0),  # below the -60 dBFS floor
        (0.0, 0),
    ],
)
def test_the_volume_is_the_rms_level_in_dbfs_over_the_last_60_db(amplitude, expected):
    assert volume(mean_square(sine(amplitude))) == expected


def test_full_scale_reads_100_and_nothing_reads_more():
    assert volume(1.0) == 100
    assert volume(4.0) == 100
    assert volume(mean_square(np.array([], dtype=np.int16))) == 0


def test_integer_and_float_pcm_of_the_same_sound_read_the_same():
    floats = sine(0.25)
    s16 = np.round(floats * 32767).astype(np.int16)
    s32 = (floats.astype(np.float64) * 2**31).astype(np.int32)
    assert mean_square(s16) == pytest.approx(mean_square(floats), rel=1e-3)
    assert mean_square(s32) == pytest.approx(mean_square(floats), rel=1e-6)
    stereo = np.stack([s16, s16])  # planar, as a decoder gives it: the same level
    assert volume(mean_square(stereo)) == volume(mean_square(s16))


def test_one_entry_per_second_with_every_stream_fed_in_it(tmp_path):
    path = tmp_path / "a.sw"
    wave = SoundWave(path, "stream_id")
    chunk = RATE // 10
    for n in range(25):  # 2.5 s in 0.1 s chunks; s2 is silent, s3 joins at 1.0 s
        at = n / 10
        wave.add(at, "s1", sine(1 / 8, 0.1))
        wave.add(at, "s2", np.zeros((chunk, 2), np.int16))
        if at >= 1.0:
            wave.add(at, "s3", sine(1.0, 0.1))
    wave.close()
    entries = json.loads(path.read_text())
    assert [e["time"] for e in entries] == [0, 1, 2]  # the last, partial second too
    assert entries[0]["sound_wave"] == [
        {"stream_id": "s1", "volume": 65},
        {"stream_id": "s2", "volume": 0},
    ]
    assert [w["stream_id"] for w in entries[1]["sound_wave"]] == ["s1", "s2", "s3"]
    assert entries[2]["sound_wave"][2] == {"stream_id": "s3", "volume": 95}


def test_a_stream_named_always_is_listed_at_volume_0_in_seconds_without_its_sound(tmp_path):
    path = tmp_path / "b.sw"
    wave = SoundWave(path, "user_id", always=("u1",))
    wave.add(0.0, "u1", sine(1 / 8, 0.5))
    wave.advance(1.2)  # a second with no sound (say, only pictures arrived)
    wave.advance(2.5)
    wave.close()
    entries = json.loads(path.read_text())
    assert [[(w["user_id"], w["volume"]) for w in e["sound_wave"]] for e in entries] == [
        [("u1", 65)],
        [("u1", 0)],
        [("u1", 0)],
    ]


def test_nothing_recorded_is_an_empty_array(tmp_path):
    path = tmp_path / "c.sw"
    SoundWave(path, "stream_id", always=("s1",)).close()
    assert json.loads(path.read_text()) == []


def test_a_file_left_by_a_killed_worker_keeps_its_whole_seconds(tmp_path):
    path = tmp_path / "d.sw"
    wave = SoundWave(path, "stream_id")
    for second in range(4):
        wave.add(float(second), "s1", sine(1 / 8, 1.0))
    wave.advance(4.0)  # seconds 0-3 written and flushed; the file is still open
    text = path.read_text()
    path.write_text(text + ',\n{"time":4,"sound_wa')  # died in the middle of a line
    assert repair(path) == 4
    entries = json.loads(path.read_text())
    assert [e["time"] for e in entries] == [0, 1, 2, 3]
    assert repair(path) == 4  # a closed file stays as it is
    assert json.loads(path.read_text()) == entries
