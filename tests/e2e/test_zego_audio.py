"""ZEGO audio formats and sound waves, as a ZEGO client would use them: mp3 and ogg recordings
of single streams and of mixes, fetched from the bucket and probed (codec, one audio stream,
duration, the publishers' tones by FFT), and the ``.sw`` sound-wave file beside each, whose
volumes tell a loud publisher from a silent one."""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pytest

from tests.e2e.test_ownership import worker_pid
from tests.e2e.test_zego_api import download, storage, zego_service
from tests.s3server import FaultyS3
from tests.service import lavfi_publish
from tests.zego import Zego

APP = 1234567891
ROOM = "zwave"
TONES = {"high": 1000, "low": 500}  # stream id -> Hz; stream "mute" publishes silence
CODECS = {"mp3": {"mp3", "mp3float"}, "ogg": {"opus"}}
CONTENT_TYPES = {"mp3": "audio/mpeg", "ogg": "audio/ogg"}


def tone_publish(url: str, hz: int | None) -> subprocess.Popen[bytes]:
    """A small picture and a sine tone at 44.1 kHz (the -21 dBFS of ffmpeg's ``sine``), or
    digital silence when ``hz`` is None."""
    sound = f"sine=frequency={hz or 300}:sample_rate=44100:duration=300"
    return lavfi_publish(
        url,
        "testsrc2=size=160x120:rate=15:duration=300",
        sound if hz else sound + ",volume=0",
        gop=15,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with zego_service(tmp_path_factory.mktemp("zaudio"), APP) as world:
        svc = world[0]
        pubs = [
            tone_publish(svc.publish_url(APP, ROOM, stream, "--uid", f"u-{stream}"), hz)
            for stream, hz in (*TONES.items(), ("mute", None))
        ]
        assert len(svc.wait_streams(svc.app, ROOM, 3)) == 3
        yield world
        for p in pubs:
            p.kill()
            p.wait()


def body(fmt: str, mode: int, stream_type: int = 3, **inp: object) -> dict:
    return {
        "RoomId": ROOM,
        "RecordInputParams": {"RecordMode": mode, "StreamType": stream_type, **inp},
        "RecordOutputParams": {"OutputFileFormat": fmt, "OutputFolder": "record/"},
        "StorageParams": storage(),
    }


def call_all(zego: Zego, action: str, tasks: dict[str, str]) -> dict[str, float]:
    """``action`` on every task; the Unix time each call was made at."""
    at = {}
    for name, task_id in tasks.items():
        before = time.time()
        answer = zego.call(action, {"TaskId": task_id})
        assert answer["Code"] == 0, answer
        at[name] = (before + time.time()) / 2
    return at


def record(
    zego: Zego, bodies: dict[str, dict], seconds: float = 4.0, pause_s: float = 0.0
) -> dict[str, tuple[dict, float]]:
    """Start the tasks together, stop them after ``seconds`` of recording (paused for
    ``pause_s`` halfway through, when asked); per name, the ended task's DescribeRecordStatus
    data and when its recording window ends (the stop, moved back by the pause): a file's
    window is from its BeginTimestamp to then."""
    tasks = {}
    for name, b in bodies.items():
        answer = zego.call("StartRecord", b)
        assert answer["Code"] == 0, answer
        tasks[name] = answer["Data"]["TaskId"]
    for task_id in tasks.values():
        zego.wait_status(task_id, 2, timeout_s=15)
    paused = dict.fromkeys(tasks, 0.0)
    if pause_s:
        time.sleep(seconds / 2)
        paused_at = call_all(zego, "PauseRecord", tasks)
        time.sleep(pause_s)
        resumed_at = call_all(zego, "ResumeRecord", tasks)
        paused = {name: resumed_at[name] - paused_at[name] for name in tasks}
        time.sleep(seconds / 2)
    else:
        time.sleep(seconds)
    stops = call_all(zego, "StopRecord", tasks)
    return {name: (zego.wait_status(tasks[name], 3), stops[name] - paused[name]) for name in tasks}


def decoded(path: Path) -> tuple[set[str], str, np.ndarray, int]:
    """The stream types, the audio codec, the decoded samples (mono float) and their rate."""
    with av.open(str(path)) as c:
        kinds = {s.type for s in c.streams}
        assert len(c.streams.audio) == 1
        codec = c.streams.audio[0].codec_context.name
        frames = [f for f in c.decode(audio=0)]
    rate = frames[0].sample_rate
    pcm = np.concatenate([f.to_ndarray().astype(np.float64).mean(axis=0) for f in frames])
    return kinds, codec, pcm, rate


def has_tone(pcm: np.ndarray, rate: int, hz: int) -> bool:
    """A spectral peak at ``hz`` far above the spectrum's median (the last second)."""
    tail = pcm[-rate:]
    spectrum = np.abs(np.fft.rfft(tail))
    freqs = np.fft.rfftfreq(len(tail), 1 / rate)
    return bool(spectrum[(freqs > hz - 20) & (freqs < hz + 20)].max() > 50 * np.median(spectrum))


def sound_wave(s3: FaultyS3, f: dict, timeout_s: float = 20) -> list[dict]:
    """The .sw file named after a recording file, beside it in the bucket, parsed."""
    key = "record/" + f["FileId"].rsplit(".", 1)[0] + ".sw"
    deadline = time.monotonic() + timeout_s
    while True:
        listed = s3.client().list_objects_v2(Bucket="zegobucket", Prefix=key)
        if listed.get("KeyCount"):
            break
        assert time.monotonic() < deadline, f"{key} is not in the bucket"
        time.sleep(0.2)
    obj = s3.client().get_object(Bucket="zegobucket", Key=key)
    assert obj["ContentType"] == "application/json"
    entries: list[dict] = json.loads(obj["Body"].read())
    return entries


def check_wave(entries: list[dict], seconds: float, key: str, expected: dict[str, str]) -> None:
    """One entry per second of the recording, in order; ``expected`` id -> "loud"/"mute"."""
    assert abs(len(entries) - math.ceil(seconds)) <= 1, (len(entries), seconds)
    assert [e["time"] for e in entries] == list(range(len(entries)))
    settled = entries[2:-1]  # the mix's inputs join in its first second
    for e in settled:
        assert sorted(w[key] for w in e["sound_wave"]) == sorted(expected), e
    for who, kind in expected.items():
        volumes = [w["volume"] for e in settled for w in e["sound_wave"] if w[key] == who]
        if kind == "loud":
            assert min(volumes) > 50, (who, volumes)
        else:
            assert max(volumes) <= 5, (who, volumes)


def test_single_streams_as_mp3_and_ogg_with_a_sound_wave_each(world, tmp_path):
    _svc, s3, zego = world
    streams = [{"StreamId": "high"}, {"StreamId": "mute"}]
    bodies = {
        # RecordMode 1 has no mix: RecordSoundWave in RecordInputParams (stream ids) ...
        "mp3": body("mp3", 1, RecordStreamList=streams, RecordSoundWave=True),
        # ... or in MixConfig, where ZEGO's document puts it (user ids).
        "ogg": body(
            "ogg",
            1,
            RecordStreamList=streams,
            MixConfig={"RecordSoundWave": True, "SoundWaveType": 1},
        ),
    }
    # Paused for 2 s halfway: the files leave the paused span out, the sound waves too.
    for fmt, (data, until) in record(zego, bodies, pause_s=2.0).items():
        files = {f["StreamId"]: f for f in data["RecordFiles"]}
        assert set(files) == {"high", "mute"}, data  # the .sw files are not RecordFiles
        for stream, f in files.items():
            assert f["OutputFileFormat"] == fmt and f["MediaTrackType"] == 1
            assert f["FileId"].endswith("." + fmt) and "_A_" in f["FileId"]
            head = s3.client().head_object(Bucket="zegobucket", Key="record/" + f["FileId"])
            assert head["ContentType"] == CONTENT_TYPES[fmt]
            kinds, codec, pcm, rate = decoded(download(s3, f, tmp_path))
            assert kinds == {"audio"} and codec in CODECS[fmt]
            window = until - f["BeginTimestamp"] / 1000
            # The pause is cut where the worker learns of it and of the resume, each up to
            # a reconcile period after it was asked for.
            assert abs(len(pcm) / rate - window) < 0.5, (fmt, len(pcm) / rate, window)
            assert abs(f["Duration"] / 1000 - window) < 0.5, (fmt, f["Duration"], window)
            if stream == "high":
                assert has_tone(pcm, rate, TONES["high"])
            key, who = ("stream_id", stream) if fmt == "mp3" else ("user_id", f"u-{stream}")
            kind = "loud" if stream == "high" else "mute"
            check_wave(sound_wave(s3, f), window, key, {who: kind})


def test_a_mix_as_mp3_and_as_ogg_holds_the_tones_and_a_sound_wave_of_every_stream_heard(
    world, tmp_path
):
    _svc, s3, zego = world

    def mix(fmt: str, wave_type: int, **config: object) -> dict:
        config = {"MixOutputStreamId": f"mix{fmt}", "MixMode": 2, "RecordSoundWave": True, **config}
        # No MixOutputVideoConfig: an audio-only file composes no picture.
        return body(fmt, 2, MixConfig={**config, "SoundWaveType": wave_type})

    # The ogg mix takes only the picture of stream "low" (StreamConfigList StreamType 2):
    # its tone is not in the file and it is not in the sound wave.
    picture_only = [{"StreamId": "low", "StreamType": 2}]
    bodies = {"mp3": mix("mp3", 0), "ogg": mix("ogg", 1, StreamConfigList=picture_only)}
    for fmt, (data, until) in record(zego, bodies).items():
        [f] = data["RecordFiles"]
        assert f["FileId"].endswith("." + fmt) and f["StreamId"] == f"mix{fmt}"
        assert f["MediaTrackType"] == 1 and f["OutputFileFormat"] == fmt
        kinds, codec, pcm, rate = decoded(download(s3, f, tmp_path))
        assert kinds == {"audio"} and codec in CODECS[fmt]
        window = until - f["BeginTimestamp"] / 1000
        # A mix stops at its first frame past the stop, which it learns of up to a
        # reconcile period later: the file can run a little past the window.
        assert -0.3 < len(pcm) / rate - window < 0.7, (fmt, len(pcm) / rate, window)
        assert has_tone(pcm, rate, TONES["high"])
        if fmt == "mp3":
            assert has_tone(pcm, rate, TONES["low"])
            key, expected = "stream_id", {"high": "loud", "low": "loud", "mute": "mute"}
        else:
            assert not has_tone(pcm, rate, TONES["low"])
            key, expected = "user_id", {"u-high": "loud", "u-mute": "mute"}
        check_wave(sound_wave(s3, f), window, key, expected)


def test_a_killed_worker_leaves_a_playable_mp3_and_a_whole_sound_wave(world, tmp_path):
    """kill -9 of the worker: the recording goes on in a new attempt (docs/reliability.md);
    the killed attempt's part is a playable MP3 with a whole sound wave."""
    svc, s3, zego = world
    b = body("mp3", 1, 1, RecordStreamList=[{"StreamId": "low"}], RecordSoundWave=True)
    task_id = zego.call("StartRecord", b)["Data"]["TaskId"]
    zego.wait_status(task_id, 2, timeout_s=15)
    time.sleep(4)
    pid = worker_pid(svc, task_id)
    assert pid is not None
    subprocess.run(["kill", "-9", str(pid)], check=True)
    deadline = time.monotonic() + 30
    while len(zego.call("DescribeRecordStatus", {"TaskId": task_id})["Data"]["RecordFiles"]) < 2:
        assert time.monotonic() < deadline  # the next attempt's part
        time.sleep(0.3)
    time.sleep(2)
    assert zego.call("StopRecord", {"TaskId": task_id})["Code"] == 0
    files = zego.wait_status(task_id, 3, timeout_s=60)["RecordFiles"]
    f = min(files, key=lambda x: x["BeginTimestamp"])  # the killed attempt's part
    _, codec, pcm, rate = decoded(download(s3, f, tmp_path))
    assert codec in CODECS["mp3"] and len(pcm) / rate > 3.0
    assert has_tone(pcm, rate, TONES["low"])
    entries = sound_wave(s3, f)
    assert len(entries) >= 3 and entries[-1]["sound_wave"][0]["volume"] > 50


def test_audio_formats_and_sound_waves_need_sound(world):
    _, _, zego = world
    cases = [
        (body("mp3", 1, 2), "mp3"),
        (body("ogg", 2, 2, MixConfig={"MixOutputStreamId": "m"}), "ogg"),
        (body("mp4", 1, 2, RecordSoundWave=True), "RecordSoundWave"),
    ]
    for b, words in cases:
        answer = zego.call("StartRecord", b)
        assert answer["Code"] == 300000004, answer
        assert words in answer["Message"] and "StreamType 2" in answer["Message"], answer
