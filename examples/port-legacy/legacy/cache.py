# mypy: ignore-errors
"""A small least-recently-used cache for rates and lookups.

>>> cache = LRUCache(2)
>>> cache.put(u"a", 1)
>>> cache.put(u"b", 2)
>>> cache.get(u"a")
1
>>> cache.put(u"c", 3)
>>> sorted(cache.keys())
['a', 'c']
>>> cache
<LRUCache 2/2>
"""
from __future__ import absolute_import

import collections


class LRUCache(object):
    def __init__(self, capacity):
        self.capacity = capacity
        self._items = collections.OrderedDict()

    def get(self, key, default=None):
        if key not in self._items:
            return default
        value = self._items.pop(key)
        self._items[key] = value
        return value

    def put(self, key, value):
        self._items.pop(key, None)
        self._items[key] = value
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def keys(self):
        return list(self._items.keys())

    def __repr__(self):
        return "<LRUCache %d/%d>" % (len(self._items), self.capacity)
