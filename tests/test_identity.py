"""Client IP resolution, IP anonymisation and device keys."""

from __future__ import annotations

import ipaddress

import pytest

from trackpixel.identity import anonymize_ip, client_ip, device_key

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))


@pytest.mark.parametrize(("address", "expected"), [
    ("203.0.113.77", "203.0.113.0"),
    ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::"),
    ("::ffff:198.51.100.23", "198.51.100.0"),
    ("not-an-ip", None),
    ("", None),
])
def test_anonymize_ip(address: str, expected: str | None) -> None:
    assert anonymize_ip(address) == expected


@pytest.mark.parametrize(("peer", "forwarded", "expected"), [
    ("203.0.113.5", "1.2.3.4", "203.0.113.5"),  # untrusted peer: header ignored
    ("10.0.0.1", "198.51.100.9, 203.0.113.77", "203.0.113.77"),  # rightmost untrusted hop
    ("10.0.0.1", "198.51.100.9, 203.0.113.77, 10.2.2.2", "203.0.113.77"),
    ("10.0.0.1", "203.0.113.77:5555", "203.0.113.77"),  # a port is dropped
    ("10.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
    ("10.0.0.1", "10.9.9.9", "10.9.9.9"),  # every hop trusted: the leftmost one
    ("10.0.0.1", None, "10.0.0.1"),
])
def test_client_ip(peer: str, forwarded: str | None, expected: str) -> None:
    assert client_ip(peer, forwarded, TRUSTED) == expected


def test_device_key_depends_on_salt() -> None:
    first = device_key(b"a" * 32, "203.0.113.5", "UA")
    second = device_key(b"b" * 32, "203.0.113.5", "UA")

    assert first != second
    assert "203.0.113" not in first
