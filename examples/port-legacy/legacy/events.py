# mypy: ignore-errors
"""Events: who wants to hear about bookings.

>>> seen = []
>>> bus = EventEmitter()
>>> bus.on(u"booked", seen.append)
>>> bus.emit(u"booked", u"INV-1")
1
>>> seen
['INV-1']
>>> log = []
>>> LoggingEmitter(log).emit(u"paid", u"INV-1", 1500)
0
>>> log
["paid('INV-1', 1500)"]
"""
from __future__ import absolute_import, unicode_literals

import collections


class EventEmitter(object):
    def __init__(self):
        self._handlers = collections.defaultdict(list)

    def on(self, name, handler):
        self._handlers[name].append(handler)

    def emit(self, name, *args):
        handlers = self._handlers.get(name, [])
        for handler in handlers:
            handler(*args)
        return len(handlers)


class LoggingEmitter(EventEmitter):
    def __init__(self, log):
        super(LoggingEmitter, self).__init__()
        self.log = log

    def emit(self, name, *args):
        self.log.append("%s%r" % (name, args))
        return super(LoggingEmitter, self).emit(name, *args)
