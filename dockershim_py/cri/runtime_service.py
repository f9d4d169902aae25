"""CRI RuntimeService RPCs."""

from __future__ import annotations

import time

import grpc

from ..api import api_pb2 as api
from ..errors import invalid_argument
from ..runtime import RuntimeInfo
from ..sandbox import SandboxService
from .handlers import Adapter

_CONTAINERS = "containers are not implemented yet (see the README's roadmap)"
_STREAMING = "the streaming server is not implemented yet (see the README's roadmap)"
_STATS = "stats are not implemented yet (see the README's roadmap)"
_LIST_STREAMING = "the streaming lists (KEP-5825, alpha) are not served; the kubelet falls back to the unary RPC"


class RuntimeServiceAdapter(Adapter):
    SERVICE = "RuntimeService"
    UNIMPLEMENTED = {
        "UpdatePodSandboxResources": "Docker cannot change the pod-level cgroup of a running pause container; "
                                     "container resources are updated one by one",
        "CreateContainer": _CONTAINERS,
        "StartContainer": _CONTAINERS,
        "StopContainer": _CONTAINERS,
        "RemoveContainer": _CONTAINERS,
        "ListContainers": _CONTAINERS,
        "ContainerStatus": _CONTAINERS,
        "UpdateContainerResources": _CONTAINERS,
        "ReopenContainerLog": _CONTAINERS,
        "ExecSync": _CONTAINERS,
        "Exec": _STREAMING,
        "Attach": _STREAMING,
        "PortForward": _STREAMING,
        "ContainerStats": _STATS,
        "ListContainerStats": _STATS,
        "PodSandboxStats": _STATS,
        "ListPodSandboxStats": _STATS,
        "ListMetricDescriptors": _STATS,
        "ListPodSandboxMetrics": _STATS,
        "GetContainerEvents": "the Docker event stream is not wired to CRI events yet; the kubelet relists instead",
        "CheckpointContainer": "Docker Engine's checkpoint feature is experimental and cannot produce a CRI checkpoint",
        "StreamPodSandboxes": _LIST_STREAMING,
        "StreamContainers": _LIST_STREAMING,
        "StreamContainerStats": _LIST_STREAMING,
        "StreamPodSandboxStats": _LIST_STREAMING,
        "StreamPodSandboxMetrics": _LIST_STREAMING,
    }

    def __init__(self, runtime: RuntimeInfo, sandboxes: SandboxService) -> None:
        self._runtime = runtime
        self._sandboxes = sandboxes

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
        status, info = self._sandboxes.status(request.pod_sandbox_id, request.verbose)
        return api.PodSandboxStatusResponse(status=status, info=info, timestamp=time.time_ns())

    def ListPodSandbox(self, request: api.ListPodSandboxRequest, context: grpc.ServicerContext) -> api.ListPodSandboxResponse:
        sandbox_filter = request.filter if request.HasField("filter") else None
        return api.ListPodSandboxResponse(items=self._sandboxes.list(sandbox_filter))
