"""Fragments (issue 14, docs/cluster.md "Fragments"): a recording node ships its open files to
the operator's fragment store (a real S3 server on loopback) while they grow; when the node is
lost with its disk, the service assembles the lost attempt's file from them, cuts it back to
its last whole fragment and it decodes; nothing shipped stays behind."""

from __future__ import annotations

import io
import threading
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from cloudrec.bootstrap import bootstrap
from cloudrec.config import load_settings, node_files, node_name
from cloudrec.core.control import TaskControl
from cloudrec.core.tasks import (
    FileFormat,
    FileStatus,
    RecordedFile,
    RecordingSpec,
    StorageTarget,
    TrackType,
)
from cloudrec.serve import finaliser
from cloudrec.storage.fragments import FragmentStore, Shipper
from tests.fakes import FakeExecutor
from tests.integration.test_crash_safe_mp4 import fragmented  # noqa: F401  (fixture)
from tests.s3server import FaultyS3

TASK = "t" * 35


@pytest.fixture
def s3():
    server = FaultyS3().start()
    server.client().create_bucket(Bucket="frags")
    yield server
    server.stop()


def service_settings(data_dir, url: str):  # type: ignore[no-untyped-def]
    """The service's settings with the fragment store, as an operator sets them."""
    store = {"fragment_store": url, "fragment_store_access_key": "ak"}
    return load_settings({"data_dir": data_dir, **store, "fragment_store_secret_key": "sk"}, env={})


