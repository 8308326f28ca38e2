# mypy: ignore-errors
"""Where ledgerlite keeps its files.

>>> p = Paths(u"/srv/ledger")
>>> p.data(u"2013.db")
'/srv/ledger/data/2013.db'
>>> p.backup(u"2013.db", 3)
'/srv/ledger/backup/2013.db.3'
"""
from __future__ import absolute_import

import os


class Paths(object):
    def __init__(self, root):
        self.root = root

    def data(self, name):
        return os.path.join(self.root, "data", name)

    def backup(self, name, generation):
        return os.path.join(self.root, "backup", "%s.%s" % (name, generation))

    def ensure(self):
        for sub in ("data", "backup"):
            path = os.path.join(self.root, sub)
            if not os.path.isdir(path):
                os.makedirs(path)
