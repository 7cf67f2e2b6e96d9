"""Timestamps made continuous for the remux: jumps back and forward, stalls, B-frames."""

from __future__ import annotations

import itertools

from cloudrec.media.recorder.continuity import TimestampRebaser

MS = 0.001  # an FLV time base


def feed(r: TimestampRebaser, stamps: list[tuple[int, float]], pts_offset: int = 0) -> list[int]:
    """Rebase (dts ms, arrival s) pairs on track 0; return the dts written."""
    return [r.rebase(0, "video", dts, dts + pts_offset, 40, MS, at)[0] for dts, at in stamps]


def test_a_track_whose_timestamps_restart_from_zero_goes_on_one_frame_later() -> None:
    r = TimestampRebaser()
    before = [(t, 100 + t / 1000) for t in range(0, 12000, 40)]
    after = [(t, 112 + t / 1000) for t in range(0, 2000, 40)]
    out = feed(r, before + after)
    assert out[: len(before)] == [t for t, _ in before]
    assert out[len(before) :] == [12000 + t for t, _ in after]
    assert r.jumps == 1
    assert r.reasons == ["video: timestamps went back 11.96 s"]


def test_a_forward_jump_far_ahead_of_the_wall_clock_is_closed_up() -> None:
    r = TimestampRebaser()
    out = feed(r, [(0, 100.0), (40, 100.04), (60000, 100.08), (60040, 100.12)])
    assert out == [0, 40, 80, 120]
    assert r.reasons == ["video: timestamps went forward 59.96 s"]


def test_a_stall_that_the_timestamps_follow_is_no_jump() -> None:
    """A publisher silent for 10 s whose timestamps say so, and a burst after a stall."""
    r = TimestampRebaser()
    out = feed(r, [(0, 100.0), (40, 100.04), (10040, 110.04), (10080, 110.04), (10120, 110.05)])
    assert out == [0, 40, 10040, 10080, 10120]
    assert r.jumps == 0


def test_a_restart_after_a_silence_keeps_the_silence_on_the_timeline() -> None:
    r = TimestampRebaser()
    out = feed(r, [(0, 100.0), (40, 100.04), (0, 105.04), (40, 105.08)])
    assert out == [0, 40, 5040, 5080]


def test_tracks_jump_on_their_own_and_composition_offsets_are_kept() -> None:
    r = TimestampRebaser()
    assert r.rebase(0, "video", 5000, 5080, 40, MS, 100.0) == (5000, 5080)
    assert r.rebase(1, "audio", 5010, 5010, 23, MS, 100.0) == (5010, 5010)
    assert r.rebase(0, "video", 0, 80, 40, MS, 100.04) == (5040, 5120)  # B-frame offset kept
    assert r.rebase(1, "audio", 0, 0, 23, MS, 100.04) == (5033, 5033)
    assert r.rebase(1, "audio", 23, 23, 23, MS, 100.06) == (5056, 5056)
    assert [s.split(":")[0] for s in r.reasons] == ["video", "audio"]


def test_repeated_timestamps_move_one_packet_and_leave_no_drift() -> None:
    """Review: every step back, a repeated timestamp included, shifted the track one frame
    for good: 20 repeats in 1000 audio packets left the sound 460 ms behind the picture."""
    r = TimestampRebaser()
    stamps = [(t * 23, 100 + t * 0.023) for t in range(1000)]
    for i in range(50, 1000, 50):  # a repeated timestamp every 50 packets
        stamps[i] = (stamps[i - 1][0], stamps[i][1])
    out = [r.rebase(0, "audio", d, d, 23, MS, at)[0] for d, at in stamps]
    assert all(b > a for a, b in itertools.pairwise(out))
    assert out[-1] == stamps[-1][0]  # no lasting shift
    assert r.jumps == 0
