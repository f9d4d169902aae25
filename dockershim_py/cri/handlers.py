"""Registers the adapters under every served CRI version and turns failures into gRPC statuses.

v1alpha2 shares v1's field numbers, so its RPCs reuse the v1 messages and handlers; only the
service name on the wire differs (cri-dockerd served both the same way until 2025).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from .. import inline, telemetry
from ..api import api_pb2
from ..errors import CRIError

log = logging.getLogger("dockershim_py.cri")

API_VERSIONS = ("v1", "v1alpha2")
# UTF-8 bytes of a status message kept: percent-encoded, a grpc-message takes up to three times
# as many, within the 8 KiB of trailers a grpcio client accepts.
MAX_STATUS_MESSAGE = 2048
# What v1alpha2 defines (k8s.io/cri-api v0.25, its last release): RPCs added to v1 afterwards
# are unknown methods there, as on the runtimes that served it.
V1ALPHA2_METHODS = frozenset({
    "Version", "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "PodSandboxStatus", "ListPodSandbox",
    "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer", "ListContainers", "ContainerStatus",
    "UpdateContainerResources", "ReopenContainerLog", "ExecSync", "Exec", "Attach", "PortForward",
    "ContainerStats", "ListContainerStats", "PodSandboxStats", "ListPodSandboxStats", "UpdateRuntimeConfig",
    "Status", "ListImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo",
})


class Adapter:
    """Base of the service adapters: RPCs without a method answer UNIMPLEMENTED with a reason."""

    SERVICE = ""
    UNIMPLEMENTED: dict[str, str] = {}
    # RPCs that hand out the very same response object again while nothing changed.
    REPEATED_RESPONSES: frozenset[str] = frozenset()
    # Read-only unary RPCs, tried on the connection's thread before a worker's (see inline).
    INLINE: frozenset[str] = frozenset()


class LastSerialized:
    """A response serializer that keeps its last result, for responses handed out again unchanged.

    The kubelet relists every second; serializing 220 unchanged containers again each time is a
    fifth of a millisecond. The response must not be modified once returned.
    """

    def __init__(self, serialize: Callable[[Any], bytes]) -> None:
        self._serialize = serialize
        self._last: tuple[Any, bytes] | None = None

    def __call__(self, message: Any) -> bytes:
        last = self._last
        if last is not None and last[0] is message:
            return last[1]
        data = self._serialize(message)
        self._last = (message, data)
        return data


def status_message(message: str) -> str:
    """A message short enough for any client's trailers: one that repeats a huge input whole made
    grpcio clients (8 KiB of metadata) see RESOURCE_EXHAUSTED instead of the error."""
    encoded = message.encode("utf-8", "replace")
    if len(encoded) <= MAX_STATUS_MESSAGE:
        return message
    kept = encoded[:MAX_STATUS_MESSAGE].decode("utf-8", "ignore")  # no character cut in two
    return f"{kept}... ({len(encoded) - len(kept.encode())} more bytes)"


def _fail(method: str, context: grpc.ServicerContext, exc: Exception) -> None:
    if isinstance(exc, CRIError):
        log.info("%s failed: %s: %s", method, exc.code.name, status_message(exc.message))
        context.abort(exc.code, status_message(exc.message))
    log.exception("%s failed unexpectedly", method)
    context.abort(grpc.StatusCode.INTERNAL, status_message(f"{method}: internal error in dockershim-py: {exc}"))


def _code_of(exc: Exception) -> grpc.StatusCode:
    """The status _fail answers for `exc`."""
    return exc.code if isinstance(exc, CRIError) else grpc.StatusCode.INTERNAL


def _unary(method: str, fn: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
    measured = telemetry.GrpcMethod("unary", method)

    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        started = time.monotonic()
        attempt = inline.active()  # counted once it is answered: one that gives up is run again
        if not attempt:
            measured.started()
        code: grpc.StatusCode | None = grpc.StatusCode.OK
        try:
            return fn(request, context)
        except inline.WouldWait:
            code = None
            measured.tried_inline("deferred")
            raise
        except Exception as exc:  # never let a failure escape as UNKNOWN
            code = _code_of(exc)
            _fail(method, context, exc)
        finally:
            if code is not None:
                if attempt:
                    measured.started()
                    measured.tried_inline("answered")
                seconds = time.monotonic() - started
                measured.finished(code, seconds)
                log.debug("%s took %.1f ms", method, seconds * 1000)

    return handle


def _streaming(method: str, fn: Callable[[Any, grpc.ServicerContext], Iterator[Any]]) -> Callable[..., Any]:
    measured = telemetry.GrpcMethod("server_stream", method)

    def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        started = time.monotonic()
        measured.started()
        code = grpc.StatusCode.OK
        try:
            yield from fn(request, context)
        except GeneratorExit:  # the client went away, or the server is stopping
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            code = _code_of(exc)
            _fail(method, context, exc)
        finally:
            seconds = time.monotonic() - started
            measured.finished(code, seconds)
            log.debug("%s streamed for %.1f ms (%s)", method, seconds * 1000, code.name)

    return handle


def _unimplemented(method: str, grpc_type: str, reason: str) -> Callable[..., Any]:
    measured = telemetry.GrpcMethod(grpc_type, method)
    message = f"{method.rpartition('/')[2]} is not implemented by dockershim-py: {reason}"

    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        measured.started()
        measured.finished(grpc.StatusCode.UNIMPLEMENTED, 0.0)
        context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

    return handle


def method_handlers(adapter: Adapter, api_version: str) -> dict[str, grpc.RpcMethodHandler]:
    service = api_pb2.DESCRIPTOR.services_by_name[adapter.SERVICE]
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        if api_version == "v1alpha2" and method.name not in V1ALPHA2_METHODS:
            continue
        request_type = getattr(api_pb2, method.input_type.name)
        response_type = getattr(api_pb2, method.output_type.name)
        full_name = f"runtime.{api_version}.{adapter.SERVICE}/{method.name}"
        implementation = getattr(adapter, method.name, None)
        if implementation is not None and method.name == "Version":
            implementation = functools.partial(implementation, api_version=api_version)
        if implementation is None:
            behaviour = _unimplemented(full_name, "server_stream" if method.server_streaming else "unary",
                                       adapter.UNIMPLEMENTED.get(method.name, "not supported"))
        elif method.server_streaming:
            behaviour = _streaming(full_name, implementation)
        else:
            behaviour = _unary(full_name, implementation)
        make = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        serializer = response_type.SerializeToString
        if method.name in adapter.REPEATED_RESPONSES:
            serializer = LastSerialized(serializer)
        handlers[method.name] = make(behaviour, request_deserializer=request_type.FromString,
                                     response_serializer=serializer)
    return handlers


def generic_handlers(adapters: list[Adapter]) -> list[grpc.GenericRpcHandler]:
    return [
        grpc.method_handlers_generic_handler(f"runtime.{version}.{adapter.SERVICE}", method_handlers(adapter, version))
        for adapter in adapters
        for version in API_VERSIONS
    ]


def method_table(adapters: list[Adapter]) -> dict[str, grpc.RpcMethodHandler]:
    """Every served method by its HTTP/2 path, "/runtime.v1.RuntimeService/Version"."""
    return {
        _path(adapter, version, name): handler
        for adapter in adapters
        for version in API_VERSIONS
        for name, handler in method_handlers(adapter, version).items()
    }


def inline_paths(adapters: list[Adapter]) -> frozenset[str]:
    """The HTTP/2 paths of the methods the adapters let try on the connection's thread."""
    return frozenset(
        _path(adapter, version, name) for adapter in adapters for version in API_VERSIONS for name in adapter.INLINE
    )


# Calls that may last as long as their caller lets them (a probe's timeout, a pull, an event
# stream): they get workers of their own, so that many of them at once never hold up the rest.
LONG_METHODS = frozenset({"ExecSync", "PullImage", "GetContainerEvents"})
# Calls that wait out a grace period (and Docker's stop goes on if the caller gives up): pools
# of their own too, many threads deep, so that a drain never holds up Status or the probes.
STOP_METHODS = frozenset({"StopContainer", "StopPodSandbox"})


def long_paths(adapters: list[Adapter]) -> frozenset[str]:
    """The HTTP/2 paths of LONG_METHODS the adapters serve."""
    return _paths_of(adapters, LONG_METHODS)


def stop_paths(adapters: list[Adapter]) -> frozenset[str]:
    """The HTTP/2 paths of STOP_METHODS the adapters serve."""
    return _paths_of(adapters, STOP_METHODS)


def _paths_of(adapters: list[Adapter], methods: frozenset[str]) -> frozenset[str]:
    return frozenset(path for path in method_table(adapters) if path.rsplit("/", 1)[1] in methods)


def _path(adapter: Adapter, api_version: str, method: str) -> str:
    return f"/runtime.{api_version}.{adapter.SERVICE}/{method}"
