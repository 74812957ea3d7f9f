"""Rate settings (portal/rates.py, pure)."""
import doctest

import pytest

from portal import rates


def test_doctests():
    assert doctest.testmod(rates).failed == 0


@pytest.mark.parametrize("raw, expected", [("60/min", (60, 60)), ("5/30s", (5, 30)), ("20/10m", (20, 600)),
                                           ("1/h", (1, 3600)), ("100/day", (100, 86400)), (" 3 / 2s ", (3, 2))])
def test_rates(raw, expected):
    assert rates.parse_rate(raw) == expected


@pytest.mark.parametrize("raw", ["", "10", "0/min", "5/0s", "x/min", "5/fortnight", "-1/s", "5/min/s"])
def test_bad_rates_are_refused(raw):
    with pytest.raises(ValueError, match="is not a rate"):
        rates.parse_rate(raw)
