"""A/V sync soak of a mixed recording: flash-and-beep publishers (a white frame and a 1 kHz
beep start together every second at the source), a mixed recording of N seconds, and the
offset between each flash and its beep in the downloaded file.

    python bench/av_sync.py [--seconds 300] [--inputs 2] [--keep FILE]

Prints the offsets' median, extremes and the drift (last minute's median minus the first's).
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

from tests.e2e.test_mix_av_sync import FPS, flash_and_beep, measure
from tests.e2e.test_record_single import fetched, storage_service, wait_task
from tests.jocloud import JoCloud
from tests.s3server import FaultyS3

APP = 10034
ROOM = "soak"


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
        pubs = [
            flash_and_beep(
                svc.publish_url(APP, ROOM, f"cam{i}", "--uid", f"u{i}"), args.seconds + 60
            )
            for i in range(args.inputs)
        ]
        try:
            assert len(svc.wait_streams(svc.app, ROOM, args.inputs)) == args.inputs
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
            flashes, beeps = measure(path)
        finally:
            for p in pubs:
                p.kill()
                p.wait()
            svc.stop()
            s3.stop()
    offsets = [min(beeps, key=lambda b, fl=fl: abs(b - fl)) - fl for fl in flashes]
    ms = [1000 * o for o in offsets]
    first = statistics.median(ms[:60])
    last = statistics.median(ms[-60:])
    print(
        f"{args.inputs} inputs, {args.seconds} s, {len(ms)} flashes, output {FPS} fps "
        f"(one frame = {1000 / FPS:.0f} ms)"
    )
    print(
        f"offset beep-flash ms: median {statistics.median(ms):.1f}, min {min(ms):.1f}, "
        f"max {max(ms):.1f}; drift (last minute - first minute) {last - first:+.1f}"
    )
    frame_ms = 1000 / FPS
    print(f"within one frame: {sum(1 for m in ms if abs(m) <= frame_ms)} of {len(ms)}")
    for fl, m in zip(flashes, ms, strict=True):
        if abs(m) > frame_ms:
            print(f"  outside: flash at {fl:.2f} s in the file, offset {m:.1f} ms")


if __name__ == "__main__":
    main()
