"""How wide and how strict one dispatch is."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from subplans.engine.errors import ConfigError
from subplans.engine.halting import FAIL_FAST_HALT, HaltPolicy

__all__ = ["MAX_PARALLEL_LIMIT", "FailureMode", "ParallelExecutionConfig", "check_rate"]

#: The largest allowed ``max_parallel``.
MAX_PARALLEL_LIMIT = 32


class FailureMode(StrEnum):
    """What a dispatch does when a subplan fails."""

    FAIL_FAST = "fail_fast"
    CONTINUE_ON_ERROR = "continue_on_error"


@dataclass(frozen=True, slots=True)
class ParallelExecutionConfig:
    """Immutable, validated settings of one dispatch.

    ``halt`` (a ``HaltPolicy`` or its string form, ``"soon,fail=3%"``) says when the dispatch
    stops early; when given it decides, and ``failure_mode`` becomes what it amounts to
    (``FAIL_FAST`` for ``now,fail=1``, else ``CONTINUE_ON_ERROR``). ``max_per_second`` (a
    number > 0, or None) spaces the starts of its subplans evenly, with no burst beyond one.

    Raises:
        ConfigError: a field is out of range or of the wrong type.
    """

    max_parallel: int = 4
    failure_mode: FailureMode = FailureMode.FAIL_FAST
    cancel_grace: float = 5.0
    halt: HaltPolicy | None = None
    max_per_second: float | None = None

    def __post_init__(self) -> None:
        check_max_parallel(self.max_parallel)
        object.__setattr__(self, "failure_mode", check_failure_mode(self.failure_mode))
        object.__setattr__(self, "cancel_grace", check_seconds("cancel_grace", self.cancel_grace))
        if self.halt is not None:
            halt = HaltPolicy.from_value(self.halt)
            object.__setattr__(self, "halt", halt)
            mode = FailureMode.FAIL_FAST if halt.is_fail_fast else FailureMode.CONTINUE_ON_ERROR  # type: ignore[union-attr]
            object.__setattr__(self, "failure_mode", mode)
        if self.max_per_second is not None:
            object.__setattr__(self, "max_per_second", check_rate(self.max_per_second))

    @property
    def halt_policy(self) -> HaltPolicy | None:
        """The policy in effect: ``halt``, else ``failure_mode``'s (None for continue-on-error)."""
        if self.halt is not None:
            return self.halt
        return FAIL_FAST_HALT if self.failure_mode is FailureMode.FAIL_FAST else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (``halt`` and ``max_per_second`` only when set)."""
        data: dict[str, Any] = {
            "max_parallel": self.max_parallel,
            "failure_mode": self.failure_mode.value,
            "cancel_grace": self.cancel_grace,
        }
        if self.halt is not None:
            data["halt"] = str(self.halt)
        if self.max_per_second is not None:
            data["max_per_second"] = self.max_per_second
        return data


def _shown(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_max_parallel(value: object, name: str = "max_parallel") -> int:
    """Return ``value`` if it is an allowed ``max_parallel``."""
    if type(value) is not int:
        raise ConfigError(
            f"{name} must be an integer between 1 and {MAX_PARALLEL_LIMIT}, got {_shown(value)}"
        )
    if not 1 <= value <= MAX_PARALLEL_LIMIT:
        raise ConfigError(f"{name} must be between 1 and {MAX_PARALLEL_LIMIT}, got {value}")
    return value


def check_failure_mode(value: object, name: str = "failure_mode") -> FailureMode:
    """Return ``value`` as a ``FailureMode``; its string values are accepted too."""
    if isinstance(value, FailureMode):
        return value
    if isinstance(value, str):
        try:
            return FailureMode(value)
        except ValueError:
            pass
    allowed = " or ".join(repr(mode.value) for mode in FailureMode)
    raise ConfigError(f"{name} must be {allowed}, got {_shown(value)}")


def check_seconds(name: str, value: object) -> float:
    """Return ``value`` as a float number of seconds >= 0."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a number of seconds >= 0, got {_shown(value)}")
    if value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value}")
    return float(value)


def check_timeout(value: object, name: str = "timeout") -> float | None:
    """Return ``value`` as a timeout in seconds (> 0), or None for no timeout."""
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a number of seconds > 0 or None, got {_shown(value)}")
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
    return float(value)


def check_rate(value: object, name: str = "max_per_second") -> float:
    """Return ``value`` as a rate of starts per second (a finite number > 0)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a number > 0, got {_shown(value)}")
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
    return float(value)


def check_retries(value: object, name: str = "retries") -> int:
    """Return ``value`` if it is an allowed retry count (an integer >= 0)."""
    if type(value) is not int or value < 0:
        raise ConfigError(f"{name} must be an integer >= 0, got {_shown(value)}")
    return value
