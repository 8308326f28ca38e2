# mypy: ignore-errors
"""Exchange rates, fixed each morning by accounts.

>>> convert(100, u"EUR", u"GBP")
85
>>> convert(100, u"EUR", u"XXX")
Traceback (most recent call last):
...
KeyError: 'no rate for XXX'
"""
from __future__ import absolute_import, division

RATES = {
    u"EUR": 1.0,
    u"GBP": 0.85,
    u"USD": 1.08,
    u"CHF": 0.95,
}


def rate(code):
    try:
        return RATES[code]
    except KeyError:
        raise KeyError("no rate for %s" % code)


def convert(cents, source, target):
    """Convert whole cents, rounding half up."""
    return int(rate(target) / rate(source) * cents + 0.5)
