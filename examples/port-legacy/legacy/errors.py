# mypy: ignore-errors
"""The exception hierarchy of ledgerlite.

>>> error = BookingError(u"INV-7", u"closed period")
>>> str(error)
'INV-7: closed period'
>>> isinstance(error, LedgerError)
True
>>> str(PeriodClosedError(u"2012"))
'2012: period 2012 is closed'
"""
from __future__ import unicode_literals


class LedgerError(Exception):
    """Base class of every ledgerlite error."""


class BookingError(LedgerError):
    def __init__(self, ref, reason):
        super(BookingError, self).__init__("%s: %s" % (ref, reason))
        self.ref = ref
        self.reason = reason


class PeriodClosedError(BookingError):
    def __init__(self, period):
        super(PeriodClosedError, self).__init__(period, u"period %s is closed" % period)
        self.period = period
