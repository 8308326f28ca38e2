"""Many rows per statement: a multi-row ``INSERT`` bound from one flat list of values.

Binding many rows per statement costs far less than ``executemany`` (one statement per row,
which steps and releases the GIL once per row). Statements come in a few sizes only, ``chunk``
rows and then the rest in powers of two, so each is prepared once per connection: SQLite takes
about as long to prepare a row of a multi-row statement as to insert it, and a remainder of a
new size every batch cost that again.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import Any

__all__ = ["execute_rows"]


@functools.lru_cache(maxsize=64)
def _statement(template: str, row: str, rows: int) -> str:
    return template.format(rows=",".join([row] * rows))


def execute_rows(
    connection: sqlite3.Connection,
    template: str,
    row: str,
    width: int,
    head: tuple[Any, ...],
    flat: Sequence[Any],
    *,
    chunk: int,
) -> None:
    """Execute ``template`` (``{rows}`` where the ``row``s go) for the rows in ``flat``,
    ``width`` values each, as many per statement as allowed; ``head`` are the values that
    ``row`` numbers before its own (``?1``...), bound once per statement."""
    limit = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    chunk = max(1, min(chunk, (limit - len(head)) // width))
    rows, execute = len(flat) // width, connection.execute
    start = 0
    while start < rows:
        left = rows - start
        count = chunk if left >= chunk else 1 << (left.bit_length() - 1)
        end = start + count
        execute(_statement(template, row, count), (*head, *flat[start * width : end * width]))
        start = end
