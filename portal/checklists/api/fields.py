"""Strict JSON field types: the API takes JSON, so a string is a string and a number is
a number. DRF's defaults coerce ("1" -> 1, 5 -> "5", "yes" -> True), which hides client
bugs; these reject anything of the wrong JSON type with 400."""
from rest_framework import serializers

INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # PostgreSQL integer


class StrictCharField(serializers.CharField):
    default_error_messages = {"unicode": "Text must be valid Unicode (no lone surrogates)."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            self.fail("unicode")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictIntegerField(serializers.IntegerField):
    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", INT_MIN)
        kwargs.setdefault("max_value", INT_MAX)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)
