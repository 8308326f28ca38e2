"""``SubplanResult``: a packed record that reads, compares, prints and pickles like its fields."""

from __future__ import annotations

import asyncio
import pickle
import sys

import pytest

from subplans import (
    AggregateSubplanError,
    FailureMode,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    Subplan,
    SubplanExecutionState,
    SubplanResult,
)

COMPLETED, FAILED = SubplanExecutionState.COMPLETED, SubplanExecutionState.FAILED


def test_fields_read_back_exactly_as_given() -> None:
    error = ValueError("boom")
    result = SubplanResult("a", FAILED, None, error, 1700000000.123456, 1700000001.5, 3)
    assert result.subplan_id == "a"
    assert result.state is FAILED
    assert result.value is None
    assert result.error is error
    assert result.started == 1700000000.123456
    assert result.finished == 1700000001.5
    assert result.attempts == 3
    assert result.duration == pytest.approx(1.376544)
    assert result.started_at is not None
    assert result.started_at.timestamp() == result.started


def test_defaults_and_a_result_that_never_started() -> None:
    result = SubplanResult("never", FAILED, finished=5.0)
    assert (result.value, result.error, result.started, result.finished) == (None, None, None, 5.0)
    assert result.attempts == 0
    assert result.duration is None
    assert result.started_at is None
    assert result.finished_at is not None
    bare = SubplanResult("bare", COMPLETED)
    assert (bare.started, bare.finished, bare.finished_at) == (None, None, None)


def test_a_value_and_keywords() -> None:
    result = SubplanResult(
        subplan_id="v", state=COMPLETED, value={"k": 1}, started=1.0, finished=2.0, attempts=1
    )
    assert result.value == {"k": 1}
    assert result.error is None
    assert result.attempts == 1


def test_setters_change_one_field_and_keep_the_others() -> None:
    result = SubplanResult("s", COMPLETED, None, None, 1.0, 2.0, 1)
    result.value = 42
    assert (result.value, result.error, result.attempts) == (42, None, 1)
    result.attempts = 2
    result.error = KeyError("k")
    assert (result.value, result.attempts) == (42, 2)
    assert isinstance(result.error, KeyError)
    result.value = None
    result.error = None
    assert (result.value, result.error, result.attempts) == (None, None, 2)
    result.started = None
    assert (result.started, result.finished) == (None, 2.0)
    result.started = 0.5
    result.finished = 3.0
    assert (result.started, result.finished, result.duration) == (0.5, 3.0, 2.5)


def test_equality_is_by_fields_and_results_are_not_hashable() -> None:
    one = SubplanResult("x", COMPLETED, 7, None, 1.0, 2.0, 1)
    assert one == SubplanResult("x", COMPLETED, 7, None, 1.0, 2.0, 1)
    assert one != SubplanResult("x", COMPLETED, 7, None, 1.0, 2.5, 1)
    assert one != SubplanResult("x", COMPLETED, 7, None, 1.0, 2.0, 2)
    assert one != ("x", COMPLETED, 7, None, 1.0, 2.0, 1)
    with pytest.raises(TypeError):
        hash(one)


def test_repr_names_every_field_in_order() -> None:
    result = SubplanResult("x", COMPLETED, None, None, 1.5, 2.5, 1)
    assert repr(result) == (
        "SubplanResult(subplan_id='x', state=<SubplanExecutionState.COMPLETED: 'completed'>,"
        " value=None, error=None, started=1.5, finished=2.5, attempts=1)"
    )


def test_pickles_and_matches_by_field() -> None:
    result = SubplanResult("p", FAILED, None, RuntimeError("r"), None, 9.0, 0)
    again = pickle.loads(pickle.dumps(result))
    assert (again.subplan_id, again.state, again.started, again.finished) == (
        "p",
        FAILED,
        None,
        9.0,
    )
    assert isinstance(again.error, RuntimeError)
    assert str(again.error) == "r"
    match SubplanResult("m", COMPLETED, 3, None, 1.0, 2.0, 1):
        case SubplanResult("m", SubplanExecutionState.COMPLETED, value, None, _, _, attempts):
            assert (value, attempts) == (3, 1)
        case _:  # pragma: no cover - the case above must match
            pytest.fail("positional match failed")


def test_a_completed_result_is_small() -> None:
    """The common case (completed, no value, no error) takes the object and one pair of stamps:
    a million of them, ids included, fit in the 200 MB that issue #10 allows."""
    result = SubplanResult("s1", COMPLETED, None, None, 1700000000.25, 1700000000.5, 1)
    owned = sys.getsizeof(result) + sys.getsizeof(result._stamps)
    assert owned <= sys.getsizeof(1.0) * 2 + 56  # the dataclass took 88 bytes + two floats


async def test_the_dispatchers_results_are_what_the_class_makes() -> None:
    """``Running.finish`` builds each result without the class's call: the same record."""

    async def nothing() -> None:
        await asyncio.sleep(0)

    async def seven() -> int:
        return 7

    async def broken() -> None:
        raise OSError("no")

    config = ParallelExecutionConfig(max_parallel=2, failure_mode=FailureMode.CONTINUE_ON_ERROR)
    dispatcher = ParallelSubplanDispatcher(config)
    results = await dispatcher.run([Subplan("a", nothing), Subplan("b", seven)])
    with pytest.raises(AggregateSubplanError) as raised:
        await dispatcher.run([Subplan("c", broken)])
    results += raised.value.results
    assert [(r.subplan_id, r.value, type(r.error)) for r in results] == [
        ("a", None, type(None)),
        ("b", 7, type(None)),
        ("c", None, OSError),
    ]
    for made in results:
        assert made.started is not None
        assert made.finished is not None
        by_class = SubplanResult(
            made.subplan_id,
            made.state,
            made.value,
            made.error,
            made.started,
            made.finished,
            made.attempts,
        )
        assert made == by_class
        assert (made._stamps, made._outcome) == (by_class._stamps, by_class._outcome)
