# mypy: ignore-errors
"""Letters to customers, from templates with %(name)s placeholders.

>>> print(Letter(u"reminder").render(name=u"ACME", days=14))
Dear ACME, your invoice is 14 days overdue.
>>> Letter(u"apology")
Traceback (most recent call last):
...
KeyError: 'no template apology'
"""
from __future__ import unicode_literals

TEMPLATES = {
    u"reminder": u"Dear %(name)s, your invoice is %(days)s days overdue.",
    u"thanks": u"Dear %(name)s, thank you for your payment.",
}


class Letter(object):
    def __init__(self, kind):
        if kind not in TEMPLATES:
            raise KeyError("no template %s" % kind)
        self.kind = kind

    def render(self, **values):
        return TEMPLATES[self.kind] % values
