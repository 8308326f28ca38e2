# mypy: ignore-errors
"""VAT: rates by category, amounts in cents.

>>> vat(1000, u"standard")
200
>>> gross(1000, u"reduced")
1050
>>> describe(u"reduced")
'reduced rate: 5%'
"""
from __future__ import division, unicode_literals

RATES = {u"standard": 20, u"reduced": 5, u"zero": 0}


def vat(cents, category=u"standard"):
    return int(round(cents * RATES[category] / 100))


def gross(cents, category=u"standard"):
    return cents + vat(cents, category)


def describe(category):
    rate = RATES[category]
    return "%s rate: %s%%" % (category, rate)
