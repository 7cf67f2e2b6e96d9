"""The mixer's per-input schedule (InputBuffer): each input's picture and sound are taken from
the same source moment, whatever the delivery jitter, stalls, late decoding or timestamp
jumps.  A simulated flash-and-beep publisher (a "flash" picture and a loud beep starting at
the same source time, once a second) feeds the buffer as media would arrive; the output ticks
at its own frame rate, and the flash and beep must land within one output frame of each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cloudrec.media.recorder.mixinput import CHANNELS, JITTER_S, RATE, InputBuffer

IN_FPS = 25
OUT_FPS = 20
CHUNK = 1024  # samples per arriving sound chunk
BEEP_S = 0.2
FLASH_FRAMES = 3


@dataclass
class Arrival:
    at: float  # wall time it reaches the buffer
    ts: float
    kind: str  # "picture" or "audio"
    payload: object


def source(seconds: float, t0: float = 100.0) -> list[tuple[float, str, object]]:
    """(source ts, kind, payload): a flash picture and a beep at every whole second."""
    media: list[tuple[float, str, object]] = []
    for i in range(int(seconds * IN_FPS)):
        ts = t0 + i / IN_FPS
        flash = i % IN_FPS < FLASH_FRAMES
        media.append((ts, "picture", f"flash{i}" if flash else f"dark{i}"))
    n = 0
    while n < seconds * RATE:
        ts = t0 + n / RATE
        idx = np.arange(n, n + CHUNK)
        loud = (idx % RATE) < BEEP_S * RATE
        pcm = np.zeros((CHUNK, CHANNELS), np.int16)
        pcm[loud] = 8000
        media.append((ts, "audio", pcm))
        n += CHUNK
    return media


def run(
    arrivals: list[Arrival], seconds: float, buf: InputBuffer | None = None
) -> tuple[list[float], list[float]]:
    """Ticks the output for ``seconds``; returns the output times of flashes and beep onsets."""
    buf = buf or InputBuffer()
    pending = sorted(arrivals, key=lambda a: a.at)
    flashes: list[float] = []
    sound: list[np.ndarray] = []
    sent = 0
    was_flash = False
    for n in range(int(seconds * OUT_FPS)):
        now = n / OUT_FPS
        while pending and pending[0].at <= now:
            a = pending.pop(0)
            if a.kind == "picture":
                buf.add_picture(a.ts, a.payload)
            else:
                assert isinstance(a.payload, np.ndarray)
                buf.add_audio(a.ts, a.payload)
        want = (n + 1) * RATE // OUT_FPS - sent
        picture, pcm = buf.sample(n / OUT_FPS, want, 1 / OUT_FPS)
        assert pcm.shape == (want, CHANNELS)
        sent += want
        sound.append(pcm)
        flash = str(picture).startswith("flash")
        if flash and not was_flash and (not flashes or now - flashes[-1] > 0.5):
            flashes.append(now)
        was_flash = flash
    loud = np.abs(np.concatenate(sound)[:, 0]) > 1000
    edges = np.flatnonzero(loud[1:] & ~loud[:-1]) + 1
    beeps = [float(e) / RATE for e in edges]
    if loud[0]:
        beeps.insert(0, 0.0)
    return flashes, beeps


def offsets(flashes: list[float], beeps: list[float]) -> list[float]:
    def nearest(f: float) -> float:
        return min(beeps, key=lambda b: abs(b - f))

    return [nearest(f) - f for f in flashes]


def arrive(delay: Callable[[float, str], float], seconds: float = 10) -> list[Arrival]:
    t0 = 100.0
    return [
        Arrival(ts - t0 + delay(ts - t0, kind), ts, kind, payload)
        for ts, kind, payload in source(seconds, t0)
    ]


def assert_in_sync(flashes: list[float], beeps: list[float], expect: int) -> None:
    assert len(flashes) >= expect, flashes
    offs = offsets(flashes, beeps)
    assert all(abs(o) <= 1 / OUT_FPS for o in offs), offs


def test_steady_arrival_keeps_every_flash_with_its_beep() -> None:
    flashes, beeps = run(arrive(lambda t, k: 0.05), 10)
    assert_in_sync(flashes, beeps, 9)
    # Shown JITTER_S behind the newest media: the first flash at about 1 s + the latency.
    assert 0 < flashes[1] - 1.0 < 0.05 + JITTER_S + 0.1


def test_bursty_delivery_keeps_sync() -> None:
    rng = np.random.default_rng(7)
    late = {(k, b): float(rng.uniform(0, 0.2)) for k in ("picture", "audio") for b in range(40)}

    # Whole 0.25 s bursts, each kind's burst a random 0-0.2 s later still (each kind stays in
    # order, as a demuxer delivers it): late, but inside the JITTER_S an input is shown
    # behind its newest media.
    def delay(t: float, kind: str) -> float:
        return (0.25 - t % 0.25) + late[kind, int(t / 0.25)]

    flashes, beeps = run(arrive(delay), 10)
    assert_in_sync(flashes, beeps, 8)


def test_video_decoded_late_is_skipped_not_shown_out_of_step() -> None:
    # The pictures of seconds 3-5 arrive 0.6 s late (a decoder that fell behind): the sound
    # goes on, the late pictures are dropped, and the flashes after it are in step again.
    def delay(t: float, kind: str) -> float:
        return 0.65 if kind == "picture" and 3 <= t < 5 else 0.05

    flashes, beeps = run(arrive(delay), 10)
    late = [f for f in flashes if 3.0 <= f < 5.6]
    in_step = [f for f in flashes if f not in late]
    assert len(in_step) >= 6
    assert all(abs(o) <= 1 / OUT_FPS for o in offsets(in_step, beeps))


def test_stalled_input_resumes_in_sync() -> None:
    # Nothing arrives between 4 and 6 s of wall time; then everything held back comes at once.
    def delay(t: float, kind: str) -> float:
        return (6.0 - t) if 4.0 <= t < 6.0 else 0.05

    flashes, beeps = run(arrive(delay), 10)
    assert_in_sync(flashes, beeps, 7)


def test_timestamp_jump_reanchors() -> None:
    # The publisher's clock jumps 100 s ahead at 5 s: the input is put back on schedule.
    arrivals = []
    for a in arrive(lambda t, k: 0.05):
        if a.at >= 5.0:
            a.ts += 100.0
        arrivals.append(a)
    flashes, beeps = run(arrivals, 10)
    assert len([f for f in flashes if f > 6]) >= 3
    assert_in_sync(flashes, beeps, 8)


def test_nothing_before_the_first_media_and_none_after_the_end() -> None:
    buf = InputBuffer()
    picture, pcm = buf.sample(0.0, 960, 0.05)
    assert picture is None and not pcm.any()
    for i in range(30):
        buf.add_picture(10.0 + i / IN_FPS, f"p{i}")
    shown = [buf.sample(n / OUT_FPS, 2400, 1 / OUT_FPS)[0] for n in range(3)]
    assert shown[0] is not None
    buf.end()
    later = [buf.sample(n / OUT_FPS, 2400, 1 / OUT_FPS)[0] for n in range(3, 30)]
    assert later[-1] is None  # drained and past its newest: patch mode decides
    assert buf.shown == "p29"  # what patch mode "last" shows


def test_reanchor_after_a_pause_leaves_the_paused_span_out() -> None:
    buf = InputBuffer()
    arrivals = arrive(lambda t, k: 0.05)
    run([a for a in arrivals if a.at < 3], 3, buf)
    # Output paused at 3 s for 4 s of wall time: media keeps arriving, the output does not tick.
    for a in sorted((a for a in arrivals if 3 <= a.at < 7), key=lambda a: a.at):
        if a.kind == "picture":
            buf.add_picture(a.ts, a.payload)
        else:
            buf.add_audio(a.ts, a.payload)  # type: ignore[arg-type]
    buf.reanchor()
    picture, _ = buf.sample(3.0, 2400, 1 / OUT_FPS)
    assert isinstance(picture, str)
    shown_index = int(picture.removeprefix("flash").removeprefix("dark"))
    # Resumes near the newest media (~6.9 s of source), not where it paused (3 s).
    assert shown_index / IN_FPS > 6.0


def test_audio_only_input() -> None:
    flashes, beeps = run([a for a in arrive(lambda t, k: 0.05) if a.kind == "audio"], 5)
    assert flashes == []
    gaps = np.diff(beeps)
    assert len(beeps) >= 4 and np.allclose(gaps, 1.0, atol=1 / OUT_FPS)


def test_media_dropped_for_a_slow_reader_does_not_shift_the_sound() -> None:
    # The ingest drops 0.3 s of media (both kinds) at 3.3 s, 0.2 s at 5.3 s (gaps shorter
    # than the sound queued: a reader too slow) and 2.5 s at 6.3 s: the sound after each
    # gap keeps its own timestamps.
    def dropped(t: float) -> bool:
        return 3.3 <= t < 3.6 or 5.3 <= t < 5.5 or 6.3 <= t < 8.8

    arrivals = [a for a in arrive(lambda t, k: 0.05) if not dropped(a.ts - 100)]
    flashes, beeps = run(arrivals, 10)
    assert_in_sync(flashes, beeps, 6)


def test_a_publisher_clock_running_slow_is_followed_without_silence() -> None:
    # The publisher's clock runs 0.2 % slow (source time = 0.998 x wall time): the buffer
    # holds less and less; the schedule follows it, the sound never runs dry.
    seconds = 300
    arrivals = [
        Arrival(a.ts - 100 + 0.05 + (a.ts - 100) * 0.002, a.ts, a.kind, a.payload)
        for a in arrive(lambda t, k: 0.0, seconds)
    ]
    flashes, beeps = run(arrivals, seconds)
    assert_in_sync(flashes, beeps, seconds - 3)
    assert len(beeps) >= seconds - 3  # no second without its beep


def test_jittery_sound_timestamps_do_not_cut_the_sound() -> None:
    # An encoder stamping sound by the system clock: each chunk's timestamp off by up to
    # +-20 ms, the sound itself continuous.
    rng = np.random.default_rng(3)
    arrivals = []
    for a in arrive(lambda t, k: 0.05, 10):
        if a.kind == "audio":
            a = Arrival(a.at, a.ts + float(rng.uniform(-0.02, 0.02)), a.kind, a.payload)
        arrivals.append(a)
    flashes, beeps = run(arrivals, 10)
    assert_in_sync(flashes, beeps, 9)
    assert len(beeps) >= 9


def test_a_publisher_clock_going_back_starts_the_input_again() -> None:
    # At 5 s the encoder restarts its timestamps from 0: the input is put back on schedule.
    arrivals = []
    for a in arrive(lambda t, k: 0.05, 10):
        if a.at >= 5.0:
            a = Arrival(a.at, a.ts - 105.0, a.kind, a.payload)
        arrivals.append(a)
    flashes, beeps = run(arrivals, 10)
    assert len([f for f in flashes if f > 6]) >= 3
    assert_in_sync(flashes, beeps, 8)
