# -*- coding: utf-8 -*-
# mypy: ignore-errors
"""ledgerlite: bookkeeping for small shops (2009-2014).

>>> version_string()
'ledgerlite 1.4.2'
"""
from __future__ import absolute_import, unicode_literals

__version__ = "1.4.2"
__author__ = u"Shop Systems Ltd."

NAME = u"ledgerlite"


def version_string():
    return "%s %s" % (NAME, __version__)
