"""The API's JSON parser: DRF's, refusing what could not be answered.

- A lone surrogate (JSON allows the escape "\\ud800", UTF-8 cannot encode it) in a key:
  the 400 naming it as an unknown field could not be rendered, so it answered 500.
  (In values, the strict fields report it per field; see fields.StrictCharField.)
- Nesting so deep that Python's parser recurses out: a RecursionError, not a ValueError,
  escaped DRF's handler (500).
Each is a 400 ParseError naming the problem. NUL characters in values are reported per
field by the serializers (DRF's CharField refuses them), never reaching a query.
"""
from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def has_unencodable_key(value: Any) -> bool:
    """Whether some object key in a parsed JSON value is not valid Unicode. Iterative, so
    a deeply nested value cannot exhaust the stack here either."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            for key in v:
                try:
                    key.encode("utf-8")
                except UnicodeEncodeError:
                    return True
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
        if has_unencodable_key(data):
            raise ParseError("JSON parse error - a field name contains a lone surrogate (not valid Unicode).")
        return data
