"""ContainerService's view of the pod a container joins."""

from __future__ import annotations

from unittest import mock

import grpc
import pytest

from dockershim_py import labels
from dockershim_py.container import ContainerService
from dockershim_py.docker_client import DockerClient
from dockershim_py.errors import CRIError, failed_precondition
from dockershim_py.image_accounts import ACCOUNT_FILES_LABEL

SANDBOX_ID = "5" * 64
CONTAINER_ID = "c" * 64


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


class DockerWhosePodStopped:
    """A created container whose start Docker refuses with a 400, its pod's pause container gone."""

    full_id = DockerClient.full_id

    def inspect_container(self, container_id: str) -> dict:
        if container_id == SANDBOX_ID:
            return {"Id": SANDBOX_ID, "State": {"Running": False, "Status": "exited"}}
        return {"Id": CONTAINER_ID, "State": {"Status": "created"},
                "Config": {"Labels": {labels.CONTAINER_TYPE_LABEL: labels.CONTAINER_TYPE_CONTAINER,
                                      labels.SANDBOX_ID_LABEL: SANDBOX_ID}}}

    def start_container(self, container_id: str) -> None:
        raise failed_precondition("start container: joining namespace path: lstat "  # DockerClient's, of a 400
                                  "/proc/4242/ns/ipc: no such file or directory")


def test_a_start_refused_because_the_pod_stopped_meanwhile_says_so() -> None:
    """Docker's 400 in the moment a pod stops is not the caller's bad input."""
    service = ContainerService(DockerWhosePodStopped(), mock.Mock(), mock.Mock(), mock.Mock(root="/nonexistent"))
    with pytest.raises(CRIError) as refused:
        service.start(CONTAINER_ID)
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"pod sandbox {SANDBOX_ID} is not running" in refused.value.message


def test_recovery_takes_the_helpers_a_crash_left_not_those_made_since() -> None:
    """Recovery runs while calls are served: it removed a concurrent CreateContainer's helper."""
    removed: list[str] = []
    service = ContainerService(mock.Mock(), mock.Mock(), mock.Mock(), mock.Mock(root="/nonexistent"))
    helper = labels.helper_labels(ACCOUNT_FILES_LABEL)
    service._docker.list_containers.side_effect = lambda filters: [
        {"Id": "old", "Labels": helper, "Created": service._started_at - 5},
        {"Id": "new", "Labels": helper, "Created": service._started_at + 1},
    ] if filters == {"label": [f"{ACCOUNT_FILES_LABEL}=true"]} else []
    service._docker.remove_container.side_effect = lambda container_id, force: removed.append(container_id)
    service._remove_leftover_helpers()
    assert removed == ["old"]
