"""A request kept for the console: every dialect's secrets hidden, the rest as sent."""

from __future__ import annotations

import json

from cloudrec.api.masking import MAX_CHARS, masked, request_record


def test_every_dialects_secret_fields_are_hidden_and_the_rest_kept():
    body = {
        "roomid": "r1",
        "storagecfg": {"accesskey": "AK1", "secretkey": "SK1", "bucket": "b"},  # JoCloud
        "RecordOutputParams": {
            "StorageParams": {"AccessKeyId": "AK2", "AccessKeySecret": "SK2", "Bucket": "b"}
        },  # ZEGO
        "storage": {"access_key": "AK3", "secret_key": "SK3"},  # cloudrec
        "list": [{"Token": "T"}, {"password": "P"}, 3],
        "uid": "alice",
    }
    out = masked(body)
    text = json.dumps(out)
    for secret in ("AK1", "SK1", "AK2", "SK2", "AK3", "SK3", '"T"', '"P"'):
        assert secret not in text
    assert out["roomid"] == "r1" and out["uid"] == "alice" and out["list"][2] == 3
    assert out["storagecfg"]["bucket"] == "b" and out["storagecfg"]["secretkey"] == "(hidden)"


def test_the_record_is_bounded():
    record = request_record({"x": "y" * (2 * MAX_CHARS)})
    assert len(record) == MAX_CHARS + 1 and record.endswith("…")
