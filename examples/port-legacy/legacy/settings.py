# mypy: ignore-errors
"""Defaults, overridden by ledger.ini.

>>> s = Settings(currency=u"GBP")
>>> s.currency, s.vat_rate
('GBP', 20)
>>> s.describe()
'currency=GBP vat_rate=20 rounding=half-up'
"""
from __future__ import unicode_literals

DEFAULTS = {
    u"currency": u"EUR",
    u"vat_rate": 20,
    u"rounding": u"half-up",
}


class Settings(object):
    def __init__(self, **overrides):
        values = dict(DEFAULTS)
        values.update(overrides)
        for key, value in values.items():
            setattr(self, key, value)

    def describe(self):
        return "currency=%s vat_rate=%s rounding=%s" % (
            self.currency,
            self.vat_rate,
            self.rounding,
        )
