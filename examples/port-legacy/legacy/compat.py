# mypy: ignore-errors
"""Python 2/3 compatibility shims, from the years when both had to work.

>>> is_text(u"x"), is_text(b"x")
(True, False)
>>> to_text(b"caf\\xc3\\xa9") == u"caf\\xe9"
True
"""
from __future__ import absolute_import, unicode_literals

import sys

PY2 = sys.version_info[0] == 2

try:
    string_types = (basestring,)
except NameError:
    string_types = (str,)


def is_text(value):
    return isinstance(value, string_types)


def to_text(value, encoding="utf-8"):
    if isinstance(value, bytes):
        return value.decode(encoding)
    return value
