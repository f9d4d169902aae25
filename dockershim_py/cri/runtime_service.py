"""CRI RuntimeService RPCs."""

from __future__ import annotations

import grpc

from ..api import api_pb2 as api
from ..runtime import RuntimeInfo
from .handlers import Adapter

_SANDBOXES = "pod sandboxes are not implemented yet (see the README's roadmap)"
_CONTAINERS = "containers are not implemented yet (see the README's roadmap)"
_STREAMING = "the streaming server is not implemented yet (see the README's roadmap)"
_STATS = "stats are not implemented yet (see the README's roadmap)"
_LIST_STREAMING = "the streaming lists (KEP-5825, alpha) are not served; the kubelet falls back to the unary RPC"


class RuntimeServiceAdapter(Adapter):
    SERVICE = "RuntimeService"
    UNIMPLEMENTED = {
        "RunPodSandbox": _SANDBOXES,
        "StopPodSandbox": _SANDBOXES,
        "RemovePodSandbox": _SANDBOXES,
        "PodSandboxStatus": _SANDBOXES,
        "ListPodSandbox": _SANDBOXES,
        "UpdatePodSandboxResources": _SANDBOXES,
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

    def __init__(self, runtime: RuntimeInfo) -> None:
        self._runtime = runtime

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