def keys(s3: FaultyS3, prefix: str = "") -> list[str]:
    """The store's objects (one moto backend serves every test of the process: a test that
    leaves objects on purpose is told apart by its task's prefix)."""
    listed = s3.client().list_objects_v2(Bucket="frags", Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_a_lost_nodes_file_is_assembled_from_what_it_shipped_and_decodes(
    tmp_path,
    s3,
    fragmented,  # noqa: F811
):
    url = f"{s3.url}/frags/cluster-a"  # the store as an operator writes it, prefix and all
    node_spool = tmp_path / "node" / "spool"
    path = node_spool / "1" / TASK / "cam.mp4"
    path.parent.mkdir(parents=True)
    lost = threading.Event()
    shipper = Shipper(FragmentStore(url, "ak", "sk"), TASK, 2, lost.is_set)
    shipper.opened(7, str(path), "mp4")
    # The recorder writes; the node ships what each moment added (the last write lands
    # after the last shipment: it is lost with the node).
    cuts = [int(len(fragmented) * f) for f in (0.2, 0.5, 0.8, 0.9)]
    for end in cuts[:3]:
        path.write_bytes(fragmented[:end])
        shipper.ship_once()
    assert shipper.ship_once() == 0  # nothing new, nothing sent
    path.write_bytes(fragmented[: cuts[3]])
    lost.set()
    assert shipper.ship_once() == 0  # an attempt that lost its task ships no more
    shipped = keys(s3, "cluster-a/")
    assert shipped == [f"cluster-a/{TASK}/2/7/{offset:012d}" for offset in [0, *cuts[:2]]]

    # The machine is gone with its disk: the service keeps the file from the store.
    path.unlink()
    settings = service_settings(tmp_path / "service", url)
    row = RecordedFile(
        TASK,
        "cam.mp4",
        str(path),
        FileFormat.MP4,
        FileStatus.RECORDING,
        "s1",
        "u1",
        TrackType.AUDIO_VIDEO,
        0,
        id=7,
        attempt=2,
    )
    fields = finaliser(settings)(row)
    kept = settings.spool_dir / "assembled" / TASK / "7-cam.mp4"
    assert fields["path"] == str(kept)
    data = kept.read_bytes()
    assert 0 < len(data) <= cuts[2] and fragmented.startswith(data)  # whole fragments of it
    assert fields["size"] == len(data) and int(fields["duration_ms"]) > 1000
    with av.open(str(kept)) as c:
        frames = sum(1 for _ in c.decode(video=0))
    assert frames >= 25
    # What was shipped stays until the row names the copy; delivery then takes the copy as
    # it is (not fetched again) and drops the objects.
    assert len(keys(s3, "cluster-a/")) == 3
    remote = node_files(settings)
    moved = replace(row, path=str(kept))
    assert remote.fetch(moved) == str(kept) and kept.read_bytes() == data
    remote.fetched(moved)
    assert keys(s3, "cluster-a/") == []


def test_an_attempt_that_ends_well_keeps_its_finished_files_for_the_service_and_drops_the_rest(
    tmp_path,
    s3,
    fragmented,  # noqa: F811
):
    url = f"{s3.url}/frags/ended-well"
    store = FragmentStore(url, "ak", "sk")
    shipper = Shipper(store, TASK, 1)
    a, b, c = (tmp_path / n for n in ("a.mp4", "b.mp4", "c.mp4"))
    for file_id, path in ((3, a), (4, b), (5, c)):
        path.write_bytes(fragmented[: len(fragmented) // 2])
        shipper.opened(file_id, str(path), "mp4")
    shipper.ship_once()
    assert len(keys(s3, "ended-well/")) == 3
    c.write_bytes(fragmented[:1000])  # joined into another, or cut short: it shrank
    assert shipper.finish(3, str(a)) and shipper.finish(5, str(c))
    assert keys(s3, "ended-well/") == [
        f"ended-well/{TASK}/1/3/{0:012d}",
        f"ended-well/{TASK}/1/4/{0:012d}",
        f"ended-well/{TASK}/1/5/{0:012d}",
    ]
    assert (
        s3.client().get_object(Bucket="frags", Key=keys(s3, "ended-well/")[2])["Body"].read()
        == c.read_bytes()
    )
    shipper.start()
    shipper.stop(ended_well=True)  # file 4 never finished (its row merged away): it goes
    assert keys(s3, "ended-well/") == [
        f"ended-well/{TASK}/1/3/{0:012d}",
        f"ended-well/{TASK}/1/5/{0:012d}",
    ]

    # A file this machine wrote and still has is read where it is, not fetched.
    settings = service_settings(tmp_path / "svc", url)
    row = RecordedFile(
        TASK,
        "a.mp4",
        str(a),
        FileFormat.MP4,
        FileStatus.RECORDING,
        "s1",
        "u1",
        TrackType.AUDIO_VIDEO,
        0,
        id=3,
        attempt=1,
        node=node_name(settings),
    )
    assert "path" not in finaliser(settings)(row)
    assert node_files(settings).fetch(replace(row, node=None)) is None  # written before 0010


def _flv(path: Path, shipper: Shipper, frames: int = 75) -> None:
    """A real FLV, written by FFmpeg's muxer (which writes its duration and size into the
    header at the end), shipped while it grows."""
    with av.open(str(path), "w", format="flv") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 160, 120, "yuv420p"
        v.options = {"preset": "ultrafast", "g": "25"}
        noise = np.random.default_rng(1)  # pictures that do not compress to nothing
        for i in range(frames):
            picture = noise.integers(0, 256, (120, 160, 3), np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            out.mux(v.encode(frame.reformat(format="yuv420p")))
            if i % 25 == 24:
                shipper.ship_once()
        out.mux(v.encode(None))


def test_a_file_another_node_wrote_is_delivered_from_the_store_byte_for_byte(
    tmp_path, s3, database_url, data_dir
):
    """Issue 14: across machines the service cannot read a node's spool.  The node ships each
    file whole before its row says it is recorded (the objects its muxer rewrote at the end put
    again) and drops its own copy; the service's delivery takes the file from the store into
    its spool and uploads it to the user's bucket as the node wrote it."""
    s3.client().create_bucket(Bucket="recs")
    url = f"{s3.url}/frags"
    settings = load_settings(
        {
            "data_dir": data_dir,
            "database_url": database_url,
            "node_name": "svc",
            "fragment_store": url,
            "fragment_store_access_key": "ak",
            "fragment_store_secret_key": "sk",
            "allow_private_targets": True,  # the user's bucket is on loopback
        },
        env={},
    )
    c = bootstrap(settings, executor=FakeExecutor())
    try:
        c.apps.create(77)
        target = StorageTarget("s3", s3.url, "recs", "ak", "sk", path_style=True)
        task = c.tasks.start(77, RecordingSpec(room_id="r1"), target, require_live=False)
        shipper = Shipper(FragmentStore(url, "ak", "sk"), task.task_id, 1)
        control = TaskControl(
            c.uow, c.clock, task.task_id, 1, callbacks=c.callbacks, node="rec-1", shipper=shipper
        )
        assert control.claim() is not None
        spool = tmp_path / "rec-1" / "spool"
        spool.mkdir(parents=True)
        flv, jpg = spool / "cam.flv", spool / "shot.jpg"

        def row(path: Path, fmt: FileFormat) -> RecordedFile:
            track = TrackType.VIDEO
            return RecordedFile(
                task.task_id, path.name, str(path), fmt, FileStatus.RECORDING, "s1", "u1", track, 0
            )

        flv_id = control.file_opened(row(flv, FileFormat.FLV))
        _flv(flv, shipper)
        [(_, first)] = [
            (k, s3.client().get_object(Bucket="frags", Key=k)["Body"].read()) for k in keys(s3)[:1]
        ]
        written = flv.read_bytes()
        assert written[: len(first)] != first  # the muxer rewrote the header it had shipped
        control.file_closed(flv_id, "cam.flv", size=len(written))
        jpg.write_bytes(_jpeg())
        shot = jpg.read_bytes()
        jpg_id = control.file_written(row(jpg, FileFormat.JPG))
        assert not flv.exists() and not jpg.exists()  # off the node's disk: in the store
        files = {f.id: f for f in c.tasks.files(task.task_id)}
        assert {f.node for f in files.values()} == {"rec-1"}
        assert files[flv_id].status is files[jpg_id].status is FileStatus.RECORDED

        for file_id in (flv_id, jpg_id):
            assert c.delivery.deliver_file(file_id) is FileStatus.UPLOADED
        got = {
            k: s3.client().get_object(Bucket="recs", Key=k)["Body"].read()
            for k in ("cam.flv", "shot.jpg")
        }
        assert got == {"cam.flv": written, "shot.jpg": shot}
        assert keys(s3, task.task_id) == []  # nothing left in the store once delivered
        with av.open(io.BytesIO(got["cam.flv"])) as played:
            assert played.duration and played.duration / 1e6 == pytest.approx(3.0, abs=0.1)
            assert sum(1 for _ in played.decode(video=0)) == 75
        assert not any((settings.spool_dir / "assembled").rglob("*.*"))  # local copies gone
    finally:
        c.engine.dispose()


def _jpeg() -> bytes:
    frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
    buf = io.BytesIO()
    with av.open(buf, "w", format="image2pipe") as out:
        s = out.add_stream("mjpeg", rate=1)
        s.width, s.height, s.pix_fmt = 16, 16, "yuvj420p"
        out.mux(s.encode(frame.reformat(format="yuvj420p")))
        out.mux(s.encode(None))
    return buf.getvalue()


def test_a_fragment_store_that_is_not_a_bucket_url_is_refused():
    with pytest.raises(ValueError, match="fragment_store must be"):
        FragmentStore("s3.example.com/bucket", "a", "b")
