"""How a ``for_each`` source may be written, checked as the plan file is read (pydantic
validators of ``models``): exactly one of ``glob``, ``lines`` or ``command``, and no
placeholder, since a source is read before there is any item."""

from __future__ import annotations

import difflib

from subplans.plans.placeholders import find_placeholders

__all__ = ["no_placeholder", "one_source"]

_SOURCE_KEYS = ("glob", "lines", "command")
_OPTIONS = ("exclude", "allow_empty")
_SOURCES = (
    "a source has exactly one of glob (with exclude), lines or command, each with allow_empty"
)


def no_placeholder(value: str) -> str:
    """``value``, if it holds no placeholder.

    Raises:
        ValueError: it does; the message says how a nested plan gets its parent's item.
    """
    found = find_placeholders(value)
    if found:
        shown = ", ".join(sorted(set(found)))
        raise ValueError(
            f"{shown} is not replaced in a for_each source: it is read before there is any "
            "item; a nested plan gets its parent's item in $SUBPLANS_ITEM (and the env its "
            "parent gives it), which a {command: ...} source can use"
        )
    return value


def one_source(value: object) -> object:
    """``value``, unless it is a mapping without exactly one source key.

    Raises:
        ValueError: it has several, or none (with the unknown key it has instead): one
            message that says what a source has, not ``glob: required`` beside a typo.
    """
    if not isinstance(value, dict):
        return value
    given = [key for key in _SOURCE_KEYS if key in value]
    if len(given) > 1:
        shown = f"{', '.join(given[:-1])} and {given[-1]}"
        raise ValueError(f"has {shown}: {_SOURCES}")
    if given:
        return value
    unknown = [str(key) for key in value if key not in _OPTIONS]
    if not unknown:
        raise ValueError(f"has none of glob, lines or command: {_SOURCES}")
    close = difflib.get_close_matches(unknown[0], (*_SOURCE_KEYS, *_OPTIONS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown key {unknown[0]!r}{hint}: {_SOURCES}")
