"""The shared polling helper: what it returns and how it fails."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from .conftest import wait_until


def test_returns_the_first_truthy_value() -> None:
    answers: Iterator[list[int]] = iter([[], [], [7]])
    assert wait_until(lambda: next(answers), interval=0) == [7]


def test_a_timeout_fails_the_test_naming_what_was_awaited() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"^timed out after 0s waiting for the moon$"):
        wait_until(lambda: False, "the moon", timeout=0, interval=0)


def test_without_a_name_the_failure_shows_the_predicate() -> None:
    never = lambda: 0  # noqa: E731 - the source line is what the message shows
    with pytest.raises(pytest.fail.Exception, match=re.escape("never = lambda: 0")):
        wait_until(never, timeout=0, interval=0)
