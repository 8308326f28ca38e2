# mypy: ignore-errors
"""Journal entries with an audit trail.

>>> entry = JournalEntry(u"J-7", u"opening balance")
>>> entry.note(u"checked by Anna")
>>> entry.trail
['created J-7', 'checked by Anna']
>>> str(entry)
'J-7: opening balance'
"""
from __future__ import unicode_literals


class Audited(object):
    def __init__(self):
        self.trail = []

    def note(self, text):
        self.trail.append(text)


class JournalEntry(Audited):
    def __init__(self, ref, text):
        super(JournalEntry, self).__init__()
        self.ref = ref
        self.text = text
        self.note(u"created %s" % ref)

    def __str__(self):
        return "%s: %s" % (self.ref, self.text)
