"""The console's session cookie: signed, expiring, bound to the service's key."""

from __future__ import annotations

from cloudrec.console.session import SESSION_S, Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_reads_back_until_it_expires():
    clock = Clock()
    sessions = Sessions(b"key", now=clock)
    made, cookie = sessions.new(1234)
    read = sessions.read(cookie)
    assert read == made and read.app_id == 1234 and not read.operator and len(read.csrf) >= 16
    clock.now += SESSION_S - 1
    assert sessions.read(cookie) == made
    clock.now += 2
    assert sessions.read(cookie) is None


def test_an_operator_session_and_forgeries():
    sessions = Sessions(b"key")
    operator, cookie = sessions.new(None)
    assert sessions.read(cookie) == operator and operator.operator
    body, sig = cookie.rsplit(".", 1)
    assert Sessions(b"another key").read(cookie) is None
    assert sessions.read(body + "." + sig[::-1]) is None
    _, other_cookie = sessions.new(1)
    assert sessions.read(body + "." + other_cookie.rsplit(".", 1)[1]) is None
    for junk in (None, "", "x", "a.b", "." * 600, "%%%." + sig):
        assert sessions.read(junk) is None
