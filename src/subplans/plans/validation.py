"""A YAML file's data checked against its pydantic model; every error becomes a ``Problem``
at its line and column, in words that say how to fix it."""

from __future__ import annotations

import difflib
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from subplans.plans.models import FIELD_NAMES, UNION_TAGS, ProfileFields
from subplans.plans.scheduling import RUN_POOLS
from subplans.plans.yamlfile import Loc, Located, ProblemsError

__all__ = ["validate"]

_Model = TypeVar("_Model", bound=BaseModel)

_FRIENDLY = {
    "run": "must be a command string or a non-empty list of argument strings",
    "plan": "must be a plan file path or an inline plan with steps",
    "automation_profile": "must be a profile name or a mapping of profile fields",
    "for_each": "must be a list of strings, {glob: PATTERN}, {lines: FILE} or {command: COMMAND}",
    "call": "must look like package.module:function",
    "name": "must be a non-empty name without '/'",
    "idempotent": "must be true or false",
    "halt": "must be GNU parallel's form ('soon,fail=3%') or a mapping {when, fail, success}",
    "uses": "must be pool units ({api: 1}) or a list of pool names ([api])",
}


def validate(model: type[_Model], data: object, located: Located, what: str) -> _Model:
    """``data`` (read from ``located``) as a ``model``; ``what`` names the file's kind.

    Raises:
        ProblemsError: ``data`` is not a mapping, or every way it does not fit ``model``.
    """
    if not isinstance(data, dict):
        raise ProblemsError(
            [located.problem((), f"{what} must be a mapping, got {type(data).__name__}")]
        )
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            # A mapping key's own error (an env name) ends in "[key]": shown at the key.
            at_key = item["type"] == "extra_forbidden" or item["loc"][-1:] == ("[key]",)
            loc = tuple(p for p in item["loc"] if p not in UNION_TAGS and p != "[key]")
            problems.append(located.problem(loc, _message(item, loc), at_key=at_key))
        problems.sort(key=lambda p: (p.line or 0, p.column or 0))
        raise ProblemsError(problems) from None


def _message(error: ErrorDetails, loc: Loc) -> str:
    kind, last = error["type"], loc[-1] if loc else ""
    if kind == "extra_forbidden":
        return _unknown_key(str(last))
    if kind == "missing":
        return "required"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "too_short":
        return "must not be empty"
    shown = f"{error['input']!r} ({type(error['input']).__name__})"
    if isinstance(last, str) and last in _FRIENDLY:
        return f"{_FRIENDLY[last]}, got {shown}"
    message = error["msg"]
    return f"{message[0].lower()}{message[1:]}, got {shown}"


def _unknown_key(key: str) -> str:
    """Why a key is refused where it stands, and how to write it instead."""
    if key == "pools":  # allowed beside a plan's steps: here it is a step's (or below)
        return f"'pools' is not a step's: {RUN_POOLS}"
    if key in ProfileFields.model_fields:
        # A profile field written beside the steps: the commonest slip, so name the fix.
        return (
            f"{key!r} is a profile field: write it under automation_profile, "
            f"e.g. automation_profile: {{{key}: ...}}"
        )
    if key in FIELD_NAMES:
        return f"key {key!r} is not allowed here"
    close = difflib.get_close_matches(key, sorted(FIELD_NAMES), n=1)
    return f"unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else "")
