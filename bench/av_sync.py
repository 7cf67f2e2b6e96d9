"""A/V sync soak of a mixed recording: flash-and-beep publishers (each second a white frame
and a beep start together at the source; each publisher its own beep frequency and, in the
template-1 mix, its own column), a mixed recording of N seconds, and the offset between each
flash and its beep, per publisher, in the downloaded file.

    python bench/av_sync.py [--seconds 300] [--inputs 2] [--keep FILE]

Prints per input the offsets' median, extremes and the drift (last minute's median minus
the first's), and every offset of more than one frame.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.test_mix_av_sync import FPS, flash_and_beep, measure, offsets
from tests.e2e.test_record_single import fetched, storage_service, wait_task
from tests.jocloud import JoCloud
from tests.s3server import FaultyS3

APP = 10034
ROOM = "soak"
FREQ, STEP = 1000, 600  # input i beeps at FREQ + STEP * i Hz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--inputs", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="copy the recorded file here")
    args = parser.parse_args()
    s3 = FaultyS3().start()
    s3.client().create_bucket(Bucket="recbucket")
    with tempfile.TemporaryDirectory() as tmp:
        svc = storage_service(Path(tmp), s3)
        # Each input its own beep frequency and, in template 1, its own column (join
        # order: each publisher is listed before the next starts).
        pubs = []
        for i in range(args.inputs):
            url = svc.publish_url(APP, ROOM, f"cam{i}", "--uid", f"u{i}")
            pubs.append(flash_and_beep(url, args.seconds + 60, FREQ + STEP * i))
            svc.wait_streams(svc.app, ROOM, i + 1)
            time.sleep(0.37)  # flashes of different inputs at different moments
        try:
            jo = JoCloud(svc.http, APP, svc.app["server_secret"])
            out = {
                "streamtype": 0,
                "videowidth": 640,
                "videoheight": 240,
                "videobitrate": 600,
                "videofps": FPS,
                "videogop": 50,
            }
            resid = jo.apply()
            body = jo.start_body(
                resid, ROOM, "", streamtype=1, mixconfig={"templateid": 1, "output": out}
            )
            body.pop("uid")
            record_id = jo.call("POST", "startrecord", body)["recordid"]
            time.sleep(args.seconds)
            jo.stop(resid, ROOM, record_id)
            task = wait_task(svc, record_id, {"completed", "failed"}, timeout_s=120)
            [f] = task["files"]
            path = fetched(svc, task, f, timeout_s=120)
            if args.keep:
                shutil.copy(path, args.keep)
            results = []
            for i in range(args.inputs):
                columns = (i / args.inputs, (i + 1) / args.inputs)
                results.append(measure(path, FREQ + STEP * i, columns))
        finally:
            for p in pubs:
                p.kill()
                p.wait()
            svc.stop()
            s3.stop()
    print(
        f"{args.inputs} inputs, {args.seconds} s, output {FPS} fps "
        f"(one frame = {1000 / FPS:.0f} ms)"
    )
    all_ms = []
    for i, (flashes, beeps) in enumerate(results):
        ms = [1000 * o for o in offsets(flashes, beeps)]
        all_ms += ms
        first, last = statistics.median(ms[:60]), statistics.median(ms[-60:])
        print(
            f"input {i} ({FREQ + STEP * i} Hz): {len(ms)} flashes; offset beep-flash ms: median "
            f"{statistics.median(ms):.1f}, min {min(ms):.1f}, max {max(ms):.1f}; drift (last "
            f"minute - first minute) {last - first:+.1f}"
        )
        for fl, m in zip(flashes, ms, strict=True):
            if abs(m) > 1000 / FPS:
                print(f"  outside: flash at {fl:.2f} s in the file, offset {m:.1f} ms")
    inside = sum(1 for m in all_ms if abs(m) <= 1000 / FPS)
    print(f"within one frame: {inside} of {len(all_ms)}")


if __name__ == "__main__":
    main()
