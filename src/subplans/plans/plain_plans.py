"""A plan file of the common shape checked without pydantic.

Importing pydantic and building the plan models' validators takes about 60 ms, a third of a
run's start. Most plans are written with a few plain forms: steps that ``run`` a command (a
string or a list of strings), ``call`` a function or name a ``plan`` file, ``subplans`` lists and
``for_each`` with a list or a ``{lines}``, ``{glob}`` or ``{command}`` source, scalar options of
their exact types, ``automation_profile`` by name. ``plain_plan`` checks such a file by the rules
of ``models`` and makes stand-ins of the models pydantic would make (``plain_models``: the same
fields, values and fields set); at the first key, type or value it does not take for certain, or
anything the models would refuse, it gives up and the loader asks pydantic
(``validation.validate``), so that every problem is reported exactly as before.
``tests/test_plain_plans.py`` holds the two ways equal.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from subplans.engine.config import MAX_PARALLEL_LIMIT, FailureMode
from subplans.plans.backends import DASK, LOCAL
from subplans.plans.placeholders import find_placeholders
from subplans.plans.plain_models import (
    PlainCommand,
    PlainGlob,
    PlainLines,
    PlainPlan,
    PlainStep,
    PlainSubplan,
    PlainTemplate,
)

if TYPE_CHECKING:
    from subplans.plans.models import PlanFile

__all__ = ["plain_plan"]

_PLAN_KEYS = frozenset({"name", "description", "action", "automation_profile", "steps"})
_UNIT_KEYS = frozenset(
    {"run", "call", "plan", "with", "timeout", "retries", "env", "cwd", "idempotent", "name"}
)
_STEP_KEYS = _UNIT_KEYS | {
    "subplans",
    "for_each",
    "subplan",
    "always",
    "max_parallel",
    "failure_mode",
    "automation_profile",
    "backend",
}
#: ``models.CallTarget``'s pattern, for ASCII text (where every regex engine reads it alike).
_CALL = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", re.ASCII)
_FAILURE_MODES = {mode.value: mode for mode in FailureMode}
_BACKENDS = {"local": LOCAL, "dask": DASK}


class _NotPlain(Exception):
    """Something ``plain_plan`` leaves to pydantic."""


def plain_plan(data: dict[Any, Any]) -> PlanFile | None:
    """``data`` as the ``PlanFile`` pydantic would make of it (its stand-in, typed as the
    model: the loader reads its fields only), or None: ask pydantic."""
    try:
        fields = _fields(data, _PLAN_KEYS)
        _text(fields, "name", _nonempty)
        _text(fields, "description", _any_text, optional=True)
        _text(fields, "action", _no_nul, optional=True)
        _text(fields, "automation_profile", _any_text, optional=True)
        steps = fields.get("steps")
        if type(steps) is not list:
            raise _NotPlain
        fields["steps"] = [_step(step) for step in steps]
        return cast("PlanFile", PlainPlan(fields))
    except _NotPlain:
        return None


def _fields(data: object, allowed: frozenset[str]) -> dict[str, Any]:
    """A copy of the mapping ``data``, if it only has keys of ``allowed``, none of them empty
    (``key:`` alone is None: where the models take it, and how, is pydantic's to say)."""
    if type(data) is not dict or not data.keys() <= allowed or None in data.values():
        raise _NotPlain
    return dict(data)


def _step(data: object) -> PlainStep:
    fields = _unit(data, _STEP_KEYS)
    _text(fields, "name", _name)
    _text(fields, "automation_profile", _any_text, optional=True)
    if "subplans" in fields:
        subplans = fields["subplans"]
        if type(subplans) is not list or not subplans:
            raise _NotPlain
        fields["subplans"] = [_subplan(item) for item in subplans]
    if "for_each" in fields:
        fields["for_each"] = _for_each(fields["for_each"])
    if "subplan" in fields:
        fields["subplan"] = _template(fields["subplan"])
    if "always" in fields and type(fields["always"]) is not bool:
        raise _NotPlain
    parallel = fields.get("max_parallel")
    if parallel is not None and not (type(parallel) is int and 1 <= parallel <= MAX_PARALLEL_LIMIT):
        raise _NotPlain
    mode = fields.get("failure_mode")
    if mode is not None:
        if type(mode) is not str or mode not in _FAILURE_MODES:
            raise _NotPlain
        fields["failure_mode"] = _FAILURE_MODES[mode]
    backend = fields.get("backend")
    if backend is not None:  # by name; its mapping form is pydantic's
        if type(backend) is not str or backend not in _BACKENDS:
            raise _NotPlain
        fields["backend"] = _BACKENDS[backend]
    # StepModel's own check: exactly one kind of work, for_each with subplan.
    kinds = _unit_kinds(fields)
    kinds += [kind for kind in ("subplans", "for_each") if fields.get(kind) is not None]
    if len(kinds) != 1 or (fields.get("for_each") is None) != (fields.get("subplan") is None):
        raise _NotPlain
    return PlainStep(_by_field(fields))


def _subplan(data: object) -> PlainSubplan:
    fields = _unit(data, _UNIT_KEYS)
    _text(fields, "name", _name)
    if len(_unit_kinds(fields)) != 1:
        raise _NotPlain
    return PlainSubplan(_by_field(fields))


def _template(data: object) -> PlainTemplate:
    fields = _unit(data, _UNIT_KEYS)
    _text(fields, "name", _nonempty_text, optional=True)
    if len(_unit_kinds(fields)) != 1:
        raise _NotPlain
    return PlainTemplate(_by_field(fields))


def _unit(data: object, allowed: frozenset[str]) -> dict[str, Any]:
    """The fields of ``models._Unit``, checked; the others copied for the caller to check."""
    fields = _fields(data, allowed)
    run = fields.get("run")
    if type(run) is list:
        if not run:
            raise _NotPlain
        fields["run"] = [_no_nul(arg) for arg in run]
    else:
        _text(fields, "run", _no_nul, optional=True)
    _text(fields, "call", _call, optional=True)
    _text(fields, "plan", _no_nul, optional=True)  # an inline plan: pydantic's
    _text(fields, "cwd", _no_nul, optional=True)
    if fields.get("with") is not None:
        if type(fields["with"]) is not dict:
            raise _NotPlain
        fields["with"] = {_any_text(key): value for key, value in fields["with"].items()}
    if fields.get("timeout") is not None:
        fields["timeout"] = _timeout(fields["timeout"])
    retries = fields.get("retries")
    if retries is not None and not (type(retries) is int and retries >= 0):
        raise _NotPlain
    idempotent = fields.get("idempotent")
    if idempotent is not None and type(idempotent) is not bool:
        raise _NotPlain
    if fields.get("env") is not None:
        env = fields["env"]
        if type(env) is not dict:
            raise _NotPlain
        fields["env"] = {_env_name(key): _no_nul(value) for key, value in env.items()}
    if fields.get("with") is not None and fields.get("call") is None:
        raise _NotPlain
    return fields


def _unit_kinds(fields: dict[str, Any]) -> list[str]:
    return [kind for kind in ("run", "call", "plan") if fields.get(kind) is not None]


def _for_each(value: object) -> object:
    """``models.ForEach``: a list of strings, or one source mapping."""
    if type(value) is list:
        return [_no_nul(item) for item in value]
    if type(value) is not dict:
        raise _NotPlain
    fields = dict(value)  # the keys written: the fields set
    if type(fields.get("allow_empty", False)) is not bool:
        raise _NotPlain
    keys = fields.keys()
    if "lines" in keys and keys <= {"lines", "allow_empty"}:
        fields["lines"] = _source(fields["lines"])
        return PlainLines(fields)
    if "command" in keys and keys <= {"command", "allow_empty"}:
        fields["command"] = _source(fields["command"])
        return PlainCommand(fields)
    if "glob" in keys and keys <= {"glob", "exclude", "allow_empty"}:
        glob = fields["glob"]
        if type(glob) is list and glob:
            fields["glob"] = [_source(pattern) for pattern in glob]
        else:
            fields["glob"] = _source(glob)
        exclude = fields.get("exclude")
        if exclude is not None:
            if type(exclude) is not list:
                raise _NotPlain
            fields["exclude"] = [_source(pattern) for pattern in exclude]
        return PlainGlob(fields)
    raise _NotPlain


def _text(
    fields: dict[str, Any], key: str, check: Callable[[object], str], *, optional: bool = False
) -> None:
    """``fields[key]`` checked by ``check``; it may be absent where ``optional``."""
    if key in fields:
        check(fields[key])
    elif not optional:
        raise _NotPlain


def _any_text(value: object) -> str:
    """A string that is UTF-8 text. A lone surrogate (``"\\ud800"`` in YAML) is not:
    pydantic refuses it in a field with a constraint and the plan's hash could not encode it,
    so such a plan is pydantic's to judge, whichever field holds it."""
    if type(value) is not str:
        raise _NotPlain
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise _NotPlain from None
    return value


def _nonempty(value: object) -> str:
    text = _any_text(value)
    if not text:
        raise _NotPlain
    return text


def _no_nul(value: object) -> str:
    """``models.Text``."""
    text = _any_text(value)
    if "\x00" in text:
        raise _NotPlain
    return text


def _nonempty_text(value: object) -> str:
    return _nonempty(_no_nul(value))


def _name(value: object) -> str:
    """``models.Name``: not empty, no '/', no whitespace first. Past ASCII, whatever Unicode
    calls whitespace (the pattern's ``\\s``) Python's ``isspace`` does too."""
    text = _nonempty_text(value)
    first = text[0]
    if "/" in text or (first.isspace() if not first.isascii() else not "!" <= first <= "~"):
        raise _NotPlain
    return text


def _call(value: object) -> str:
    text = _no_nul(value)
    if not text.isascii() or not _CALL.fullmatch(text):
        raise _NotPlain
    return text


def _env_name(value: object) -> str:
    text = _nonempty_text(value)
    if "=" in text:
        raise _NotPlain
    return text


def _source(value: object) -> str:
    """``models.SourceText``: read before there is any item, so no placeholder."""
    text = _nonempty_text(value)
    if find_placeholders(text):
        raise _NotPlain
    return text


def _timeout(value: object) -> float:
    """``models.Timeout``: seconds > 0, as a float."""
    if type(value) is int and 0 < value < 2**53:
        return float(value)
    if type(value) is float and math.isfinite(value) and value > 0:
        return value
    raise _NotPlain


def _by_field(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` by the models' field names (``with`` is ``with_``)."""
    if "with" in fields:
        fields = dict(fields)
        fields["with_"] = fields.pop("with")
    return fields
