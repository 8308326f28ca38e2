"""``HaltPolicy``: when a dispatch stops early, on a count or a share of failures or successes.

GNU parallel's ``--halt`` is the model, string form included (``"soon,fail=3%"``). ``soon``
starts nothing new once a threshold is reached and lets the running subplans finish; ``now``
also cancels them. ``HaltPolicy("now", fail=1)`` is exactly ``FailureMode.FAIL_FAST``; no
policy is ``FailureMode.CONTINUE_ON_ERROR``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from subplans.engine.errors import ConfigError

__all__ = ["FAIL_FAST_HALT", "HaltPolicy", "Threshold", "check_threshold"]

#: A count of subplans (an int >= 1) or a percentage of them ("3%", "12.5%").
Threshold = int | str

_WHEN = ("now", "soon")
# ASCII digits only: int() and Fraction() also read "٣" (an Arabic-Indic 3), no policy text.
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*%\s*$", re.ASCII)
_COUNT = re.compile(r"^\s*\d+\s*$", re.ASCII)
_FORM = "'now|soon,fail=N|P%[,success=N|P%]'"


@dataclass(frozen=True, slots=True)
class HaltPolicy:
    """When a dispatch halts: ``fail`` and ``success`` are a count (``3``) or a percentage of
    the subplans known so far, or of the total when it is known (``"3%"``; while more may come,
    judged once 3 subplans have ended, as GNU parallel does).

    ``when="soon"`` starts nothing new once a threshold is reached and lets the running
    subplans finish; ``when="now"`` also cancels them. The subplans that never start end
    FAILED with a ``SubplanCancelledError`` that names the threshold. A dispatch halted by its
    ``success`` threshold returns its results (``run()`` raises nothing) unless its ``fail``
    threshold was reached too.

    Raises:
        ConfigError: ``when`` is not "now" or "soon", a threshold is not a count >= 1 or a
            percentage in (0, 100], or neither threshold is given.
    """

    when: str
    fail: Threshold | None = None
    success: Threshold | None = None

    def __post_init__(self) -> None:
        if self.when not in _WHEN:
            raise ConfigError(f"halt when must be 'now' or 'soon', got {self.when!r}")
        object.__setattr__(self, "fail", check_threshold("fail", self.fail))
        object.__setattr__(self, "success", check_threshold("success", self.success))
        if self.fail is None and self.success is None:
            raise ConfigError("halt needs a fail or a success threshold, got neither")

    def __str__(self) -> str:
        """GNU parallel's form: ``soon,fail=3%``."""
        parts = [self.when]
        if self.fail is not None:
            parts.append(f"fail={self.fail}")
        if self.success is not None:
            parts.append(f"success={self.success}")
        return ",".join(parts)

    @property
    def now(self) -> bool:
        """Whether reaching a threshold also cancels the running subplans."""
        return self.when == "now"

    @property
    def is_fail_fast(self) -> bool:
        """Whether this is exactly ``FailureMode.FAIL_FAST`` (``now,fail=1``)."""
        return self.when == "now" and self.fail == 1 and self.success is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy: ``when``, ``fail`` and ``success`` (None when unset)."""
        return {"when": self.when, "fail": self.fail, "success": self.success}

    def fail_reached(self, failed: int, known: int) -> bool:
        """Whether ``failed`` of ``known`` subplans reach the ``fail`` threshold."""
        return _reached(self.fail, failed, known)

    def success_reached(self, completed: int, known: int) -> bool:
        """Whether ``completed`` of ``known`` subplans reach the ``success`` threshold."""
        return _reached(self.success, completed, known)

    @classmethod
    def parse(cls, text: str, name: str = "halt") -> HaltPolicy:
        """GNU parallel's form, ``"soon,fail=3%"`` or ``"now,fail=1,success=50%"``.

        Raises:
            ConfigError: not of that form, or a value is out of range (``name`` labels it).
        """
        if not isinstance(text, str):
            raise ConfigError(f"{name} must be of the form {_FORM}, got {text!r}")
        when, *pairs = [part.strip() for part in text.split(",")]
        values: dict[str, str] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            key = key.strip()
            if not sep or key not in ("fail", "success") or key in values:
                raise ConfigError(f"{name} must be of the form {_FORM}, got {text!r}")
            values[key] = value.strip()
        if not values:
            raise ConfigError(f"{name} must be of the form {_FORM}, got {text!r}")
        try:
            return cls(when, **values)
        except ConfigError as error:
            raise ConfigError(str(error).replace("halt ", f"{name} ", 1)) from None

    @classmethod
    def from_value(cls, value: object, name: str = "halt") -> HaltPolicy | None:
        """A policy from what a plan file, a profile or an option gives: a ``HaltPolicy``, its
        string form, a mapping (``{when: soon, fail: 3%}``) or None (no policy).

        Raises:
            ConfigError: anything else, or an invalid policy (``name`` labels it).
        """
        if value is None or isinstance(value, HaltPolicy):
            return value
        if isinstance(value, str):
            return cls.parse(value, name)
        if isinstance(value, Mapping):
            unknown = sorted(str(key) for key in value if key not in ("when", "fail", "success"))
            if unknown:
                raise ConfigError(
                    f"{name} has unknown key {unknown[0]!r} (allowed: when, fail, success)"
                )
            if "when" not in value:
                raise ConfigError(f"{name} needs 'when' ('now' or 'soon')")
            try:
                return cls(**value)
            except ConfigError as error:
                raise ConfigError(str(error).replace("halt ", f"{name} ", 1)) from None
        raise ConfigError(
            f"{name} must be a HaltPolicy, a string of the form {_FORM} or a mapping, got {value!r}"
        )


def check_threshold(name: str, value: object) -> Threshold | None:
    """``value`` as the ``name`` threshold ("fail" or "success"): a count (an int >= 1, or its
    digits as text) or a percentage in (0, 100] ("3%"); None stays None. The one rule for
    Python, plan files, profiles and ``--halt``: ``True`` and ``1.0`` are no count.

    Raises:
        ConfigError: anything else.
    """
    if value is None:
        return None
    if type(value) is int and value >= 1:
        return value
    if isinstance(value, str):
        if _COUNT.match(value) and int(value) >= 1:
            return int(value)
        from fractions import Fraction  # percentages only: its import is 1 ms of a start (#10)

        match = _PERCENT.match(value)
        if match and 0 < Fraction(match.group(1)) <= 100:
            return f"{match.group(1)}%"
    raise ConfigError(
        f"halt {name} must be a count >= 1 or a percentage in (0, 100], got {value!r}"
    )


def _reached(threshold: Threshold | None, count: int, known: int) -> bool:
    if threshold is None or count <= 0:
        return False
    if type(threshold) is int:
        return count >= threshold
    from fractions import Fraction

    # Exact arithmetic: 0.1% of 1,000 is 1, which floats make 1.0000000000000002.
    return count * 100 >= Fraction(str(threshold)[:-1]) * known


#: ``FailureMode.FAIL_FAST`` as a policy.
FAIL_FAST_HALT = HaltPolicy("now", fail=1)
