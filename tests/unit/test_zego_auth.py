"""ZEGO request signatures: the documented worked vector, clock skew, replays."""

from __future__ import annotations

import pytest

from cloudrec.api.zego.auth import LimitsNonceStore, signature, verify
from cloudrec.core.errors import CloudrecError

SECRET = "9193cc662a4c0ec135ec71fb57194b38"


def test_the_documents_worked_signature_vector():
    assert signature(12345, "4fd24687296dd9f3", SECRET, 1615186943) == (
        "43e5cfcca828314675f91b001390566a"
    )


def _query(ts: int = 1615186943, nonce: str = "4fd24687296dd9f3", **over: str) -> dict:
    q = {
        "AppId": "12345",
        "SignatureNonce": nonce,
        "Timestamp": str(ts),
        "SignatureVersion": "2.0",
        "Signature": signature(12345, nonce, SECRET, ts),
    }
    q.update(over)
    return q


@pytest.fixture
def nonces():
    """The ``limits`` store (Redis in a deployment) over its memory storage; the database
    store and the window are tested in tests/integration/test_zego_nonces.py."""
    return LimitsNonceStore("memory://")


def _secret(app_id: int) -> str | None:
    return SECRET if app_id == 12345 else None


def test_a_signed_request_passes_once_and_its_replay_is_refused(nonces):
    assert verify(_query(), _secret, 1615186943 + 5, nonces) == 12345
    with pytest.raises(CloudrecError) as err:
        verify(_query(), _secret, 1615186943 + 6, nonces)
    assert err.value.reason == "signature_replayed"


@pytest.mark.parametrize(("skew", "ok"), [(-600, True), (600, True), (601, False), (-601, False)])
def test_timestamps_more_than_ten_minutes_off_are_expired(nonces, skew, ok):
    if ok:
        verify(_query(), _secret, 1615186943 + skew, nonces)
        return
    with pytest.raises(CloudrecError) as err:
        verify(_query(), _secret, 1615186943 + skew, nonces)
    assert err.value.reason == "signature_expired"


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"Signature": "0" * 32}, "signature_invalid"),
        ({"AppId": "54321"}, "app_unknown"),
        ({"SignatureVersion": "1.0"}, None),
        ({"Timestamp": "soon"}, None),
    ],
)
def test_bad_signatures_and_parameters_are_refused(nonces, over, reason):
    with pytest.raises(CloudrecError) as err:
        verify(_query(**over), _secret, 1615186943, nonces)
    assert err.value.reason == reason


def test_an_uppercase_signature_is_accepted(nonces):
    q = _query()
    q["Signature"] = q["Signature"].upper()
    assert verify(q, _secret, 1615186943, nonces) == 12345


def test_a_nonce_longer_than_128_characters_is_refused(nonces):
    with pytest.raises(CloudrecError) as err:
        verify(_query(nonce="n" * 129), _secret, 1615186943, nonces)
    assert "SignatureNonce" in err.value.message
