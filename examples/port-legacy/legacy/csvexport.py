# -*- coding: utf-8 -*-
# mypy: ignore-errors
"""Exporting ledger rows to CSV for the accountant.

>>> rows = [(u"2013-01-02", u"sales", 1200), (u"2013-01-03", u"rent", -800)]
>>> print(to_csv(rows).strip())
day,account,cents
2013-01-02,sales,1200
2013-01-03,rent,-800
"""
from __future__ import absolute_import, unicode_literals

import csv
import io

HEADER = (u"day", u"account", u"cents")


def write_rows(handle, rows):
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(HEADER)
    for row in rows:
        writer.writerow(row)
    return len(rows)


def to_csv(rows):
    buffer = io.StringIO()
    write_rows(buffer, rows)
    return buffer.getvalue()


def export(path, rows):
    with io.open(path, "w", encoding="utf-8", newline="") as handle:
        return write_rows(handle, rows)
