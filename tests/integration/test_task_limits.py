"""The per-app limit on concurrent recordings, in the task service over a real database."""

from __future__ import annotations

import pytest

from cloudrec.core.errors import CloudrecError, Kind
from cloudrec.core.tasks import RecordingSpec
from tests.inprocess import in_process


def test_an_app_runs_at_most_max_tasks_per_app_recordings_at_once(database_url, data_dir):
    """Regression (issue 12): the limit switched off passed every test (none started more
    recordings than the limit).  Another app is not held back."""
    with in_process(database_url, data_dir, max_tasks_per_app=2) as api:
        c = api.container
        for app_id in (7, 8):
            c.apps.create(app_id)
            api.publish(app_id, "r1", "s1", "alice")
        spec = RecordingSpec(room_id="r1")
        c.tasks.start(7, spec, None)
        c.tasks.start(7, spec, None)
        with pytest.raises(CloudrecError) as err:
            c.tasks.start(7, spec, None)
        assert (err.value.kind, err.value.reason) == (Kind.RESOURCE_EXHAUSTED, "too_many_tasks")
        assert "already runs 2 recordings" in err.value.message
        assert len(api.executor.started) == 2  # the refused one started no worker
        c.tasks.start(8, spec, None)  # another app's recordings count on their own
        assert len(api.executor.started) == 3
