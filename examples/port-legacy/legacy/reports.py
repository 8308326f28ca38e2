# mypy: ignore-errors
"""Plain-text reports for the monthly meeting.

>>> print(banner(u"January"))
January
=====================
>>> print(table([(u"sales", 1200), (u"rent", -800)]))
account         cents
sales            1200
rent             -800
"""
from __future__ import print_function, unicode_literals

WIDTH = 21


def row(label, value):
    return "%-15s %5s" % (label, value)


def table(rows):
    lines = [row(u"account", u"cents")]
    for label, value in rows:
        lines.append(row(label, value))
    return "\n".join(lines)


def banner(title):
    return "%s\n%s" % (title, "=" * WIDTH)
