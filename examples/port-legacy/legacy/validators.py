# mypy: ignore-errors
"""Validation of incoming bookings.

>>> check_amount(100)
100
>>> try:
...     check_amount(-5)
... except ValidationError as error:
...     print(error)
amount must be positive, got -5
>>> check_code(u"ab12")
'AB12'
"""
from __future__ import absolute_import, unicode_literals

import numbers


class ValidationError(ValueError):
    def __init__(self, field, message):
        super(ValidationError, self).__init__("%s %s" % (field, message))
        self.field = field


def check_amount(value):
    if not isinstance(value, numbers.Integral):
        raise ValidationError(u"amount", "must be whole cents, got %r" % (value,))
    if value <= 0:
        raise ValidationError(u"amount", "must be positive, got %s" % (value,))
    return value


def check_code(code):
    if not code or not code.isalnum():
        raise ValidationError(u"code", "must be letters and digits, got %r" % (code,))
    return code.upper()
