"""The cost model of docs/cluster.md: a recording's units by mode, inputs and output size, and
a start no machine has room for refused (never queued)."""

from __future__ import annotations

import pytest

from cloudrec.core.cost import recording_units
from cloudrec.core.errors import CloudrecError, Kind
from cloudrec.core.mixing import MixInput, MixSpec
from cloudrec.core.tasks import RecordingSpec, RecordMode


def mixed(width: int, height: int, fps: int) -> RecordingSpec:
    mix = MixSpec(width=width, height=height, fps=fps).to_json()
    return RecordingSpec("r1", mode=RecordMode.MIXED, mix=mix)


def test_a_remux_costs_a_unit_per_stream_and_a_mix_by_inputs_and_output_size():
    assert recording_units(RecordingSpec("r1"), 0) == 1  # started before its stream
    assert recording_units(RecordingSpec("r1"), 3) == 3
    # Measured (docs/benchmarks.md): 4 inputs into 1280x720 30 fps 0.39-0.46 CPU-s/s,
    # 9 inputs 0.82; one unit is about 1 % of a core.
    assert recording_units(mixed(1280, 720, 30), 4) == 17 + 28 + 1
    assert recording_units(mixed(1280, 720, 30), 9) == 17 + 63 + 1
    assert recording_units(mixed(640, 360, 15), 1) == 3 + 7 + 1  # a quarter the pixels, half fps
    # A layout that names its views counts them, live or not yet (Agora starts on empty rooms).
    views = tuple(MixInput(user_id=f"u{i}", room_id="r1") for i in range(5))
    mix = MixSpec(width=1280, height=720, fps=30, inputs=views).to_json()
    assert recording_units(RecordingSpec("r1", mode=RecordMode.MIXED, mix=mix), 0) == 17 + 35 + 1


def test_a_start_that_fits_nowhere_is_refused_with_what_it_needs(tmp_path):
    from cloudrec.bootstrap import bootstrap
    from cloudrec.config import load_settings
    from cloudrec.core.rooms import StreamMeta
    from cloudrec.core.service import PublishTarget, RoomAddress
    from tests.fakes import FakeClock, FakeExecutor

    class Full(FakeExecutor):
        def __init__(self) -> None:
            super().__init__()
            self.asked: list[int] = []

        def room_for(self, units: int) -> str | None:
            self.asked.append(units)
            return None if units <= 2 else f"{units} units: no node has room"

    executor = Full()
    settings = load_settings({"data_dir": tmp_path}, env={})
    c = bootstrap(settings, clock=FakeClock(), executor=executor)
    c.apps.create(5)
    for stream in ("s1", "s2", "s3"):
        target = PublishTarget(RoomAddress(5, "r1"), stream, stream, None)
        c.rooms.published(target, StreamMeta(), "rtmp://127.0.0.1:1/x", "embedded", "")
    with pytest.raises(CloudrecError) as refused:
        c.tasks.start(5, RecordingSpec("r1"), None)
    assert (refused.value.kind, refused.value.reason) == (Kind.UNAVAILABLE, "no_room")
    assert "3 units: no node has room" in refused.value.message
    with c.uow() as uow:  # nothing stored, nothing started
        assert uow.tasks.count_active(5) == 0 and executor.starts == []
    task = c.tasks.start(5, RecordingSpec("r1", user_ids=("s1", "s2")), None)
    assert task.units == 2 and executor.starts == [(task.task_id, 1)]
    assert executor.asked == [3, 2]
    c.engine.dispose()
