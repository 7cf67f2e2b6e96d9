"""Hand-built H.264 SEI: emulation prevention, sizes past 255, and a decoder that reads it."""

from __future__ import annotations

import os

import pytest

from cloudrec.media.recorder.sei import (
    _emulation_prevention,
    avcc_prefixed,
    find_sei_payloads,
    sei_nal,
)


@pytest.mark.parametrize("size", [0, 1, 238, 239, 254, 255, 600, 2048])
def test_a_payload_of_any_size_round_trips_through_an_avcc_access_unit(size):
    payload = os.urandom(size)
    unit = avcc_prefixed(sei_nal(payload)) + avcc_prefixed(b"\x65" + os.urandom(100))
    assert find_sei_payloads(unit) == [payload]


def test_zero_runs_get_emulation_prevention_bytes():
    assert _emulation_prevention(b"\x00\x00\x01\x00\x00\x00") == b"\x00\x00\x03\x01\x00\x00\x03\x00"
    nal = sei_nal(b"\x00" * 40)
    assert b"\x00\x00\x00" not in nal and b"\x00\x00\x01" not in nal
    assert find_sei_payloads(avcc_prefixed(nal)) == [b"\x00" * 40]


def test_ffmpeg_decodes_a_stream_whose_frames_carry_the_sei(tmp_path):
    import av

    from cloudrec.media.recorder.mixencode import with_sei

    path = tmp_path / "sei.mp4"
    out = av.open(str(path), "w", format="mp4")
    v = out.add_stream("libx264", rate=10)
    v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
    for i in range(10):
        frame = av.VideoFrame(64, 48, "yuv420p")
        frame.pts = i
        for p in v.encode(frame):
            out.mux(with_sei(p, b"hello"))
    for p in v.encode(None):
        out.mux(with_sei(p, b"hello"))
    out.close()
    with av.open(str(path)) as c:
        packets = [bytes(p) for p in c.demux(video=0) if p.size]
        decoded = sum(1 for _ in c.decode(video=0))
    assert len(packets) == 10 and all(find_sei_payloads(p) == [b"hello"] for p in packets)
    with av.open(str(path)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 10
    assert decoded == 0  # the demux pass consumed the packets
