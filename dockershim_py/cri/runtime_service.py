"""CRI RuntimeService RPCs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

import grpc
from google.protobuf.message import Message

from ..api import api_pb2 as api
from ..errors import CRIError, invalid_argument
from ..events import ContainerEvents
from ..runtime import RuntimeInfo
from ..container import ContainerService
from ..exec import ExecService
from ..sandbox import SandboxService
from ..stats import StatsService
from ..streaming.server import StreamingServer
from .handlers import Adapter
from .list_streams import batches

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Response = TypeVar("Response")


def nul_byte_field(message: Message, path: str = "") -> str | None:
    """The first string or bytes field (or map key or value) holding a NUL byte, as a dotted path;
    None when none does.

    No path, argument, variable or label Docker or the kernel takes can hold one, and Python's
    file calls raise ValueError, not OSError, on it.
    """
    for field, value in message.ListFields():
        name = f"{path}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if "\0" in key or (isinstance(item, str) and "\0" in item):
                    return f"{name}[{key!r}]"
                if isinstance(item, Message) and (found := nul_byte_field(item, f"{name}[{key!r}].")):
                    return found
        elif field.type in (field.TYPE_STRING, field.TYPE_BYTES):  # bytes: an env value
            for position, item in enumerate(value if field.is_repeated else [value]):
                if ("\0" if isinstance(item, str) else b"\0") in item:
                    return f"{name}[{position}]" if field.is_repeated else name
        elif field.type == field.TYPE_MESSAGE:
            for position, item in enumerate(value if field.is_repeated else [value]):
                prefix = f"{name}[{position}]." if field.is_repeated else f"{name}."
                if found := nul_byte_field(item, prefix):
                    return found
    return None


def refuse_nul_bytes(request: Message) -> None:
    if (field := nul_byte_field(request)) is not None:
        raise invalid_argument(f"{field} holds a NUL byte")


def filter_of(request: Message) -> Message | None:
    """The request's filter, or None when it sets nothing.

    The kubelet's relist sends an empty ContainerFilter for "all containers", and only an
    unfiltered list may prune the services' caches of what Docker no longer has.
    """
    request_filter = request.filter  # type: ignore[attr-defined]
    return request_filter if request.HasField("filter") and request_filter.ByteSize() else None


class RepeatedList(Generic[Item, Response]):
    """The last list answer (a response, or a stream's responses), handed out again while it holds
    the very same messages.

    Building a response copies every message into it (half a millisecond for 220 containers),
    and the kubelet's relist every second mostly lists what it listed a second before: the
    services keep converted messages while a container is unchanged, so an unchanged list is
    the same objects in the same order. Callers must not modify the response.
    """

    def __init__(self, make: Callable[[Sequence[Item]], Response]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._last: tuple[Sequence[Item], Response] | None = None

    def response(self, items: Sequence[Item]) -> Response:
        with self._lock:
            last = self._last
        if last is not None and len(last[0]) == len(items) and all(a is b for a, b in zip(last[0], items)):
            return last[1]
        made = self._make(items)
        with self._lock:
            self._last = (items, made)
        return made


class RuntimeServiceAdapter(Adapter):
    SERVICE = "RuntimeService"
    UNIMPLEMENTED = {
        "UpdatePodSandboxResources": "Docker cannot change the pod-level cgroup of a running pause container; "
                                     "container resources are updated one by one",
        "CheckpointContainer": "Docker Engine's checkpoint feature is experimental and cannot produce a CRI checkpoint",
    }
    # Through RepeatedList: a kubelet with the CRIListStreaming gate relists through the streams.
    REPEATED_RESPONSES = frozenset({"ListPodSandbox", "ListContainers", "StreamPodSandboxes", "StreamContainers"})
    # Answered from the event-fed index, they need Docker only when it is stale.
    INLINE = frozenset({"ListPodSandbox", "ListContainers", "PodSandboxStatus", "ContainerStatus"})

    def __init__(
        self, runtime: RuntimeInfo, sandboxes: SandboxService, containers: ContainerService, execs: ExecService,
        *, stats: StatsService, streaming: StreamingServer, events: ContainerEvents,
    ) -> None:
        self._runtime = runtime
        self._sandboxes = sandboxes
        self._containers = containers
        self._execs = execs
        self._stats = stats
        self._streaming = streaming
        self._events = events
        self._sandbox_lists: RepeatedList[api.PodSandbox, api.ListPodSandboxResponse] = RepeatedList(
            lambda items: api.ListPodSandboxResponse(items=items))
        self._container_lists: RepeatedList[api.Container, api.ListContainersResponse] = RepeatedList(
            lambda items: api.ListContainersResponse(containers=items))
        self._sandbox_streams: RepeatedList[api.PodSandbox, list[api.StreamPodSandboxesResponse]] = RepeatedList(
            lambda items: [api.StreamPodSandboxesResponse(pod_sandboxes=batch) for batch in batches(items)])
        self._container_streams: RepeatedList[api.Container, list[api.StreamContainersResponse]] = RepeatedList(
            lambda items: [api.StreamContainersResponse(containers=batch) for batch in batches(items)])

    def Version(self, request: api.VersionRequest, context: grpc.ServicerContext, api_version: str) -> api.VersionResponse:
        return self._runtime.version(api_version)

    def Status(self, request: api.StatusRequest, context: grpc.ServicerContext) -> api.StatusResponse:
        return self._runtime.status(request.verbose)

    def RuntimeConfig(self, request: api.RuntimeConfigRequest, context: grpc.ServicerContext) -> api.RuntimeConfigResponse:
        return self._runtime.runtime_config()

    def UpdateRuntimeConfig(
        self, request: api.UpdateRuntimeConfigRequest, context: grpc.ServicerContext
    ) -> api.UpdateRuntimeConfigResponse:
        self._runtime.update_runtime_config(request.runtime_config)
        return api.UpdateRuntimeConfigResponse()

    # --- pod sandboxes ----------------------------------------------------------------------------

    def RunPodSandbox(self, request: api.RunPodSandboxRequest, context: grpc.ServicerContext) -> api.RunPodSandboxResponse:
        if not request.HasField("config") or not request.config.HasField("metadata"):
            raise invalid_argument("RunPodSandbox needs config.metadata (name, namespace, uid, attempt)")
        refuse_nul_bytes(request)
        sandbox_id = self._sandboxes.run(request.config, request.runtime_handler, context.add_callback)
        return api.RunPodSandboxResponse(pod_sandbox_id=sandbox_id)

    def StopPodSandbox(self, request: api.StopPodSandboxRequest, context: grpc.ServicerContext) -> api.StopPodSandboxResponse:
        self._sandboxes.stop(request.pod_sandbox_id)
        return api.StopPodSandboxResponse()

    def RemovePodSandbox(
        self, request: api.RemovePodSandboxRequest, context: grpc.ServicerContext
    ) -> api.RemovePodSandboxResponse:
        self._sandboxes.remove(request.pod_sandbox_id)
        return api.RemovePodSandboxResponse()

    def PodSandboxStatus(
        self, request: api.PodSandboxStatusRequest, context: grpc.ServicerContext
    ) -> api.PodSandboxStatusResponse:
        timestamp = time.time_ns()  # before the reads: an event after them is newer than this answer
        status, info = self._sandboxes.status(request.pod_sandbox_id, request.verbose)
        # With a timestamp, a kubelet with EventedPLEG takes the pod's containers from this answer
        # alone (as containerd gives them): without them it made the pod's containers again and again.
        try:
            statuses = self._containers.statuses_of_pod(status.id)
        except CRIError as exc:  # no timestamp then: the kubelet asks for each container itself
            log.info("PodSandboxStatus %s without its containers' statuses: %s", status.id[:12], exc.message)
            return api.PodSandboxStatusResponse(status=status, info=info)
        return api.PodSandboxStatusResponse(status=status, info=info, timestamp=timestamp,
                                            containers_statuses=statuses)

    def ListPodSandbox(self, request: api.ListPodSandboxRequest, context: grpc.ServicerContext) -> api.ListPodSandboxResponse:
        sandbox_filter = filter_of(request)
        return self._sandbox_lists.response(self._sandboxes.list_sandboxes(sandbox_filter))

    def StreamPodSandboxes(
        self, request: api.StreamPodSandboxesRequest, context: grpc.ServicerContext
    ) -> Iterator[api.StreamPodSandboxesResponse]:
        sandbox_filter = filter_of(request)
        yield from self._sandbox_streams.response(self._sandboxes.list_sandboxes(sandbox_filter))

    # --- containers -------------------------------------------------------------------------------

    def CreateContainer(
        self, request: api.CreateContainerRequest, context: grpc.ServicerContext
    ) -> api.CreateContainerResponse:
        if not request.config.HasField("metadata") or not request.sandbox_config.HasField("metadata"):
            raise invalid_argument("CreateContainer needs config.metadata and sandbox_config.metadata")
        refuse_nul_bytes(request)
        container_id = self._containers.create(request.pod_sandbox_id, request.config, request.sandbox_config)
        return api.CreateContainerResponse(container_id=container_id)

    def StartContainer(self, request: api.StartContainerRequest, context: grpc.ServicerContext) -> api.StartContainerResponse:
        self._containers.start(request.container_id)
        return api.StartContainerResponse()

    def StopContainer(self, request: api.StopContainerRequest, context: grpc.ServicerContext) -> api.StopContainerResponse:
        self._containers.stop(request.container_id, request.timeout)
        return api.StopContainerResponse()

    def RemoveContainer(
        self, request: api.RemoveContainerRequest, context: grpc.ServicerContext
    ) -> api.RemoveContainerResponse:
        self._containers.remove(request.container_id)
        return api.RemoveContainerResponse()

    def ListContainers(self, request: api.ListContainersRequest, context: grpc.ServicerContext) -> api.ListContainersResponse:
        container_filter = filter_of(request)
        return self._container_lists.response(self._containers.list_containers(container_filter))

    def StreamContainers(
        self, request: api.StreamContainersRequest, context: grpc.ServicerContext
    ) -> Iterator[api.StreamContainersResponse]:
        container_filter = filter_of(request)
        yield from self._container_streams.response(self._containers.list_containers(container_filter))

    def ContainerStatus(
        self, request: api.ContainerStatusRequest, context: grpc.ServicerContext
    ) -> api.ContainerStatusResponse:
        status, info = self._containers.status(request.container_id, request.verbose)
        return api.ContainerStatusResponse(status=status, info=info)

    def UpdateContainerResources(
        self, request: api.UpdateContainerResourcesRequest, context: grpc.ServicerContext
    ) -> api.UpdateContainerResourcesResponse:
        self._containers.update_resources(request.container_id, request.linux)
        return api.UpdateContainerResourcesResponse()

    def ReopenContainerLog(
        self, request: api.ReopenContainerLogRequest, context: grpc.ServicerContext
    ) -> api.ReopenContainerLogResponse:
        self._containers.reopen_log(request.container_id)
        return api.ReopenContainerLogResponse()

    def ExecSync(self, request: api.ExecSyncRequest, context: grpc.ServicerContext) -> api.ExecSyncResponse:
        timeout = float(request.timeout)
        remaining = context.time_remaining()
        if remaining is not None and (not timeout or remaining < timeout):
            timeout = max(remaining, 0.001)  # the caller's deadline is a timeout too: the process is killed
        stdout, stderr, exit_code = self._execs.exec_sync(request.container_id, list(request.cmd), timeout,
                                                          context.add_callback)
        return api.ExecSyncResponse(stdout=stdout, stderr=stderr, exit_code=exit_code)

    # --- streaming: URLs of the streaming server ----------------------------------------------------

    def Exec(self, request: api.ExecRequest, context: grpc.ServicerContext) -> api.ExecResponse:
        return api.ExecResponse(url=self._streaming.get_exec(request))

    def Attach(self, request: api.AttachRequest, context: grpc.ServicerContext) -> api.AttachResponse:
        return api.AttachResponse(url=self._streaming.get_attach(request))

    def PortForward(self, request: api.PortForwardRequest, context: grpc.ServicerContext) -> api.PortForwardResponse:
        return api.PortForwardResponse(url=self._streaming.get_port_forward(request))

    # --- stats ------------------------------------------------------------------------------------

    def ContainerStats(self, request: api.ContainerStatsRequest, context: grpc.ServicerContext) -> api.ContainerStatsResponse:
        return api.ContainerStatsResponse(stats=self._stats.container_stats(request.container_id))

    def ListContainerStats(
        self, request: api.ListContainerStatsRequest, context: grpc.ServicerContext
    ) -> api.ListContainerStatsResponse:
        stats_filter = filter_of(request)
        return api.ListContainerStatsResponse(stats=self._stats.list_container_stats(stats_filter))

    def StreamContainerStats(
        self, request: api.StreamContainerStatsRequest, context: grpc.ServicerContext
    ) -> Iterator[api.StreamContainerStatsResponse]:
        stats_filter = filter_of(request)
        for batch in batches(self._stats.list_container_stats(stats_filter)):
            yield api.StreamContainerStatsResponse(container_stats=batch)

    def PodSandboxStats(
        self, request: api.PodSandboxStatsRequest, context: grpc.ServicerContext
    ) -> api.PodSandboxStatsResponse:
        return api.PodSandboxStatsResponse(stats=self._stats.pod_sandbox_stats(request.pod_sandbox_id))

    def ListPodSandboxStats(
        self, request: api.ListPodSandboxStatsRequest, context: grpc.ServicerContext
    ) -> api.ListPodSandboxStatsResponse:
        stats_filter = filter_of(request)
        return api.ListPodSandboxStatsResponse(stats=self._stats.list_pod_sandbox_stats(stats_filter))

    def StreamPodSandboxStats(
        self, request: api.StreamPodSandboxStatsRequest, context: grpc.ServicerContext
    ) -> Iterator[api.StreamPodSandboxStatsResponse]:
        stats_filter = filter_of(request)
        for batch in batches(self._stats.list_pod_sandbox_stats(stats_filter)):
            yield api.StreamPodSandboxStatsResponse(pod_sandbox_stats=batch)

    def ListMetricDescriptors(
        self, request: api.ListMetricDescriptorsRequest, context: grpc.ServicerContext
    ) -> api.ListMetricDescriptorsResponse:
        return api.ListMetricDescriptorsResponse(descriptors=self._stats.metric_descriptors())

    def ListPodSandboxMetrics(
        self, request: api.ListPodSandboxMetricsRequest, context: grpc.ServicerContext
    ) -> api.ListPodSandboxMetricsResponse:
        return api.ListPodSandboxMetricsResponse(pod_metrics=self._stats.pod_sandbox_metrics())

    def StreamPodSandboxMetrics(
        self, request: api.StreamPodSandboxMetricsRequest, context: grpc.ServicerContext
    ) -> Iterator[api.StreamPodSandboxMetricsResponse]:
        for batch in batches(self._stats.pod_sandbox_metrics()):
            yield api.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=batch)

    # --- events -----------------------------------------------------------------------------------

    def GetContainerEvents(
        self, request: api.GetEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[api.ContainerEventResponse]:
        return self._events.follow(context.add_callback)
