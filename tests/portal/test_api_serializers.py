"""The API serializers' fields are copied from a per-class prototype with a shallow copy
(portal/checklists/api/serializers.fresh_field) instead of DRF's deepcopy, which runs each
field's __init__ again. That is only safe if a copy behaves exactly as DRF's own copy and
shares nothing mutable with the prototype or with another serializer's copy."""
from __future__ import annotations

import copy
import inspect

import pytest
from rest_framework import serializers

from portal.checklists.api import serializers as api

CACHED = [cls for _, cls in inspect.getmembers(api, inspect.isclass)
          if issubclass(cls, api.CachedModelFields) and cls is not api.CachedModelFields]


def prototype(cls) -> dict:
    """The class's fields as DRF builds them (unbound), without the cache."""
    return super(api.CachedModelFields, cls()).get_fields()


def state(value):
    """A field's state as plain values: validators and other helper objects by type and
    attributes (DRF's copy builds new ones, equal in all but identity)."""
    if isinstance(value, dict):
        return {k: state(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [state(v) for v in value]
    if isinstance(value, serializers.Field):
        return (type(value).__name__, state({k: v for k, v in vars(value).items() if k not in IGNORED}))
    if type(value).__module__.split(".")[0] in ("django", "rest_framework", "portal"):
        # Lazy messages (no __dict__) by their text.
        return (type(value).__name__, state(vars(value)) if hasattr(value, "__dict__") else str(value))
    return value


# Bookkeeping that differs between any two fields: a creation counter, and the arguments
# a field was made with (shown by repr only).
IGNORED = {"_creation_counter", "_args", "_kwargs"}


def test_every_cached_serializer_is_covered():
    assert {c.__name__ for c in CACHED} >= {"ItemSerializer", "ItemUpdateSerializer", "BatchItemSerializer",
                                           "ChecklistSerializer", "ChecklistDetailSerializer",
                                           "MembershipSerializer", "MembershipUpdateSerializer"}


@pytest.mark.parametrize("cls", CACHED, ids=lambda c: c.__name__)
def test_a_fresh_field_is_what_drf_would_copy(cls):
    for name, field in prototype(cls).items():
        if isinstance(field, api._NESTED_FIELDS):
            continue  # copied by DRF's own deepcopy
        ours, drfs = api.fresh_field(field), copy.deepcopy(field)
        assert type(ours) is type(drfs), name
        assert state(ours) == state(drfs), name


@pytest.mark.parametrize("cls", CACHED, ids=lambda c: c.__name__)
def test_instances_share_nothing_mutable(cls):
    first, second = cls(), cls()
    for name in first.fields:
        a, b = first.fields[name], second.fields[name]
        assert a is not b and a.parent is first and b.parent is second, name
        if isinstance(a, api._NESTED_FIELDS):
            continue
        for attr in ("style", "error_messages", "validators"):
            assert getattr(a, attr) is not getattr(b, attr), (name, attr)
        # What one request does to its copy never reaches the next one's.
        a.validators.append(lambda value: None)
        a.error_messages["mine"] = "x"
        a.style["mine"] = "x"
        c = cls().fields[name]
        assert len(c.validators) == len(b.validators) and "mine" not in c.error_messages and "mine" not in c.style
    assert all(f.parent is None for f in cls.__dict__["_fields_prototype"].values())
