# -*- coding: utf-8 -*-
# mypy: ignore-errors
"""Export plugins: every Plugin subclass registers itself under its name.

>>> Plugin.normalise(u" CSV-Export ")
'csv_export'
>>> CsvExport().describe()
'csv_export: comma-separated rows'
"""
from __future__ import absolute_import, unicode_literals

import re

REGISTRY = {}


class PluginMeta(type):
    def __init__(cls, name, bases, namespace):
        super(PluginMeta, cls).__init__(name, bases, namespace)
        if bases != (object,):
            REGISTRY[Plugin.normalise(name)] = cls


class Plugin(object):
    __metaclass__ = PluginMeta
    summary = u""

    @staticmethod
    def normalise(name):
        spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name.strip())
        return re.sub(r"[^a-z0-9]+", "_", spaced.lower()).strip("_")

    def describe(self):
        return "%s: %s" % (Plugin.normalise(type(self).__name__), self.summary)


class CsvExport(Plugin):
    summary = u"comma-separated rows"
