# -*- coding: utf-8 -*-
# mypy: ignore-errors
"""Printable documents: a number, a title and lines of text.

>>> doc = Document(7, u"Delivery note")
>>> doc.add_line(u"2 x widget")
>>> print(doc.render())
Delivery note #7
2 x widget
>>> DeliveryNote(8).heading()
'Delivery note #DN8'
"""
from __future__ import absolute_import, print_function, unicode_literals


class Document(object):
    prefix = u""

    def __init__(self, number, title):
        self.number = number
        self.title = title
        self.lines = []

    def add_line(self, text):
        self.lines.append(text)

    def heading(self):
        return "%s #%s%s" % (self.title, self.prefix, self.number)

    def render(self):
        return u"\n".join([self.heading()] + self.lines)


class DeliveryNote(Document):
    prefix = u"DN"

    def __init__(self, number):
        super(DeliveryNote, self).__init__(number, u"Delivery note")
