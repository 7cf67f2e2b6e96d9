"""Outbound safety: which URLs and addresses the service refuses to call (no traffic is sent)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from cloudrec.core.errors import CloudrecError, Kind
from cloudrec.outbound import OutboundPolicy, Target, forbidden_reason, resolve_target

DEFAULT = OutboundPolicy()


def resolving_to(*addresses: str):
    """A getaddrinfo-shaped fake resolver that answers ``addresses`` for any name."""
    calls: list[tuple[str, int]] = []

    def resolve(host: str, port: int):
        calls.append((host, port))
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port),
            )
            for a in addresses
        ]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def refusal(url: str, policy: OutboundPolicy = DEFAULT, resolver=None) -> CloudrecError:
    with pytest.raises(CloudrecError) as info:
        resolve_target(url, policy, resolver)
    return info.value


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0x7f000001/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://0.0.0.0/",
        "http://[fe80::1]/",
        "http://100.64.0.1/",
        "http://localhost/",
        "http://LOCALHOST./",
        "http://172.16.0.1:8080/",
        "http://192.168.1.1/",
        "https://[fd00:ec2::254]/",
        "http://[::]/",
    ],
)
def test_internal_targets_are_refused_with_the_default_policy(url):
    error = refusal(url)
    assert (error.kind, error.reason) == (Kind.INVALID_ARGUMENT, "target_forbidden")


def test_the_refusal_names_the_address_and_why():
    error = refusal("http://169.254.169.254/latest/meta-data/")
    assert "cloud metadata address 169.254.169.254" in error.message


def test_a_name_that_resolves_to_a_private_address_is_refused():
    error = refusal("https://callbacks.example.com/hook", resolver=resolving_to("10.0.0.5"))
    assert error.reason == "target_forbidden"
    assert "private address 10.0.0.5" in error.message


def test_a_name_is_refused_when_any_one_of_its_addresses_is_forbidden():
    resolver = resolving_to("93.184.215.14", "2606:4700::1111", "127.0.0.1")
    assert refusal("http://mixed.example.com/", resolver=resolver).reason == "target_forbidden"


def test_the_host_is_resolved_once_with_the_url_port():
    resolver = resolving_to("93.184.215.14")
    resolve_target("https://example.com:8443/x", DEFAULT, resolver)
    assert resolver.calls == [("example.com", 8443)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/file",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http:///path-only",
        "http://",
        "http://user:pass@example.com/",
        "http://user@example.com/",
        "http://example.com@127.0.0.1/",
        "http://example.com:0/",
        "http://example.com:70000/",
        "http://example.com:port/",
        "http://exa mple.com/",
        "http://example.com/\r\nX-Injected: 1",
        "http://[fe80::1%25eth0]/",
        "example.com/no-scheme",
    ],
)
def test_malformed_urls_are_refused_as_invalid(url):
    error = refusal(url, resolver=resolving_to("93.184.215.14"))
    assert (error.kind, error.reason) == (Kind.INVALID_ARGUMENT, "target_invalid")


def test_a_name_that_does_not_resolve_is_unavailable_not_invalid():
    def fail(host: str, port: int):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    error = refusal("https://no-such-host.invalid/", resolver=fail)
    assert (error.kind, error.reason) == (Kind.UNAVAILABLE, "target_unresolvable")


def test_a_name_resolving_to_a_public_address_is_allowed_and_pinned_to_it():
    target = resolve_target(
        "https://Example.COM/hook?a=1", DEFAULT, resolving_to("93.184.215.14", "2606:4700::1111")
    )
    assert target == Target(
        url="https://Example.COM/hook?a=1",
        scheme="https",
        host="example.com",
        port=443,
        ip=ipaddress.ip_address("93.184.215.14"),
    )
    assert target.host_header == "example.com"


def test_a_public_ipv6_literal_is_allowed():
    target = resolve_target("http://[2606:4700::1111]:8080/", DEFAULT)
    assert target.ip == ipaddress.ip_address("2606:4700::1111")
    assert target.host_header == "[2606:4700::1111]:8080"


def test_an_internationalized_name_is_resolved_and_sent_as_its_ascii_form():
    resolver = resolving_to("93.184.215.14")
    target = resolve_target("http://bücher.example/", DEFAULT, resolver)
    assert target.host == "xn--bcher-kva.example"


def test_allow_private_lets_loopback_through():
    target = resolve_target("http://127.0.0.1:9000/", OutboundPolicy(allow_private=True))
    assert (target.ip, target.port) == (ipaddress.ip_address("127.0.0.1"), 9000)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback address 127.0.0.1"),
        ("127.255.0.9", "loopback address 127.255.0.9"),
        ("::1", "loopback address ::1"),
        ("10.1.2.3", "private address 10.1.2.3"),
        ("172.31.255.255", "private address 172.31.255.255"),
        ("192.168.0.1", "private address 192.168.0.1"),
        ("fc00::1", "unique-local (private) address fc00::1"),
        ("169.254.169.254", "cloud metadata address 169.254.169.254"),
        ("169.254.1.1", "link-local address 169.254.1.1"),
        ("fe80::1", "link-local address fe80::1"),
        ("fec0::1", "site-local address fec0::1"),
        ("0.0.0.0", "unspecified (this-network) address 0.0.0.0"),
        ("::", "unspecified address ::"),
        ("224.0.0.1", "multicast address 224.0.0.1"),
        ("ff02::1", "multicast address ff02::1"),
        ("255.255.255.255", "broadcast address 255.255.255.255"),
        ("240.0.0.1", "reserved address 240.0.0.1"),
        ("100.64.0.1", "carrier-grade NAT address 100.64.0.1"),
        ("100.100.100.200", "carrier-grade NAT address 100.100.100.200"),
        ("192.0.2.1", "documentation address 192.0.2.1"),
        ("198.18.0.1", "benchmarking address 198.18.0.1"),
        ("2001:db8::1", "documentation address 2001:db8::1"),
        ("5f00::1", "reserved address 5f00::1"),
    ],
)
def test_forbidden_reason_names_the_range(address, reason):
    assert forbidden_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    ("address", "inner"),
    [
        ("::ffff:127.0.0.1", "loopback address 127.0.0.1"),
        ("::ffff:169.254.169.254", "cloud metadata address 169.254.169.254"),
        ("::ffff:0:10.0.0.1", "private address 10.0.0.1"),
        ("::127.0.0.1", "loopback address 127.0.0.1"),
        ("64:ff9b::10.0.0.1", "private address 10.0.0.1"),
        ("2002:7f00:1::", "loopback address 127.0.0.1"),
        ("2002:a9fe:a9fe::1", "cloud metadata address 169.254.169.254"),
        # Teredo: the client address is stored inverted (RFC 4380 section 4).
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback address 127.0.0.1"),
    ],
)
def test_ipv6_forms_embedding_a_forbidden_ipv4_address_are_refused(address, inner):
    reason = forbidden_reason(ipaddress.ip_address(address))
    assert reason is not None and reason.endswith(f"(embeds {inner})")


@pytest.mark.parametrize(
    "address",
    [
        "93.184.215.14",
        "8.8.8.8",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::8.8.8.8",
        "2002:808:808::1",
    ],
)
def test_public_addresses_and_their_embeddings_are_allowed(address):
    assert forbidden_reason(ipaddress.ip_address(address)) is None
