"""The placeholders of a ``for_each`` subplan (``{item}``, ``{index}``, ``{stem}``): found and replaced.

A ``run`` string is not filled in here: there each value is quoted for where it stands
(``shellquote``); everywhere else (names, argument lists, paths, env, ``with``) it goes in as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["PLACEHOLDER", "find_placeholders", "item_values", "substitute", "substitute_all"]

#: ``{item}``, ``{index}`` or ``{stem}``.
PLACEHOLDER = re.compile(r"\{(item|index|stem)\}")


def item_values(item: str, index: int) -> dict[str, str]:
    """What each placeholder stands for, for the ``index``-th item."""
    return {"item": item, "index": str(index), "stem": Path(item).stem}


def substitute(text: str, values: Mapping[str, str]) -> str:
    """``text`` with the placeholders replaced as they are (not for a ``run`` string)."""
    if not values:  # outside for_each; placeholders there are reported by the loader
        return text
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


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
