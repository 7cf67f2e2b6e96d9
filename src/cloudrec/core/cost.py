"""What a recording costs a machine, in recording units (docs/cluster.md, "Cost model"): a
node declares how many units it takes, each recording asks for its own, and a start that fits
on no node is refused.

One unit is about 1 % of a core on the machines measured (docs/benchmarks.md): a remux of one
~1 Mb/s stream in a recorder host costs 0.9-1.1 % of a core.  A mix decodes and scales each
input (0.06-0.07 CPU-s per second per 640x360 input, 4 and 9 inputs into 1280x720) and encodes
its picture (x264 veryfast zerolatency at 1280x720 30 fps: 0.17 CPU-s per second, by pixels
and frame rate).
"""

from __future__ import annotations

import math

from cloudrec.core.mixing import MixSpec
from cloudrec.core.tasks import RecordingSpec, RecordMode

REMUX_UNITS = 1  # one stream remuxed into its files
INPUT_UNITS = 7  # one input of a mix decoded and scaled
ENCODE_UNITS_720P30 = 17  # the mixed picture encoded, at 1280x720 and 30 fps
MIX_AUDIO_UNITS = 1  # the sound mixed and encoded
_720P30 = 1280 * 720 * 30


def recording_units(spec: RecordingSpec, live_inputs: int) -> int:
    """The units of a recording of ``spec`` whose room has ``live_inputs`` wanted streams now
    (at least one is counted: a recording may start before its streams; a mix counts at
    least the views its layout names)."""
    inputs = max(1, live_inputs)
    if spec.mode is not RecordMode.MIXED or spec.mix is None:
        return REMUX_UNITS * inputs
    inputs = max(inputs, len(spec.mix.get("inputs") or ()))  # a layout's views, known now
    size = [int(spec.mix.get(k, getattr(MixSpec, k))) for k in ("width", "height", "fps")]
    encode = math.ceil(ENCODE_UNITS_720P30 * math.prod(size) / _720P30)
    return encode + INPUT_UNITS * inputs + MIX_AUDIO_UNITS
