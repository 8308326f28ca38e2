# -*- coding: utf-8 -*-
# mypy: ignore-errors
"""Small text helpers.

>>> slugify(u"Café Nord & Söhne")
'cafe-nord-sohne'
>>> shorten(u"a very long description", 10)
'a very ...'
"""
from __future__ import unicode_literals

import re
import unicodedata

ELLIPSIS = u"..."


def slugify(text):
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def shorten(text, width):
    if len(text) <= width:
        return text
    return "%s%s" % (text[: width - len(ELLIPSIS)], ELLIPSIS)
