# -*- coding: utf-8 -*-
# mypy: ignore-errors
"""Importing bank statements: one booking per line, as day;text;cents.

>>> parse_lines([u"2013-01-02;Sales;1200", u"", u"# comment", u"2013-01-03;Rent;-800"])
[('2013-01-02', 'Sales', 1200), ('2013-01-03', 'Rent', -800)]
>>> parse_line(u"bad line", 7)
Traceback (most recent call last):
...
ValueError: line 7: expected day;text;cents, got 'bad line'
"""
from __future__ import absolute_import, unicode_literals

import io


def parse_line(line, number):
    parts = line.split(u";")
    if len(parts) != 3:
        raise ValueError("line %s: expected day;text;cents, got %r" % (number, line))
    day, text, cents = parts
    return day, text, int(cents)


def parse_lines(lines):
    rows = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if line and not line.startswith(u"#"):
            rows.append(parse_line(line, number))
    return rows


def import_file(path):
    with io.open(path, encoding="utf-8") as handle:
        return parse_lines(handle)
