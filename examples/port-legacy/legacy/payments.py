# mypy: ignore-errors
"""Payments received, matched against invoices.

>>> p = Payment(u"INV-1001", 1500, u"bank")
>>> p.matches(u" inv-1001")
True
>>> print(p)
1500 from bank for INV-1001
>>> Payment(u"INV-1002", 20, u"cheque")
Traceback (most recent call last):
...
ValueError: unknown payment method 'cheque'
"""
from __future__ import unicode_literals

METHODS = (u"bank", u"card", u"cash")


class Payment(object):
    def __init__(self, invoice, cents, method):
        if method not in METHODS:
            raise ValueError("unknown payment method %r" % (method,))
        self.invoice = invoice
        self.cents = cents
        self.method = method

    def matches(self, reference):
        return reference.strip().upper() == self.invoice.upper()

    def __str__(self):
        return "%s from %s for %s" % (self.cents, self.method, self.invoice)
