# mypy: ignore-errors
"""Dates as the ledger writes them: YYYY-MM-DD.

>>> iso(2013, 1, 2)
'2013-01-02'
>>> parse(u"2013-08-15")
datetime.date(2013, 8, 15)
>>> quarter(u"2013-08-15")
'2013-Q3'
"""
from __future__ import division

import datetime


def iso(year, month, day):
    return "%04d-%02d-%02d" % (year, month, day)


def parse(text):
    year, month, day = [int(part) for part in text.split("-")]
    return datetime.date(year, month, day)


def quarter(text):
    day = parse(text)
    number = (day.month - 1) // 3 + 1
    return "%s-Q%s" % (day.year, number)
