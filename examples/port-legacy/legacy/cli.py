# -*- coding: utf-8 -*-
# mypy: ignore-errors
"""The ledgerlite command line.

>>> options, args = build_parser().parse_args([u"--year", u"2013", u"report"])
>>> options.year, args
('2013', ['report'])
>>> usage_line(u"ledgerlite")
'usage: ledgerlite [options] command'
"""
from __future__ import absolute_import, print_function, unicode_literals

import optparse
import sys


def usage_line(program):
    return "usage: %s [options] command" % (program,)


def build_parser():
    parser = optparse.OptionParser(usage=u"%prog [options] command")
    parser.add_option(u"--year", dest=u"year", help=u"the ledger year")
    parser.add_option(u"--verbose", action=u"store_true", default=False)
    return parser


def main(argv=None):
    options, args = build_parser().parse_args(argv)
    if not args:
        print(usage_line(u"ledgerlite"), file=sys.stderr)
        return 2
    print("%s %s" % (args[0], options.year or u"(all years)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
