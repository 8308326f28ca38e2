# -*- coding: utf-8 -*-
# mypy: ignore-errors
"""Postal addresses, formatted the way the post office likes them.

>>> addr = Address(u"Hauptstraße 5", u"8001", u"Zürich", u"CH")
>>> print(addr.one_line())
Hauptstraße 5, 8001 Zürich · CH
>>> addr.is_domestic(u"ch")
True
"""
from __future__ import unicode_literals


class Address(object):
    def __init__(self, street, postcode, city, country):
        self.street = street
        self.postcode = postcode
        self.city = city
        self.country = country

    def one_line(self):
        return u"%s, %s %s · %s" % (self.street, self.postcode, self.city, self.country)

    def is_domestic(self, home):
        return self.country.upper() == home.upper()
