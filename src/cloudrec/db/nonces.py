"""Nonces of signed requests, remembered in the task database (``zego_nonces``).

The database is shared by every API process and outlives each of them, so a nonce seen once is
refused again after a restart and by any other process on the same database (issue 11, #8).
The check is the insert itself: (app_id, nonce) is the primary key, and an insert that loses it
is the replay.  No read-then-insert race: two processes inserting the same nonce at the same
moment cannot both win.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudrec.db.models import ZegoNonceRow


class DatabaseNonceStore:
    """``NonceStore`` over the task database.

    ``clock`` is the only source of time (UTC datetimes): a nonce is remembered from the first
    time it is seen for ``window``, and rows older than that are purged on the way.  Each call
    is its own transaction.
    """

    def __init__(self, engine: Engine, clock: Callable[[], datetime], window: timedelta) -> None:
        self._engine = engine
        self._clock = clock
        self._window = window

    def first_use(self, app_id: int, nonce: str) -> bool:
        """Record ``nonce`` for ``app_id``; False if it was already seen inside the window."""
        now = self._clock()
        try:
            with Session(self._engine) as session, session.begin():
                session.execute(
                    delete(ZegoNonceRow).where(ZegoNonceRow.seen_at < now - self._window)
                )
                session.add(ZegoNonceRow(app_id=app_id, nonce=nonce, seen_at=now))
        except IntegrityError:
            return False
        return True
