"""What a live publisher does to its timestamps, made continuous for the remux (issue 10,
item 12).

An encoder restarted behind a relay keeps the RTMP connection but starts its timestamps
again from 0; a relay that switches sources jumps them forward by minutes.  A muxer refuses
timestamps that go back ("Invalid argument") and plays a forward jump as a frozen picture.
:class:`TimestampRebaser` shifts every track on its own so that after a jump it goes on one
frame after its last packet (or after the wall-clock time that passed, when the publisher was
also silent for a while): nothing is dropped, the file stays one continuous timeline, and
the tracks stay together within a frame since each of them jumped by the same amount.

A jump says nothing about the pictures (the decoder's configuration is unchanged; a new one
starts a new part, see ``remux.py``), so a new file part is not needed, and one would have
to begin at a keyframe, dropping what lies between the jump and it.
"""

from __future__ import annotations

from dataclasses import dataclass

JUMP_S = 3.0
"""A timestamp that runs ahead of the wall clock by more than this since the track's last
packet is a forward jump.  Any step back is a jump back."""
SILENCE_S = 1.0
# A step back of at most this many packet durations is a repeated timestamp, not a restart.
SMALL_BACK_STEPS = 4
"""A publisher silent for longer than this across a jump: the rebased track keeps the
silence (as a stall without a jump does), so the file's timeline follows the wall clock."""


@dataclass
class _Track:
    last_dts: int  # rebased, in the track's time base
    step: int  # the track's usual advance per packet
    arrival: float  # wall-clock arrival of the last packet (s)
    adjust: int = 0  # added to every timestamp of the track from the last jump on


class TimestampRebaser:
    """Rebases the timestamps of one input connection's tracks after jumps.

    ``rebase`` is called for every packet in demux order; ``jumps`` counts the jumps seen
    and ``reasons`` says what each was ("video: timestamps went back 12.04 s").
    """

    def __init__(self) -> None:
        self._tracks: dict[int, _Track] = {}
        self.jumps = 0
        self.reasons: list[str] = []

    def rebase(
        self,
        track: int,
        kind: str,
        dts: int,
        pts: int | None,
        duration: int | None,
        time_base: float,
        arrival: float,
    ) -> tuple[int, int | None]:
        """The packet's (dts, pts) on the continuous timeline; ``time_base`` in seconds."""
        t = self._tracks.get(track)
        if t is None:
            self._tracks[track] = _Track(dts, max(1, duration or 1), arrival)
            return dts, pts
        dts += t.adjust
        delta = dts - t.last_dts
        waited = max(0.0, arrival - t.arrival)
        if delta <= 0 and -delta <= SMALL_BACK_STEPS * t.step and waited <= SILENCE_S:
            # A repeated or slightly early timestamp (encoders stamping from a system clock):
            # this packet only, moved just past the last; no lasting shift, so no drift.
            dts = t.last_dts + 1
            t.last_dts, t.arrival = dts, arrival
            return dts, None if pts is None else max(dts, pts + t.adjust)
        if delta <= 0 or delta * time_base > waited + JUMP_S:
            advance = t.step
            if waited > SILENCE_S:
                advance = max(advance, round(waited / time_base))
            shift = t.last_dts + advance - dts
            t.adjust += shift
            dts += shift
            self.jumps += 1
            way = "back" if delta <= 0 else "forward"
            self.reasons.append(f"{kind}: timestamps went {way} {abs(delta * time_base):.2f} s")
        else:
            t.step = max(1, duration or delta)
        t.last_dts, t.arrival = dts, arrival
        return dts, None if pts is None else pts + t.adjust
