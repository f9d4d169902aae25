"""ContainerService's view of the pod a container joins."""

from __future__ import annotations

from unittest import mock

from dockershim_py import labels
from dockershim_py.container import ContainerService
from dockershim_py.docker_client import DockerClient

SANDBOX_ID = "5" * 64


class DockerWithOneSandbox:
    full_id = DockerClient.full_id
    runtime_name = DockerClient.runtime_name

    def __init__(self, runtime: str, default_runtime: str) -> None:
        self.runtime = runtime
        self.default_runtime = default_runtime

    def inspect_container(self, container_id: str) -> dict:
        return {"Id": SANDBOX_ID, "State": {"Running": True},
                "Config": {"Labels": {labels.CONTAINER_TYPE_LABEL: labels.CONTAINER_TYPE_SANDBOX}},
                "HostConfig": {"NetworkMode": "default", "Runtime": self.runtime}}

    def info(self) -> dict:
        return {"DefaultRuntime": self.default_runtime}


def test_a_pod_without_a_runtime_name_runs_on_dockers_default_where_privileged_needs_to_know() -> None:
    """As for the pause container: a runc wrapper as Docker's default can run Docker's Privileged."""
    for runtime, default, lacking, seen in (("", "critest-runc", {"CAP_SYS_RESOURCE"}, "critest-runc"),
                                            ("", "runc", {"CAP_SYS_RESOURCE"}, "runc"),
                                            ("", "critest-runc", set(), ""),
                                            ("runc", "critest-runc", {"CAP_SYS_RESOURCE"}, "runc")):
        service = ContainerService(DockerWithOneSandbox(runtime, default), mock.Mock(), mock.Mock(),
                                   mock.Mock(root="/nonexistent"))
        service._lacking_capabilities = frozenset(lacking)
        assert service._sandbox(SANDBOX_ID).runtime == seen
