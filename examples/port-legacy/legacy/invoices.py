# mypy: ignore-errors
"""Invoices, credit notes and their totals.

>>> inv = Invoice(u"INV-1001", u"ACME")
>>> inv.add(u"widget", 2, 250)
>>> inv.add(u"gadget", 1, 1000)
>>> inv.total()
1500
>>> inv.summary()
'INV-1001 for ACME: 2 lines'
>>> note = CreditNote(u"CN-3", u"ACME")
>>> note.add(u"widget", 1, 250)
>>> note.total()
-250
"""
from __future__ import absolute_import, unicode_literals

import collections

Line = collections.namedtuple("Line", "item quantity price")


class Invoice(object):
    def __init__(self, number, customer):
        self.number = number
        self.customer = customer
        self.lines = []

    def add(self, item, quantity, price):
        self.lines.append(Line(item, quantity, price))

    def total(self):
        return sum(line.quantity * line.price for line in self.lines)

    def summary(self):
        return "%s for %s: %d lines" % (self.number, self.customer, len(self.lines))


class CreditNote(Invoice):
    def total(self):
        return -super(CreditNote, self).total()
