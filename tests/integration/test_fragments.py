"""Fragments (issue 14, docs/cluster.md "Fragments"): a recording node ships its open files to
the operator's fragment store (a real S3 server on loopback) while they grow; when the node is
lost with its disk, the service assembles the lost attempt's file from them, cuts it back to
its last whole fragment and it decodes; nothing shipped stays behind."""

from __future__ import annotations

import threading

import av
import pytest

from cloudrec.config import load_settings
from cloudrec.core.tasks import FileFormat, FileStatus, RecordedFile, TrackType
from cloudrec.serve import finaliser
from cloudrec.storage.fragments import FragmentStore, Shipper
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


def keys(s3: FaultyS3) -> list[str]:
    listed = s3.client().list_objects_v2(Bucket="frags")
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
    shipper = Shipper(
        FragmentStore(url, "ak", "sk"), TASK, 2, lambda: [(7, str(path))], lost.is_set
    )
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
    shipped = keys(s3)
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
    assert keys(s3) == []  # assembled: the shipped objects are dropped


def test_an_attempt_that_ends_well_drops_what_it_shipped_and_a_file_still_there_is_not_fetched(
    tmp_path,
    s3,
    fragmented,  # noqa: F811
):
    url = f"{s3.url}/frags"
    path = tmp_path / "a.mp4"
    path.write_bytes(fragmented)
    store = FragmentStore(url, "ak", "sk")
    Shipper(store, TASK, 1, lambda: [(3, str(path))], lambda: False).ship_once()
    assert keys(s3) == [f"{TASK}/1/3/{0:012d}"]
    settings = service_settings(tmp_path / "svc", url)
    row = RecordedFile(
        TASK,
        "a.mp4",
        str(path),
        FileFormat.MP4,
        FileStatus.RECORDING,
        "s1",
        "u1",
        TrackType.AUDIO_VIDEO,
        0,
        id=3,
        attempt=1,
    )
    assert "path" not in finaliser(settings)(row)  # on the shared spool: kept where it is
    shipper = Shipper(store, TASK, 1, lambda: [], lambda: False)
    shipper.start()
    shipper.stop(ended_well=True)
    assert keys(s3) == []


def test_a_fragment_store_that_is_not_a_bucket_url_is_refused():
    with pytest.raises(ValueError, match="fragment_store must be"):
        FragmentStore("s3.example.com/bucket", "a", "b")
