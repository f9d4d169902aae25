"""The cache behind Version: values for their ttl, failures for a shorter one."""

from __future__ import annotations

import pytest

from conftest import ManualClock
from dockershim_py.runtime import _Cached



def test_a_value_is_kept_for_its_ttl_and_then_asked_again() -> None:
    clock, calls = ManualClock(), []
    cached = _Cached(10.0, lambda: calls.append(1) or len(calls), clock=clock)
    assert (cached.get(), cached.get()) == (1, 1)
    clock.now += 10.0
    assert cached.get() == 2


def test_a_failure_is_kept_for_its_own_ttl_only() -> None:
    clock, calls = ManualClock(), []

    def hung_docker() -> int:
        calls.append(1)
        raise TimeoutError("no answer")

    cached = _Cached(10.0, hung_docker, clock=clock, failure_ttl=1.0)
    for _ in range(3):
        with pytest.raises(TimeoutError):
            cached.get()
    assert len(calls) == 1  # the calls behind the first did not wait on Docker again
    clock.now += 1.0
    with pytest.raises(TimeoutError):
        cached.get()
    assert len(calls) == 2


def test_failures_are_not_kept_by_default_and_a_success_clears_one() -> None:
    clock, answers = ManualClock(), [TimeoutError("no answer"), 7]

    def flaky() -> int:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    cached = _Cached(10.0, flaky, clock=clock)
    with pytest.raises(TimeoutError):
        cached.get()
    assert cached.get() == 7
