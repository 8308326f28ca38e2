# -*- coding: utf-8 -*-
# mypy: ignore-errors
"""A ledger: dated entries that always balance.

>>> book = Ledger(u"2013")
>>> book.add(u"2013-01-02", u"sales", 1200)
>>> book.add(u"2013-01-03", u"rent", -800)
>>> book.total()
400
>>> book.describe()
'ledger 2013: 2 entries, total 400'
>>> book.add(u"2012-12-31", u"rent", -800)
Traceback (most recent call last):
...
ValueError: entry 2012-12-31 is not in 2013
"""
from __future__ import absolute_import, unicode_literals


class Ledger(object):
    def __init__(self, year):
        self.year = year
        self.entries = []

    def add(self, day, account, cents):
        if not day.startswith(self.year):
            raise ValueError("entry %s is not in %s" % (day, self.year))
        self.entries.append((day, account, cents))

    def total(self):
        return sum(cents for _, _, cents in self.entries)

    def describe(self):
        return "ledger %s: %d entries, total %s" % (self.year, len(self.entries), self.total())
