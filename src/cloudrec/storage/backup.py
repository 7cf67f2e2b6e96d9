"""The backup store: a local directory (``<data_dir>/backup`` by default).  Files are moved in
from the spool (same filesystem: a rename), so nothing is copied or lost on the way."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from cloudrec.core.delivery import Segment
from cloudrec.core.errors import CloudrecError
from cloudrec.core.paths import check_parts, is_inside


class LocalBackupStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def where(self, app_id: int, task_id: str, key: str) -> str:
        return str(self.root.joinpath(*check_parts((str(app_id), task_id), "task")) / key)

    def keep(self, app_id: int, task_id: str, key: str, path: str, segments: bool = True) -> str:
        home = self.root.joinpath(*check_parts((str(app_id), task_id), "task"))
        dest = home / key
        if not is_inside(str(home.resolve()), str(dest.resolve())):  # issue 11
            raise CloudrecError.invalid_argument(
                f"backup of {key!r} would leave {home}", reason="backup_failed"
            )
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, dest)
            if segments:
                _movehls_segments(Path(path), dest)
        except OSError as exc:
            raise CloudrecError.unavailable(
                f"backup of {key} failed: {exc}", reason="backup_failed"
            ) from exc
        return str(dest)

    def discard(self, path: str) -> None:
        for p in [Path(path), *hls_segments(Path(path))]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


class LocalSpool:
    def exists(self, path: str) -> bool:
        return Path(path).exists()

    def remove(self, path: str, segments: bool = True) -> None:
        for p in [Path(path), *(hls_segments(Path(path)) if segments else [])]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)

    def finished_segments(self, playlist: str, final: bool = False) -> list[Segment]:
        """The segments the playlist lists so far that are still in the spool: the HLS
        muxer adds one when it is finished.  A line still being written is not read.
        ``final`` (the recording is over, perhaps cut short by a dead worker): also the
        segments it does not list, so that none stays behind."""
        path = Path(playlist)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        found, duration = [], 0.0
        for line in text.split("\n")[:-1]:  # whole lines only
            line = line.strip()
            if line.startswith("#EXTINF:"):
                with contextlib.suppress(ValueError):
                    duration = float(line[len("#EXTINF:") :].split(",", 1)[0])
            elif line and not line.startswith("#"):
                seg = path.parent / line
                with contextlib.suppress(FileNotFoundError):
                    found.append(Segment(str(seg), duration, seg.stat().st_size))
        if final:
            listed = {s.path for s in found}
            for seg in hls_segments(path):
                if str(seg) not in listed:
                    with contextlib.suppress(FileNotFoundError):
                        found.append(Segment(str(seg), 0.0, seg.stat().st_size))
        return found


def hls_segments(playlist: Path) -> list[Path]:
    if playlist.suffix != ".m3u8":
        return []
    return sorted(playlist.parent.glob(playlist.stem + "_*.ts"))


def _movehls_segments(src: Path, dest: Path) -> None:
    for seg in hls_segments(src):
        shutil.move(str(seg), dest.parent / seg.name)
