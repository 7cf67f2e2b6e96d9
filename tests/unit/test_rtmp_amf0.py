"""AMF0 encoding and decoding (sans I/O)."""

from __future__ import annotations

import re

import pytest

from cloudrec.media.ingest import amf0
from cloudrec.media.ingest.amf0 import UNDEFINED, Date, EcmaArray


def exactly(message: str) -> str:
    """A ``match`` pattern for exactly ``message``."""
    return f"^{re.escape(message)}$"


def test_every_amf0_type_survives_a_round_trip() -> None:
    values = [
        1.5,
        -0.0,
        True,
        False,
        "héllo",
        "x" * 70000,  # long string
        None,
        UNDEFINED,
        {"a": 1.0, "nested": {"b": [1.0, "two", None]}},
        EcmaArray({"width": 320.0, "stereo": True}),
        [],
        Date(1_700_000_000_000.0, 60),
    ]
    decoded = amf0.decode(amf0.encode(*values))
    assert decoded == values
    assert isinstance(decoded[9], EcmaArray)
    assert not isinstance(decoded[8], EcmaArray)


def test_a_connect_command_encodes_to_the_bytes_flash_sends() -> None:
    data = amf0.encode("connect", 1, {"app": "live"})
    assert data == (
        b"\x02\x00\x07connect"
        b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"
        b"\x03\x00\x03app\x02\x00\x04live\x00\x00\x09"
    )


def test_an_ecma_array_count_that_disagrees_with_its_items_is_ignored() -> None:
    data = b"\x08\x00\x00\x00\x05" + b"\x00\x01k\x00" + bytes(8) + b"\x00\x00\x09"
    assert amf0.decode(data) == [EcmaArray({"k": 0.0})]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "AMF0: truncated data at offset 1"),
        (b"\x02\x00\x05ab", "AMF0: truncated data at offset 3"),
        (b"\x03\x00\x01a", "AMF0: truncated data at offset 4"),
        (b"\x0d", "AMF0: unsupported type marker 0x0d at offset 0"),
        (b"\x09", "AMF0: unexpected object end at offset 0"),
        (b"\x02\x00\x01\xff", "AMF0: string at offset 3 is not UTF-8"),
        (b"\x0a\xff\xff\xff\xff\x05", "AMF0: strict array of 4294967295 items overruns the data"),
        (b"\x0c\x7f\xff\xff\xff", "AMF0: truncated data at offset 5"),
    ],
)
def test_malformed_amf0_raises_a_value_error_with_an_exact_message(
    data: bytes, message: str
) -> None:
    with pytest.raises(ValueError, match=exactly(message)):
        amf0.decode(data)


def test_nesting_deeper_than_the_limit_is_refused_without_recursion_errors() -> None:
    data = b"\x0a\x00\x00\x00\x01" * 10_000 + b"\x05"
    with pytest.raises(ValueError, match=exactly("AMF0: nesting deeper than 32 levels")):
        amf0.decode(data)
    ok = amf0.encode([[[1.0]]])
    assert amf0.decode(ok) == [[[[1.0]]]]


def test_values_amf0_cannot_carry_are_refused() -> None:
    with pytest.raises(TypeError, match=exactly("AMF0: cannot encode bytes")):
        amf0.encode(b"raw")
