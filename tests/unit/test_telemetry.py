"""The shim's own metrics: code names as grpc-go spells them, and what the handler and Docker
wrappers count. Values are read from the registry, before and after, as other tests count too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from dockershim_py import inline, telemetry
from dockershim_py.cri.handlers import _streaming, _unary
from dockershim_py.docker_client import _measured
from dockershim_py.errors import CRIError, not_found


@pytest.mark.parametrize("code, name", [
    (grpc.StatusCode.OK, "OK"), (grpc.StatusCode.NOT_FOUND, "NotFound"), (grpc.StatusCode.CANCELLED, "Canceled"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "DeadlineExceeded"), (grpc.StatusCode.UNIMPLEMENTED, "Unimplemented"),
    (grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgument"), (grpc.StatusCode.RESOURCE_EXHAUSTED, "ResourceExhausted"),
])
def test_go_code_names(code: grpc.StatusCode, name: str) -> None:
    assert telemetry.go_code_name(code) == name


def sample(name: str, **labels: str) -> float:
    return telemetry.REGISTRY.get_sample_value(name, labels) or 0.0


class Aborted(Exception):
    pass


class Context:
    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


def labels(method: str, grpc_type: str = "unary") -> dict[str, str]:
    return {"grpc_type": grpc_type, "grpc_service": "test.v1.Unit", "grpc_method": method}


def test_unary_calls_are_counted_by_code() -> None:
    def answer(request: Any, context: Any) -> str:
        if request == "missing":
            raise not_found("no such thing")
        if request == "broken":
            raise ValueError("a bug")
        return "ok"

    handle = _unary("test.v1.Unit/Answer", answer)
    before = {code: sample("grpc_server_handled_total", **labels("Answer"), grpc_code=code)
              for code in ("OK", "NotFound", "Internal")}
    assert handle("x", Context()) == "ok"
    for request in ("missing", "broken"):
        with pytest.raises(Aborted):
            handle(request, Context())
    for code in ("OK", "NotFound", "Internal"):
        assert sample("grpc_server_handled_total", **labels("Answer"), grpc_code=code) == before[code] + 1
    assert sample("grpc_server_started_total", **labels("Answer")) == 3
    assert sample("grpc_server_handling_seconds_count", **labels("Answer")) == 3


def test_an_inline_attempt_that_gives_up_is_counted_once_when_run_again() -> None:
    def answer(request: Any, context: Any) -> str:
        inline.may_wait("Docker")
        return "ok"

    handle = _unary("test.v1.Unit/Retried", answer)
    with inline.attempt(), pytest.raises(inline.WouldWait):
        handle("x", Context())
    assert sample("grpc_server_started_total", **labels("Retried")) == 0
    assert sample("grpc_server_handled_total", **labels("Retried"), grpc_code="OK") == 0
    assert handle("x", Context()) == "ok"  # on a worker
    assert sample("grpc_server_started_total", **labels("Retried")) == 1
    assert sample("grpc_server_handled_total", **labels("Retried"), grpc_code="OK") == 1
    assert inline_attempts("Retried") == {"answered": 0, "deferred": 1}


def inline_attempts(method: str) -> dict[str, float]:
    return {outcome: sample("dockershim_py_grpc_inline_attempts_total", grpc_service="test.v1.Unit",
                            grpc_method=method, outcome=outcome) for outcome in ("answered", "deferred")}


def test_inline_attempts_answered_are_counted_and_calls_on_a_worker_are_not() -> None:
    def answer(request: Any, context: Any) -> str:
        if request == "missing":
            raise not_found("no such thing")
        return "ok"

    handle = _unary("test.v1.Unit/Tried", answer)
    with inline.attempt():
        assert handle("x", Context()) == "ok"
        with pytest.raises(Aborted):  # a failure is an answer too
            handle("missing", Context())
    assert handle("x", Context()) == "ok"  # on a worker from the start
    assert inline_attempts("Tried") == {"answered": 2, "deferred": 0}
    assert sample("grpc_server_started_total", **labels("Tried")) == 3


def test_a_docker_request_an_inline_attempt_gives_up_before_is_not_counted() -> None:
    made = []

    @_measured
    def inspect_thing() -> None:
        made.append(1)

    before = sample("dockershim_py_docker_requests_total", operation="inspect_thing", code="OK")
    with inline.attempt(), pytest.raises(inline.WouldWait):
        inspect_thing()
    assert not made
    assert sample("dockershim_py_docker_requests_total", operation="inspect_thing", code="OK") == before


def test_a_stream_the_client_leaves_counts_as_cancelled() -> None:
    def forever(request: Any, context: Any) -> Iterator[int]:
        yield from range(1_000_000)

    stream = _streaming("test.v1.Unit/Follow", forever)("x", Context())
    assert next(stream) == 0
    stream.close()  # what the transport does when the client goes away
    assert sample("grpc_server_handled_total", **labels("Follow", "server_stream"), grpc_code="Canceled") == 1
    assert sample("grpc_server_handled_total", **labels("Follow", "server_stream"), grpc_code="OK") == 0


def test_docker_requests_are_counted_by_operation_and_outcome() -> None:
    @_measured
    def unit_lookup(name: str) -> str:
        if name == "gone":
            raise CRIError(grpc.StatusCode.NOT_FOUND, "gone")
        if name == "bug":
            raise KeyError(name)
        return name

    assert unit_lookup("here") == "here"
    with pytest.raises(CRIError):
        unit_lookup("gone")
    with pytest.raises(KeyError):
        unit_lookup("bug")
    assert sample("dockershim_py_docker_requests_total", operation="unit_lookup", code="OK") == 1
    assert sample("dockershim_py_docker_requests_total", operation="unit_lookup", code="NotFound") == 1
    assert sample("dockershim_py_docker_requests_total", operation="unit_lookup", code="Unknown") == 1
    assert sample("dockershim_py_docker_request_duration_seconds_count", operation="unit_lookup") == 3


def test_index_freshness_is_read_at_each_scrape() -> None:
    fresh = [True]
    telemetry.watch_index(lambda: fresh[0])
    assert sample("dockershim_py_index_fresh") == 1
    fresh[0] = False
    assert sample("dockershim_py_index_fresh") == 0
