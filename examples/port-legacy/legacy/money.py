# -*- coding: utf-8 -*-
# mypy: ignore-errors
"""Amounts of money in cents, so that sums never drift.

>>> Money(1999, u"EUR")
Money('19.99 EUR')
>>> print(Money(1999, u"EUR") + Money(1, u"EUR"))
20.00 EUR
>>> Money(5, u"EUR") + Money(5, u"GBP")
Traceback (most recent call last):
...
ValueError: cannot add GBP to EUR
"""
from __future__ import division, unicode_literals


class Money(object):
    def __init__(self, cents, currency=u"EUR"):
        self.cents = int(cents)
        self.currency = currency

    def __add__(self, other):
        if other.currency != self.currency:
            raise ValueError("cannot add %s to %s" % (other.currency, self.currency))
        return Money(self.cents + other.cents, self.currency)

    def __str__(self):
        return "%d.%02d %s" % (self.cents // 100, self.cents % 100, self.currency)

    def __repr__(self):
        return "Money(%r)" % (str(self),)
