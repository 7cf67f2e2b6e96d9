"""An app's callback URL is checked when it is set (``cloudrec app set-callback-url``), so
that an operator learns of a bad one then, not from every start that needs it."""

from __future__ import annotations

import pytest

from cloudrec.core.apps import check_callback_url
from cloudrec.core.errors import CloudrecError, Kind


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://hooks.example.com/ncs", "is not an http(s) URL"),
        ("http://", "is not an http(s) URL"),
        ("https://hooks example.com/", "is not an http(s) URL"),
        ("http:///ncs", "names no host"),
        ("https://:8443/ncs", "names no host"),
        ("http://hooks.example.com:99999/ncs", "Port out of range"),
        ("http://[::1/ncs", "Invalid IPv6 URL"),
    ],
)
def test_a_callback_url_without_a_usable_host_is_refused_with_the_reason(url, why):
    with pytest.raises(CloudrecError) as err:
        check_callback_url(url)
    assert err.value.kind is Kind.INVALID_ARGUMENT
    assert why in err.value.message


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/ncs", "http://10.0.0.7:8080/agora?x=1", "http://[::1]:9/"]
)
def test_a_callback_url_with_a_host_is_kept_as_given(url):
    assert check_callback_url(url) == url
