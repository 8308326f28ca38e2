# -*- coding: utf-8 -*-
# mypy: ignore-errors
"""The customer register.

>>> reg = Register()
>>> reg.add(Customer(u"C1", u"Café Nord"))
>>> reg.find(u"C1").label()
'C1 Café Nord'
>>> reg.find(u"C9")
Traceback (most recent call last):
...
LookupError: unknown customer C9
"""
from __future__ import unicode_literals


class Customer(object):
    def __init__(self, code, name):
        self.code = code
        self.name = name

    def label(self):
        return "%s %s" % (self.code, self.name)


class Register(object):
    def __init__(self):
        self._by_code = {}

    def add(self, customer):
        self._by_code[customer.code] = customer

    def find(self, code):
        if code not in self._by_code:
            raise LookupError("unknown customer %s" % code)
        return self._by_code[code]
