# -*- coding: utf-8 -*-
# mypy: ignore-errors
"""Customer and supplier accounts.

>>> acct = Account(u"ACME", 100)
>>> acct.deposit(50)
>>> acct.withdraw(30)
>>> acct
<Account ACME balance=120>
>>> acct.withdraw(500)
Traceback (most recent call last):
...
ValueError: insufficient funds in ACME: 120 < 500
>>> SupplierAccount(u"Parts Ltd").terms
30
"""
from __future__ import absolute_import, division, print_function


class Account(object):
    kind = u"customer"

    def __init__(self, name, balance=0):
        self.name = name
        self.balance = balance

    def deposit(self, amount):
        self.balance += amount

    def withdraw(self, amount):
        if amount > self.balance:
            raise ValueError("insufficient funds in %s: %s < %s" % (self.name, self.balance, amount))
        self.balance -= amount

    def __repr__(self):
        return "<Account %s balance=%s>" % (self.name, self.balance)


class SupplierAccount(Account):
    kind = u"supplier"

    def __init__(self, name, balance=0, terms=30):
        super(SupplierAccount, self).__init__(name, balance)
        self.terms = terms
