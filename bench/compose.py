"""CPU per output frame of the compositor alone: cases A/B/C of bench/record_mix.py, in process.

    python bench/compose.py [--frames 90]

Each input is a decoded-like yuv420p 640x360 frame (random planes; three per input, a new one
every output frame, as live inputs give), composed with template 3 onto the case's canvas
with a timestamp watermark, as the mixer does before encoding. CPU is this process's
utime+stime (one thread) over the frames. Run it with ``PYTHONPATH=<repo>/src``; at an older
commit it measures that commit's compositor (before the yuv420p compositor, the RGB canvas was
converted to yuv420p whole as the mixer did, so that is timed too).
"""

from __future__ import annotations

import argparse
import resource
from datetime import UTC, datetime

import av
import numpy as np

from cloudrec.media.compositor import frame as frame_module
from cloudrec.media.compositor.frame import Canvas, compose
from cloudrec.media.compositor.layout import template_layout
from cloudrec.media.compositor.overlay import TimestampWatermark, Watermarks

CASES = {"A": (4, 1280, 720), "B": (4, 1920, 1080), "C": (9, 1280, 720)}
FPS = 30


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--frames", type=int, default=90, help="output frames per case")
    args = parser.parse_args()
    yuv_compositor = hasattr(frame_module, "planes")
    rng = np.random.default_rng(0)

    def picture() -> av.VideoFrame:
        planar = rng.integers(16, 236, size=(540, 640), dtype=np.uint8)
        return av.VideoFrame.from_ndarray(planar, format="yuv420p")

    for name, (n, w, h) in CASES.items():
        pool = [[picture() for _ in range(n)] for _ in range(3)]
        placements = template_layout(3, [str(i) for i in range(n)], w, h)
        canvas = Canvas(w, h, (30, 30, 30))
        marks = Watermarks(timestamp=TimestampWatermark(10, 10, "%Y-%m-%d %H:%M:%S", 24))
        start = cpu_s()
        for k in range(args.frames):
            out = compose(canvas, list(zip(placements, pool[k % 3], strict=True)))
            marks.paint_onto(out, datetime.fromtimestamp(k / FPS, UTC))
            if not yuv_compositor:  # the RGB canvas, converted for the encoder
                av.VideoFrame.from_ndarray(out, format="rgb24").reformat(format="yuv420p")
        per_frame = (cpu_s() - start) / args.frames
        print(
            f"{name}: {n} inputs -> {w}x{h}: {per_frame * 1000:.2f} ms CPU per frame, "
            f"{per_frame * FPS:.3f} CPU-s per output second at {FPS} fps"
        )


if __name__ == "__main__":
    main()
