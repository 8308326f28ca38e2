# mypy: ignore-errors
"""Discounts: fixed amounts and percentages.

>>> PercentDiscount(10).apply(2500)
2250
>>> FixedDiscount(300).apply(200)
0
>>> PercentDiscount(10)
<PercentDiscount 10%>
"""
from __future__ import division


class Discount(object):
    def apply(self, cents):
        return max(0, cents - self.amount(cents))

    def amount(self, cents):
        raise NotImplementedError


class FixedDiscount(Discount):
    def __init__(self, cents):
        super(FixedDiscount, self).__init__()
        self.cents = cents

    def amount(self, cents):
        return self.cents


class PercentDiscount(Discount):
    def __init__(self, percent):
        super(PercentDiscount, self).__init__()
        self.percent = percent

    def amount(self, cents):
        return cents * self.percent // 100

    def __repr__(self):
        return "<%s %s%%>" % (type(self).__name__, self.percent)
