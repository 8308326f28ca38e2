# -*- coding: utf-8 -*-
# mypy: ignore-errors
"""Reading the shop's ledger.ini.

>>> parse(u"[shop]\\nname = Nord\\ncurrency = EUR\\n").get("shop", "currency")
'EUR'
"""
from __future__ import absolute_import, unicode_literals

import io

try:
    import ConfigParser as configparser
except ImportError:
    import configparser


def parse(text):
    parser = configparser.ConfigParser()
    parser.read_file(io.StringIO(text))
    return parser


def load(path):
    parser = configparser.ConfigParser()
    with io.open(path, encoding="utf-8") as handle:
        parser.read_file(handle)
    return parser
