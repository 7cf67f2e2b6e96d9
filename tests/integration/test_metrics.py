"""``/metrics`` in-process over a real database: parsed with prometheus-client's own parser,
the figures follow what the database holds, and no id is ever a label."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cloudrec.core.tasks import (
    FileFormat,
    FileStatus,
    RecordedFile,
    RecordingSpec,
    TaskState,
    TrackType,
    UploadAttempt,
)
from tests.inprocess import InProcess, basic, in_process

APP = 1234


@pytest.fixture
def api(database_url, data_dir) -> Iterator[InProcess]:
    with in_process(database_url, data_dir) as api:
        app = api.container.apps.create(APP)
        api.auth = basic(APP, app.server_secret)
        api.app.state.metrics.database.cache_s = 0.0  # every scrape reads the database
        yield api


def scrape(api: InProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def test_the_figures_follow_a_recording_and_carry_no_ids(api):
    before = scrape(api)
    assert before[("cloudrec_live_streams", ())] == 0
    api.publish(APP, "room-secret-name", "s1", "alice")
    task = api.container.tasks.start(APP, RecordingSpec(room_id="room-secret-name"), None)
    with api.container.uow() as uow:
        file_id = uow.tasks.add_file(
            RecordedFile(
                task.task_id,
                "a/b.mp4",
                "/spool/b.mp4",
                FileFormat.MP4,
                FileStatus.UPLOADED,
                "s1",
                "alice",
                TrackType.AUDIO_VIDEO,
                1,
                size=2048,
                duration_ms=7500,
            )
        )
        now = datetime.now(UTC)
        uow.delivery.add_upload_attempt(
            UploadAttempt(file_id, "bucket", now, False, "timeout", "x", 9)
        )
        uow.delivery.add_upload_attempt(UploadAttempt(file_id, "bucket", now, True, None, None, 9))
        uow.tasks.add_event(task.task_id, "worker_died", now, "killed by signal 9")
        uow.tasks.update(task.task_id, state=TaskState.COMPLETED, end_reason="stopped")
        uow.commit()
    api.get(f"/v1/apps/{APP}/tasks/{task.task_id}", headers={"Authorization": api.auth})
    after = scrape(api)
    assert after[("cloudrec_live_streams", ())] == 1
    assert after[("cloudrec_tasks", (("state", "completed"),))] == 1
    key = ("cloudrec_tasks_ended_total", (("outcome", "completed"), ("reason", "stopped")))
    assert after[key] == 1
    assert after[("cloudrec_recorded_seconds_total", ())] == 7.5
    assert after[("cloudrec_file_bytes", (("status", "uploaded"),))] == 2048
    failed = (("error_kind", "timeout"), ("result", "failed"), ("target", "bucket"))
    ok = (("error_kind", ""), ("result", "ok"), ("target", "bucket"))
    assert after[("cloudrec_upload_attempts_total", failed)] == 1
    assert after[("cloudrec_upload_attempts_total", ok)] == 1
    assert after[("cloudrec_worker_events_total", (("event", "died"),))] == 1
    route = (
        ("method", "GET"),
        ("route", "/v1/apps/{appid}/tasks/{task_id}"),
        ("status", "200"),
    )
    assert after[("cloudrec_http_requests_total", route)] == 1
    text = api.get("/metrics").text
    assert task.task_id not in text and "room-secret-name" not in text and "alice" not in text


def test_scrapes_within_the_cache_time_cost_one_round_of_queries(api):
    api.app.state.metrics.database.cache_s = 60.0
    first = scrape(api)
    api.publish(APP, "r1", "s1", "alice")
    assert scrape(api)[("cloudrec_live_streams", ())] == first[("cloudrec_live_streams", ())]
    api.app.state.metrics.database.cache_s = 0.0
    assert scrape(api)[("cloudrec_live_streams", ())] == 1
