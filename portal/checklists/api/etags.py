"""Optimistic concurrency by entity tag. Pure logic.

The ETag of a checklist or an item is its `version` (which the database trigger owns)
as a strong tag: `"7"`. Clients send it back in If-Match; weak tags (W/"7") are
accepted too, since the version is exact whichever way it is marked.
"""
from __future__ import annotations


def etag(version: int) -> str:
    return f'"{version}"'


def parse_if_match(header: str | None) -> list[str] | None:
    """The opaque tags of an If-Match header; None without the header; ["*"] for any."""
    if header is None:
        return None
    header = header.strip()
    if header == "*":
        return ["*"]
    tags = []
    for part in header.split(","):
        part = part.strip()
        if part.startswith("W/"):
            part = part[2:]
        if len(part) >= 2 and part[0] == part[-1] == '"':
            part = part[1:-1]
        if part:
            tags.append(part)
    return tags


def if_match_allows(header: str | None, version: int) -> bool:
    """Whether a write precondition holds for the current version (no header: it does)."""
    tags = parse_if_match(header)
    if tags is None or tags == ["*"]:
        return True
    return str(version) in tags
