"""Optimistic concurrency by entity tag. Pure logic.

The ETag of a checklist or an item is its `version` (which the database trigger owns)
as a strong tag: `"7"`. Clients send it back in If-Match; weak tags (W/"7") are
accepted too, since the version is exact whichever way it is marked. A header that is not
`*` or a list of quoted tags is malformed (400), not a mismatch (412).
"""
from __future__ import annotations

import re


def etag(version: int) -> str:
    return f'"{version}"'


class MalformedIfMatch(ValueError):
    """If-Match is neither `*` nor a list of quoted entity tags (RFC 9110, 13.1.1)."""


# One list element: an optionally weak, quoted opaque tag (etagc: no quote, no control).
_ENTITY_TAG = re.compile(r'(?:W/)?"([\x21\x23-\x7e\x80-\uffff]*)"')


def parse_if_match(header: str | None) -> list[str] | None:
    """The opaque tags of an If-Match header; None without the header; ["*"] for any.
    Raises MalformedIfMatch for anything else: a client that sends `3` or `"3` meant
    something, and answering 412 ("the object changed") would mislead it."""
    if header is None:
        return None
    header = header.strip()
    if header == "*":
        return ["*"]
    tags = []
    for part in header.split(","):
        part = part.strip()
        if not part:
            continue  # empty list elements are allowed (RFC 9110, 5.6.1)
        match = _ENTITY_TAG.fullmatch(part)
        if match is None:
            raise MalformedIfMatch(f"If-Match must be * or quoted entity tags such as \"3\", not {part[:40]!r}")
        tags.append(match.group(1))
    if not tags:
        raise MalformedIfMatch("If-Match must be * or quoted entity tags such as \"3\"")
    return tags


def if_match_allows(header: str | None, version: int) -> bool:
    """Whether a write precondition holds for the current version (no header: it does)."""
    tags = parse_if_match(header)
    if tags is None or tags == ["*"]:
        return True
    return str(version) in tags
