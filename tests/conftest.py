"""Shared fixtures: free ports, a database per test, a running ``cloudrec serve``."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The package under test is this checkout's own ``src`` (or the copy ``scripts/mutate`` names in
# CLOUDREC_TEST_SRC), never whatever an editable install of another checkout points at.  The
# subprocesses the tests start (``python -m cloudrec.cli``) inherit PYTHONPATH, so they import
# the same tree.
SRC = Path(os.environ.get("CLOUDREC_TEST_SRC") or Path(__file__).parents[1] / "src").resolve()
if str(SRC) not in sys.path[:1]:
    sys.path.insert(0, str(SRC))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(SRC), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
)
import cloudrec  # noqa: E402

if not Path(cloudrec.__file__).resolve().is_relative_to(SRC):
    raise pytest.UsageError(
        f"the tests import cloudrec from {cloudrec.__file__}, not from {SRC}: another "
        f"checkout's install comes first on the path; run with PYTHONPATH={SRC}"
    )

# Refuse to read a developer's own settings.
for _name in [
    k for k in os.environ if k.startswith("CLOUDREC_") and not k.startswith("CLOUDREC_TEST_")
]:
    del os.environ[_name]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every e2e test is slow (it runs ``cloudrec serve`` and real publishers): ``-m "not
    slow"`` leaves the tier out.  Slow unit and integration tests carry the mark themselves."""
    e2e = Path(__file__).parent / "e2e"
    for item in items:
        if item.path.is_relative_to(e2e):
            item.add_marker(pytest.mark.slow)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


POSTGRES_URL = os.environ.get("CLOUDREC_TEST_POSTGRES_URL", "")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database: SQLite in tmp, or a new schema-less PostgreSQL database
    (``CLOUDREC_TEST_POSTGRES_URL``, which .ci/run sets; skipped where it is not set)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("CLOUDREC_TEST_POSTGRES_URL is not set (.ci/run starts PostgreSQL)")
    from sqlalchemy import create_engine, text

    name = f"cloudrec_t{os.getpid()}_{free_port()}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    _drop_database(admin, name)
    admin.dispose()


def _drop_database(admin: Any, name: str) -> None:
    """Drop a test database.  FORCE ends our own leftover sessions, but fails when a process
    of another role (an autovacuum worker) is in the database; a plain DROP cancels that one
    itself, so it is the fallback, tried a few times while our sessions close."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    statements = [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)']
    statements += [f'DROP DATABASE IF EXISTS "{name}"'] * 20
    for n, sql in enumerate(statements):
        try:
            with admin.connect() as conn:
                conn.execute(text(sql))
            return
        except DBAPIError:
            if n == len(statements) - 1:
                raise
            time.sleep(0.25)
