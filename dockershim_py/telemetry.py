"""The shim's own Prometheus metrics, served on --metrics-address: how fast each CRI call is
answered, what the shim asks of Docker, how the event-fed index keeps up, the streaming sessions
open, and the process's CPU and memory.

cri-dockerd serves none, so on a slow node nobody could tell a slow dockerd from a slow shim.
The gRPC families carry go-grpc-prometheus's names and labels, as containerd serves them, so
their dashboards work here. Counting is always on (microseconds a call); only the endpoint waits
for the flag. Not to be confused with metrics.py: the containers' own figures for the kubelet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

import grpc
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = logging.getLogger(__name__)

prometheus_client.disable_created_metrics()  # no `_created` twin for every series

REGISTRY = CollectorRegistry()
prometheus_client.ProcessCollector(registry=REGISTRY)
prometheus_client.PlatformCollector(registry=REGISTRY)
prometheus_client.GCCollector(registry=REGISTRY)

# From a relist answered from memory (well under a millisecond) to a pull or a stop's grace period.
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0, 120.0, 300.0)

_GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
GRPC_STARTED = Counter("grpc_server_started", "CRI calls started on the server.", _GRPC_LABELS, registry=REGISTRY)
GRPC_HANDLED = Counter("grpc_server_handled", "CRI calls completed on the server, whatever their status code.",
                       (*_GRPC_LABELS, "grpc_code"), registry=REGISTRY)
GRPC_SECONDS = Histogram("grpc_server_handling_seconds", "Time the server took to answer a CRI call (a server "
                         "stream's whole life).", _GRPC_LABELS, buckets=SECONDS_BUCKETS, registry=REGISTRY)
GRPC_QUEUED_SECONDS = Histogram("dockershim_py_grpc_queued_seconds", "Time a CRI call waited for a free worker "
                                "before it was handled (not in grpc_server_handling_seconds): long waits mean "
                                "--grpc-workers are all busy.", ("pool",), buckets=SECONDS_BUCKETS, registry=REGISTRY)
GRPC_INLINE = Counter("dockershim_py_grpc_inline_attempts", "Read-only CRI calls tried on the connection's "
                      "thread: answered there, or handed to a worker (deferred) at the first thing that would "
                      "wait, such as a Docker request.", ("grpc_service", "grpc_method", "outcome"), registry=REGISTRY)

DOCKER_REQUESTS = Counter("dockershim_py_docker_requests", "Docker Engine API requests, by operation and outcome "
                          "(OK, or the gRPC code the failure became: NotFound, Unavailable, ...).", ("operation", "code"), registry=REGISTRY)
DOCKER_SECONDS = Histogram("dockershim_py_docker_request_duration_seconds", "Time a Docker Engine API request "
                           "took, retries included.", ("operation",), buckets=SECONDS_BUCKETS, registry=REGISTRY)

INDEX_RESYNCS = Counter("dockershim_py_index_resyncs", "Full lists of Docker's containers into the event-fed "
                        "index: at start, after the event stream came back, and the periodic safety net.",
                        ("reason",), registry=REGISTRY)
INDEX_FRESH = Gauge("dockershim_py_index_fresh", "1 while lists and statuses are answered from the event-fed "
                    "index; 0 while the event stream is down and they go to Docker.", registry=REGISTRY)

STREAMING_SESSIONS = Gauge("dockershim_py_streaming_sessions", "Exec, attach and port-forward sessions open now.",
                           ("kind",), registry=REGISTRY)
STREAMING_SESSIONS_STARTED = Counter("dockershim_py_streaming_sessions_started", "Exec, attach and port-forward "
                                     "sessions begun, by transport (spdy or websocket).", ("kind", "transport"),
                                     registry=REGISTRY)

# grpc-go's names of the codes, as go-grpc-prometheus writes them ("NotFound"), where they differ
# from the capitalised Python name: Go spells CANCELLED with one L.
_GO_CODE_NAMES = {grpc.StatusCode.OK: "OK", grpc.StatusCode.CANCELLED: "Canceled"}


def go_code_name(code: grpc.StatusCode) -> str:
    return _GO_CODE_NAMES.get(code) or "".join(part.capitalize() for part in code.name.split("_"))


class GrpcMethod:
    """One served method's series, looked up once rather than on every call."""

    def __init__(self, grpc_type: str, full_name: str) -> None:
        service, _, method = full_name.lstrip("/").rpartition("/")
        self._labels = (grpc_type, service, method)
        self._started = GRPC_STARTED.labels(*self._labels)
        self._seconds = GRPC_SECONDS.labels(*self._labels)
        self._handled: dict[grpc.StatusCode, Counter] = {}
        self._inline: dict[str, Counter] = {}

    def started(self) -> None:
        self._started.inc()

    def tried_inline(self, outcome: str) -> None:
        """`outcome`: answered, or deferred to a worker."""
        counter = self._inline.get(outcome)
        if counter is None:
            counter = self._inline[outcome] = GRPC_INLINE.labels(*self._labels[1:], outcome)
        counter.inc()

    def finished(self, code: grpc.StatusCode, seconds: float) -> None:
        handled = self._handled.get(code)
        if handled is None:
            handled = self._handled[code] = GRPC_HANDLED.labels(*self._labels, go_code_name(code))
        handled.inc()
        self._seconds.observe(seconds)


class DockerOperation:
    """One kind of Docker request's series."""

    def __init__(self, operation: str) -> None:
        self._operation = operation
        self._seconds = DOCKER_SECONDS.labels(operation)
        self._requests: dict[grpc.StatusCode, Counter] = {}

    def finished(self, code: grpc.StatusCode, seconds: float) -> None:
        requests = self._requests.get(code)
        if requests is None:
            requests = self._requests[code] = DOCKER_REQUESTS.labels(self._operation, go_code_name(code))
        requests.inc()
        self._seconds.observe(seconds)


def watch_index(fresh: Callable[[], bool]) -> None:
    """dockershim_py_index_fresh as the index says at each scrape."""
    INDEX_FRESH.set_function(lambda: 1.0 if fresh() else 0.0)


class MetricsServer:
    """The /metrics endpoint (any path answers the same), on a thread of its own."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._server: WSGIServer | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one picked, for port 0)."""
        return self._server.server_port if self._server is not None else self._port

    def start(self) -> None:
        """Raises OSError when the address cannot be bound."""
        self._server, _ = prometheus_client.start_http_server(self._port, self._host, registry=REGISTRY)
        log.info("metrics on http://%s/metrics", f"[{self._host}]:{self.port}" if ":" in self._host
                 else f"{self._host}:{self.port}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
