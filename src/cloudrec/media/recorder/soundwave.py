"""Sound-wave files (ZEGO ``RecordSoundWave``): each stream's volume, once a second.

The file is JSON: an array with one entry per second of its recording file, in order::

    [
    {"time":0,"sound_wave":[{"stream_id":"s1","volume":63},{"stream_id":"s2","volume":0}]},
    {"time":1,"sound_wave":[...]}
    ]

``time`` is whole seconds into the recording file (its timeline: a paused span is left out
of both); the entry covers ``[time, time + 1)``, the last one what is left.  The key is
``stream_id`` or ``user_id`` (SoundWaveType 0 or 1), as in ZEGO's StartRecord document.

``volume`` is 0-100 from the RMS level of the second's samples (all channels) in dBFS, full
scale being amplitude 1.0 (a full-scale sine reads -3 dBFS): -60 dBFS and below is 0,
0 dBFS is 100, linear in dB in between.  The tones ffmpeg's ``sine`` source makes (amplitude
1/8, -21 dBFS RMS) read 65; digital silence reads 0.

Entries are written and flushed one line at a time, so a killed worker leaves every whole
second it measured: :func:`repair` closes such a file into valid JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, TextIO

import numpy as np

FLOOR_DBFS = -60.0


def mean_square(samples: np.ndarray) -> float:
    """The mean of the squared samples, scaled to full scale 1.0 (integer PCM is divided by
    its type's full scale; float PCM is taken as it is)."""
    if samples.size == 0:
        return 0.0
    values = samples.astype(np.float64)
    if np.issubdtype(samples.dtype, np.integer):
        values /= float(-np.iinfo(samples.dtype).min)
    return float(np.mean(values * values))


def volume(mean_sq: float) -> int:
    """0-100 from a mean square (full scale 1.0): the RMS in dBFS over [-60, 0], linearly."""
    if mean_sq <= 0.0:
        return 0
    dbfs = 10.0 * math.log10(mean_sq)
    return max(0, min(100, round((dbfs - FLOOR_DBFS) * 100.0 / -FLOOR_DBFS)))


class SoundWave:
    """Writes one sound-wave file as the sound arrives.

    Feed it with :meth:`add` (samples of one stream, starting ``at_s`` seconds into the
    recording) and :meth:`advance` (the recording has reached ``at_s``, with or without
    sound); a second's entry is written when the recording passes its end.  ``always``
    names streams listed in every entry (volume 0 in a second that brought none of their
    sound); others are listed in the seconds they sent sound in.  One thread uses it.
    """

    def __init__(self, path: Path, key: str, always: tuple[str, ...] = ()) -> None:
        self.path = path
        self.key = key
        self.always = always
        self.entries = 0
        self._second = 0
        self._reached = 0.0  # how far into the recording it has been fed (s)
        self._levels: dict[str, list[float]] = {}  # who -> [sum of mean squares x n, n]
        self._file: TextIO | None = path.open("w", encoding="utf-8")
        self._file.write("[\n")
        self._file.flush()

    def add(self, at_s: float, who: str, samples: np.ndarray) -> None:
        self.advance(at_s)
        n = samples.size
        if n:
            level = self._levels.setdefault(who, [0.0, 0.0])
            level[0] += mean_square(samples) * n
            level[1] += n

    def advance(self, at_s: float) -> None:
        self._reached = max(self._reached, at_s)
        while at_s >= self._second + 1:
            self._emit()

    def close(self) -> None:
        """Write the last (partial) second and close the array."""
        if self._file is None:
            return
        if self._levels or self._reached > self._second:
            self._emit()
        self._file.write("\n]\n")
        self._file.close()
        self._file = None

    def _emit(self) -> None:
        assert self._file is not None
        names = [*self.always, *(w for w in self._levels if w not in self.always)]
        wave: list[dict[str, Any]] = []
        for who in names:
            total, n = self._levels.get(who, (0.0, 0.0))
            wave.append({self.key: who, "volume": volume(total / n) if n else 0})
        entry = json.dumps(
            {"time": self._second, "sound_wave": wave}, separators=(",", ":"), ensure_ascii=False
        )
        self._file.write((",\n" if self.entries else "") + entry)
        self._file.flush()
        self.entries += 1
        self._second += 1
        self._levels = {}


def repair(path: Path) -> int:
    """Close a sound-wave file that a killed worker left open: keep its whole entries, drop a
    half-written one, end the array.  Returns the number of entries."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    entries = []
    for line in text.splitlines():
        line = line.strip().rstrip(",")
        if not line.startswith("{"):
            continue
        try:
            entries.append(json.loads(line))
        except ValueError:
            break  # the line the worker was writing when it died
    body = ",\n".join(json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in entries)
    path.write_text(f"[\n{body}\n]\n", encoding="utf-8")
    return len(entries)
