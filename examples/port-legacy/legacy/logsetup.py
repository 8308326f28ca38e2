# mypy: ignore-errors
"""Logging the way the support team wants it.

>>> formatter()._fmt
'%(asctime)s %(levelname)-8s %(name)s: %(message)s'
>>> logger_name(u"ledger", u"export")
'ledgerlite.ledger.export'
"""
from __future__ import absolute_import, unicode_literals

import logging

FORMAT = u"%(asctime)s %(levelname)-8s %(name)s: %(message)s"


def formatter():
    return logging.Formatter(FORMAT)


def logger_name(*parts):
    return u"ledgerlite.%s" % (u".".join(parts),)


def configure(level=logging.INFO):
    handler = logging.StreamHandler()
    handler.setFormatter(formatter())
    root = logging.getLogger(u"ledgerlite")
    root.addHandler(handler)
    root.setLevel(level)
    return root
