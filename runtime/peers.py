"""Who the peer is behind reverse proxies (pure).

A proxy in front of a server makes every request come from the proxy's address. It says
who its own peer was by appending that address to X-Forwarded-For; anything to the left
of it in the header was written by whoever sent the request to the proxy, and is only as
trustworthy as that sender. So the client address is found by walking the chain from the
right: start at the direct peer; while the current address is a trusted proxy, step to the
address it appended (the next entry to the left). The first address that is not a trusted
proxy is the client. A peer that is not trusted is never asked: its X-Forwarded-For is
ignored, so nobody can claim another's address by sending the header directly.

    >>> trusted = parse_trusted("10.0.0.0/8, 192.0.2.7")
    >>> client_address("192.0.2.7", "198.51.100.9", trusted)
    '198.51.100.9'
    >>> client_address("203.0.113.5", "198.51.100.9", trusted)   # not a proxy: header ignored
    '203.0.113.5'
    >>> client_address("10.1.1.1", "6.6.6.6, 198.51.100.9, 10.2.2.2", trusted)
    '198.51.100.9'
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_trusted(raw: str | Iterable[str]) -> tuple[Network, ...]:
    """Addresses and CIDR networks, comma-separated (or a list); ValueError names a bad one."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    networks = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def parse_address(text: str) -> Address | None:
    """An address as proxies write it ("1.2.3.4", "1.2.3.4:5678", "[2001:db8::1]:80",
    "::ffff:1.2.3.4"), or None if it is none of those."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: Address | None, trusted: tuple[Network, ...]) -> bool:
    return address is not None and any(address in net for net in trusted)


def client_address(direct: str, forwarded_for: str | Iterable[str] | None, trusted: tuple[Network, ...]) -> str:
    """The client's address: `direct` unless it is a trusted proxy, then the walk above.

    `forwarded_for` is the X-Forwarded-For value (several headers: a list, in order). An
    entry that is not an address ends the walk at the trusted hop that handed it over,
    which is then the identity (a misconfigured proxy groups its clients, it never lets
    one pick another's address).
    """
    current = parse_address(direct)
    if not trusted or not is_trusted(current, trusted) or not forwarded_for:
        return str(current) if current is not None else direct
    if not isinstance(forwarded_for, str):
        forwarded_for = ",".join(forwarded_for)
    for entry in reversed(forwarded_for.split(",")):
        if not is_trusted(current, trusted):
            break
        previous = parse_address(entry)
        if previous is None:
            break
        current = previous
    return str(current)
