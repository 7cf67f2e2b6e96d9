"""Joining a stream's sessions into one file (``spec.rejoin``): the files of a stream that
left and came back are held until the task ends, then each stream's parts of one format and
track are appended to the first, the absences closed over or kept as silence (``"fill"``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import av

from cloudrec.core.control import TaskControl
from cloudrec.core.tasks import FileFormat, TrackType
from cloudrec.media.recorder.concat import Part, compatible, concatenate

# Formats whose sessions can be joined into one file (HLS names its segments by its
# playlist; mp3/ogg are re-encoded: each session stays a file of its own).
JOINABLE = (FileFormat.MP4, FileFormat.FLV, FileFormat.AAC)


@dataclass
class Held:
    file_id: int
    stream_id: str
    format: FileFormat
    track: TrackType
    path: Path
    begin_ms: int
    fields: dict[str, object]


def _ms_field(fields: dict[str, object], name: str) -> int:
    value = fields.get(name)
    return value if isinstance(value, int) else 0


def join_sessions(control: TaskControl, held_files: list[Held]) -> list[str]:
    """The files of each stream's sessions (spec.rejoin) as one file per stream and
    track: the later sessions appended to the first, the absences closed over or kept
    with silent sound.  Sessions that cannot share a file (a new picture size or codec)
    stay files of their own.  Returns errors."""
    rejoin = control.load().spec.rejoin
    groups: dict[tuple[str, FileFormat, TrackType], list[Held]] = {}
    for h in held_files:
        groups.setdefault((h.stream_id, h.format, h.track), []).append(h)
    errors = []
    for (_, fmt, _), held in groups.items():
        held.sort(key=lambda h: h.begin_ms)
        parts = [
            Part(h.path, h.begin_ms / 1000, _ms_field(h.fields, "duration_ms") / 1000) for h in held
        ]
        if len(held) > 1 and compatible(parts):
            first = held[0]
            joined = first.path.with_name(first.path.stem + ".joined" + first.path.suffix)
            try:
                seconds = concatenate(parts, fmt, joined, fill_gaps=rejoin == "fill")
                os.replace(joined, first.path)
            except (av.FFmpegError, OSError, ValueError) as exc:
                errors.append(f"joining {first.path.name}: {exc}")
                joined.unlink(missing_ok=True)
            else:
                fields = {
                    **first.fields,
                    "size": first.path.stat().st_size,
                    "duration_ms": round(seconds * 1000),
                }
                # The rows first: a worker killed in between leaves files no row names
                # (spool clutter), never a row naming a file that is gone.
                control.files_merged(first.file_id, [h.file_id for h in held[1:]], **fields)
                for h in held[1:]:
                    h.path.unlink(missing_ok=True)
                continue
        for h in held:
            control.file_closed(h.file_id, str(h.file_id), **h.fields)
    return errors
