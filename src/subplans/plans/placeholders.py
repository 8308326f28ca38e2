"""The placeholders of a ``for_each`` subplan (``{item}``, ``{index}``, ``{stem}``): found and replaced.

A ``run`` string is not filled in here: there each value is quoted for where it stands
(``shellquote``); everywhere else (names, argument lists, paths, env, ``with``) it goes in as it is.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "PLACEHOLDER",
    "fill",
    "find_placeholders",
    "item_values",
    "pieces",
    "stem",
    "substitute",
    "substitute_all",
]

#: ``{item}``, ``{index}`` or ``{stem}``.
PLACEHOLDER = re.compile(r"\{(item|index|stem)\}")


def item_values(item: str, index: int) -> dict[str, str]:
    """What each placeholder stands for, for the ``index``-th item."""
    return {"item": item, "index": str(index), "stem": stem(item)}


def stem(item: str) -> str:
    """``Path(item).stem``, without making a ``Path`` where the last part is plain."""
    name = item.rpartition("/")[2]
    dot = name.rfind(".")
    if name in ("", ".", "..") or dot == len(name) - 1:
        # A folder's name, or a final '.' (a suffix to some Python versions): as Path says.
        return Path(item).stem
    return name[:dot] if dot > 0 else name


def substitute(text: str, values: Mapping[str, str]) -> str:
    """``text`` with the placeholders replaced as they are (not for a ``run`` string)."""
    if not values or "{" not in text:  # outside for_each placeholders are reported by the loader
        return text
    return fill(pieces(text), values)


@functools.lru_cache(maxsize=1024)
def pieces(text: str) -> tuple[str, ...]:
    """``text`` split at its placeholders: text, placeholder name, text, ... (a template is
    split once, and filled in for each of a ``for_each``'s items)."""
    return tuple(PLACEHOLDER.split(text))


def fill(split: tuple[str, ...], values: Mapping[str, str]) -> str:
    """The text ``pieces`` split, with each placeholder's value."""
    if len(split) == 1:
        return split[0]
    if len(split) == 3 and not split[0] and not split[2]:  # just one placeholder
        return values[split[1]]
    return "".join([values[piece] if odd & 1 else piece for odd, piece in enumerate(split)])


def substitute_all(value: Any, values: Mapping[str, str]) -> Any:
    """``value`` with every string in it substituted (lists and mappings, recursively)."""
    if isinstance(value, str):
        return substitute(value, values)
    if isinstance(value, list):
        return [substitute_all(v, values) for v in value]
    if isinstance(value, dict):
        return {k: substitute_all(v, values) for k, v in value.items()}
    return value


def find_placeholders(value: object) -> list[str]:
    """Every placeholder written in ``value`` (strings, lists and mappings, recursively)."""
    if isinstance(value, str):
        return [f"{{{name}}}" for name in PLACEHOLDER.findall(value)]
    if isinstance(value, list | tuple):
        return [found for v in value for found in find_placeholders(v)]
    if isinstance(value, dict):
        return [found for v in value.values() for found in find_placeholders(v)]
    return []
