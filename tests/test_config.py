import dataclasses
import re

import pytest

from subplans import ConfigError, FailureMode, ParallelExecutionConfig, Subplan


def test_defaults() -> None:
    config = ParallelExecutionConfig()
    assert config.max_parallel == 4
    assert config.failure_mode is FailureMode.FAIL_FAST
    assert config.cancel_grace == 5.0
    assert config.to_dict() == {
        "max_parallel": 4,
        "failure_mode": "fail_fast",
        "cancel_grace": 5.0,
    }


def test_is_immutable() -> None:
    config = ParallelExecutionConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_parallel = 8  # type: ignore[misc]


@pytest.mark.parametrize("value", [1, 16, 32])
def test_max_parallel_in_range(value: int) -> None:
    assert ParallelExecutionConfig(max_parallel=value).max_parallel == value


@pytest.mark.parametrize("value", [0, -1, 33, 1000])
def test_max_parallel_out_of_range(value: int) -> None:
    with pytest.raises(ConfigError, match=rf"^max_parallel must be between 1 and 32, got {value}$"):
        ParallelExecutionConfig(max_parallel=value)


@pytest.mark.parametrize(
    ("value", "shown"),
    [(True, "True (bool)"), (4.0, "4.0 (float)"), ("4", "'4' (str)"), (None, "None (NoneType)")],
)
def test_max_parallel_must_be_an_int(value: object, shown: str) -> None:
    with pytest.raises(
        ConfigError,
        match=rf"^max_parallel must be an integer between 1 and 32, got {re.escape(shown)}$",
    ):
        ParallelExecutionConfig(max_parallel=value)  # type: ignore[arg-type]


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="max_parallel"):
        ParallelExecutionConfig(max_parallel=33)


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("fail_fast", FailureMode.FAIL_FAST),
        ("continue_on_error", FailureMode.CONTINUE_ON_ERROR),
        (FailureMode.CONTINUE_ON_ERROR, FailureMode.CONTINUE_ON_ERROR),
    ],
)
def test_failure_mode_accepts_strings(value: str, mode: FailureMode) -> None:
    assert ParallelExecutionConfig(failure_mode=value).failure_mode is mode  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["fast", None, 1])
def test_failure_mode_invalid(value: object) -> None:
    with pytest.raises(
        ConfigError, match=r"^failure_mode must be 'fail_fast' or 'continue_on_error', got "
    ):
        ParallelExecutionConfig(failure_mode=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, 0.5, 10])
def test_cancel_grace_valid(value: float) -> None:
    assert ParallelExecutionConfig(cancel_grace=value).cancel_grace == float(value)


def test_cancel_grace_negative() -> None:
    with pytest.raises(ConfigError, match=r"^cancel_grace must be >= 0, got -1$"):
        ParallelExecutionConfig(cancel_grace=-1)


@pytest.mark.parametrize("value", [True, "5", None, float("inf"), float("nan")])
def test_cancel_grace_not_a_number(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^cancel_grace must be a number of seconds >= 0, got "):
        ParallelExecutionConfig(cancel_grace=value)  # type: ignore[arg-type]


def test_check_timeout_accepts_none() -> None:
    from subplans.engine.config import check_timeout

    assert check_timeout(None) is None
    assert check_timeout(2) == 2.0


def test_a_subplan_whose_run_is_not_callable_is_refused_with_the_hint() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^subplan 'a': run must be a zero-argument callable returning an awaitable, "
        r"got 42; HINT: pass the function itself, not its result$",
    ):
        Subplan("a", 42)  # type: ignore[arg-type]
