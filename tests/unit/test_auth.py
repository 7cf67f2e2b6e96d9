"""HTTP Basic parsing and publish tokens."""

from __future__ import annotations

import base64

import pytest

from cloudrec.api.auth import parse_basic
from cloudrec.core.errors import CloudrecError
from cloudrec.core.tokens import make_publish_token, verify_publish_token


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("prefix", ["Basic ", "basic ", ""])
def test_basic_credentials_parse_with_or_without_the_prefix(prefix):
    assert parse_basic(prefix + _b64("1234:s3cr:et")) == ("1234", "s3cr:et")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "no credentials"),
        ("Basic !!!", "not base64"),
        ("Basic " + _b64("nocolon"), "not base64"),
    ],
)
def test_bad_basic_credentials_are_refused_with_a_reason(header, message):
    with pytest.raises(CloudrecError, match=message):
        parse_basic(header)


def test_a_publish_token_verifies_until_it_expires():
    token = make_publish_token("k", 1, "r", "s", expires=1000)
    verify_publish_token("k", 1, "r", "s", token, now=1000)
    with pytest.raises(CloudrecError, match="expired"):
        verify_publish_token("k", 1, "r", "s", token, now=1001)
    with pytest.raises(CloudrecError, match="does not match"):
        verify_publish_token("other", 1, "r", "s", token, now=0)
