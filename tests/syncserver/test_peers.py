"""The client address behind reverse proxies (runtime/peers.py), against a small model."""
from __future__ import annotations

import doctest
import ipaddress

import pytest
from hypothesis import given, strategies as st

from runtime import peers

TRUSTED = peers.parse_trusted("10.0.0.0/8, 192.0.2.7, 2001:db8::/32")
proxies = st.one_of(st.integers(0, 2**24 - 1).map(lambda n: str(ipaddress.IPv4Address(0x0A000000 + n))),
                    st.just("192.0.2.7"), st.just("2001:db8::5"))
clients = st.one_of(st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
                    st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))).filter(
    lambda a: not peers.is_trusted(ipaddress.ip_address(a), TRUSTED))
junk = st.text(max_size=20).filter(lambda t: "," not in t)


def test_doctests():
    assert doctest.testmod(peers).failed == 0


@given(direct=clients, header=st.lists(st.one_of(clients, proxies, junk), max_size=5))
def test_an_untrusted_peer_is_itself_whatever_it_claims(direct, header):
    assert peers.client_address(direct, ", ".join(header), TRUSTED) == direct


@given(client=clients, spoofed=st.lists(st.one_of(clients, proxies, junk), max_size=4),
       hops=st.lists(proxies, min_size=1, max_size=4))
def test_behind_trusted_proxies_the_client_is_the_address_the_first_proxy_saw(client, spoofed, hops):
    """The client sent its own (spoofed) X-Forwarded-For; each trusted proxy appended its
    peer. Whatever the client wrote, the answer is the address the first proxy saw."""
    chain = spoofed + [client] + hops[:-1]
    assert peers.client_address(hops[-1], ",".join(chain), TRUSTED) == client


@pytest.mark.parametrize("direct, header, expected", [
    ("192.0.2.7", None, "192.0.2.7"),                         # a proxy without the header: itself
    ("192.0.2.7", "", "192.0.2.7"),
    ("192.0.2.7", "garbage", "192.0.2.7"),                    # a trusted hop wrote junk: the hop
    ("192.0.2.7", "198.51.100.1:5555", "198.51.100.1"),       # with a port
    ("192.0.2.7", "[2001:db9::1]:443", "2001:db9::1"),
    ("192.0.2.7", ["203.0.113.1", "198.51.100.1"], "198.51.100.1"),  # two headers, in order
    ("::ffff:192.0.2.7", "198.51.100.1", "198.51.100.1"),    # IPv4-mapped direct peer
    ("10.0.0.1", "10.0.0.2, 10.0.0.3", "10.0.0.2"),           # all trusted: the leftmost
])
def test_cases(direct, header, expected):
    assert peers.client_address(direct, header, TRUSTED) == expected


def test_nothing_trusted_means_the_header_is_never_read():
    assert peers.client_address("192.0.2.7", "198.51.100.1", ()) == "192.0.2.7"


@pytest.mark.parametrize("raw", ["10.0.0.0/33", "proxy.example", "10.0.0.1, nope"])
def test_bad_trusted_lists_are_refused_naming_the_entry(raw):
    with pytest.raises(ValueError, match="is not an IP address or CIDR network"):
        peers.parse_trusted(raw)
