"""Container ID prefixes (crictl's) resolve among containers only, as ListContainers takes them."""

from __future__ import annotations

from unittest import mock

import grpc
import pytest

from dockershim_py import labels
from dockershim_py.container import ContainerService
from dockershim_py.docker_client import DockerClient
from dockershim_py.errors import CRIError
from dockershim_py.exec import ExecService
from dockershim_py.streaming.runtime import StreamingRuntime

PAUSE_ID = "d3" + "a" * 62
CONTAINER_ID = "d3" + "b" * 62
OTHER_ID = "d3b" + "c" * 61


class DockerWithSharedPrefixes:
    """Docker's own prefix rule: inspect matches every container, pause ones included."""

    def __init__(self, container_ids: list[str]) -> None:
        self.types = {PAUSE_ID: labels.CONTAINER_TYPE_SANDBOX,
                      **{container_id: labels.CONTAINER_TYPE_CONTAINER for container_id in container_ids}}

    def inspect_container(self, container_id: str) -> dict:
        found = [known for known in self.types if known.startswith(container_id)]
        if len(found) != 1:
            raise CRIError(grpc.StatusCode.UNKNOWN if found else grpc.StatusCode.NOT_FOUND,
                           f"Multiple IDs found with provided prefix: {container_id}" if found else "No such container")
        return {"Id": found[0], "Config": {"Labels": {labels.CONTAINER_TYPE_LABEL: self.types[found[0]]}},
                "State": {"Status": "running", "Running": True}}

    full_id = DockerClient.full_id  # the wrapper's own resolution, over this fake's list

    def list_containers(self, filters: dict) -> list[dict]:
        wanted = filters["label"][0].split("=", 1)[1]
        return [{"Id": known} for known, kind in self.types.items()
                if kind == wanted and any(part in known for part in filters["id"])]


def service(docker: DockerWithSharedPrefixes) -> ContainerService:
    return ContainerService(docker, mock.Mock(), mock.Mock(), mock.Mock(root="/nonexistent"))


def test_a_prefix_shared_with_a_pause_container_names_the_one_container() -> None:
    assert service(DockerWithSharedPrefixes([CONTAINER_ID]))._inspect("d3")["Id"] == CONTAINER_ID


def test_a_prefix_of_two_containers_is_ambiguous_and_a_sandboxs_is_refused_as_one() -> None:
    containers = service(DockerWithSharedPrefixes([CONTAINER_ID, OTHER_ID]))
    with pytest.raises(CRIError) as caught:
        containers._inspect("d3b")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and "ambiguous" in caught.value.message
    assert containers._inspect("d3bb")["Id"] == CONTAINER_ID
    with pytest.raises(CRIError) as caught:
        containers._inspect("d3a")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and "is a pod sandbox" in caught.value.message


def test_exec_and_streaming_take_the_prefix_among_containers_too() -> None:
    docker = DockerWithSharedPrefixes([CONTAINER_ID])
    assert StreamingRuntime(docker).running_container("d3")["Id"] == CONTAINER_ID
    assert StreamingRuntime(docker).running_sandbox("d3")["Id"] == PAUSE_ID
    asked: list[str] = []

    def create_exec(container_id: str, cmd: list[str]) -> str:
        asked.append(container_id)
        raise CRIError(grpc.StatusCode.UNAVAILABLE, "stop here")

    docker.create_exec = create_exec
    with pytest.raises(CRIError):
        ExecService(docker).exec_sync("d3", ["true"], 1)
    assert asked == [CONTAINER_ID]
