"""Request checks of the RuntimeService adapter: list filters (an empty one is no filter, as the
kubelet's relist means it) and strings holding NUL bytes."""

from __future__ import annotations

from dockershim_py.api import api_pb2 as api
import pytest

from dockershim_py.cri.runtime_service import RuntimeServiceAdapter, filter_of, nul_byte_field


class RecordingService:
    """Stands in for the sandbox and container services: records the filter each list was given."""

    def __init__(self) -> None:
        self.filters: list[object] = []

    def list_sandboxes(self, given: object) -> list[object]:
        return self.list_containers(given)

    def list_containers(self, given: object) -> list[object]:
        self.filters.append(given)
        return []


def adapter(service: RecordingService) -> RuntimeServiceAdapter:
    return RuntimeServiceAdapter(None, service, service, None, stats=None, streaming=None, events=None)


def test_an_empty_filter_is_no_filter() -> None:
    assert filter_of(api.ListContainersRequest()) is None
    assert filter_of(api.ListContainersRequest(filter=api.ContainerFilter())) is None
    assert filter_of(api.ListPodSandboxRequest(filter=api.PodSandboxFilter(label_selector={}))) is None
    assert filter_of(api.ListContainerStatsRequest(filter=api.ContainerStatsFilter(id=""))) is None


def test_a_filter_that_sets_anything_is_kept() -> None:
    created = api.ListContainersRequest(filter=api.ContainerFilter(
        state=api.ContainerStateValue(state=api.CONTAINER_CREATED)))  # state 0, still a filter
    assert filter_of(created) is created.filter
    labelled = api.ListPodSandboxRequest(filter=api.PodSandboxFilter(label_selector={"app": "web"}))
    assert filter_of(labelled) is labelled.filter
    by_pod = api.ListContainerStatsRequest(filter=api.ContainerStatsFilter(pod_sandbox_id="abc"))
    assert filter_of(by_pod) is by_pod.filter


def test_the_kubelets_relist_reaches_the_services_unfiltered() -> None:
    """getKubeletContainers sends &ContainerFilter{}: only an unfiltered list prunes the caches."""
    service = RecordingService()
    runtime = adapter(service)
    runtime.ListContainers(api.ListContainersRequest(filter=api.ContainerFilter()), None)
    runtime.ListPodSandbox(api.ListPodSandboxRequest(filter=api.PodSandboxFilter()), None)
    list(runtime.StreamContainers(api.StreamContainersRequest(filter=api.ContainerFilter()), None))
    running = api.ContainerFilter(state=api.ContainerStateValue(state=api.CONTAINER_RUNNING))
    runtime.ListContainers(api.ListContainersRequest(filter=running), None)
    assert service.filters == [None, None, None, running]


@pytest.mark.parametrize("config, path", [
    (api.ContainerConfig(mounts=[api.Mount(host_path="/ok"), api.Mount(host_path="/a\0b")]), "config.mounts[1].host_path"),
    (api.ContainerConfig(log_path="x\0.log"), "config.log_path"),
    (api.ContainerConfig(command=["sh", "-c\0"]), "config.command[1]"),
    (api.ContainerConfig(labels={"app": "we\0b"}), "config.labels['app']"),
    (api.ContainerConfig(envs=[api.KeyValue(key="A", value=b"\0")]), "config.envs[0].value"),
    (api.ContainerConfig(linux=api.LinuxContainerConfig(resources=api.LinuxContainerResources(
        unified={"memory.max": "1\0"}))), "config.linux.resources.unified['memory.max']"),
])
def test_a_nul_byte_anywhere_is_named(config: api.ContainerConfig, path: str) -> None:
    assert nul_byte_field(api.CreateContainerRequest(config=config)) == path


def test_a_request_without_nul_bytes_passes() -> None:
    config = api.ContainerConfig(metadata=api.ContainerMetadata(name="app"), command=["sleep", "1"],
                                 labels={"a": "b"}, mounts=[api.Mount(host_path="/x", container_path="/y")])
    assert nul_byte_field(api.CreateContainerRequest(pod_sandbox_id="abc", config=config)) is None


class PodWithASlowMember:
    def status(self, sandbox_id: str, verbose: bool) -> tuple[api.PodSandboxStatus, dict[str, str]]:
        return api.PodSandboxStatus(id=sandbox_id, state=api.SANDBOX_READY), {}

    def statuses_of_pod(self, sandbox_id: str) -> list[api.ContainerStatus]:
        from dockershim_py.errors import deadline_exceeded
        raise deadline_exceeded("container c1: Docker did not answer in time")


def test_a_pod_status_whose_members_cannot_all_be_read_comes_without_a_timestamp() -> None:
    """A timestamp tells an EventedPLEG kubelet the containers are all there: it would make the
    missing one again. Without one it asks for each container itself."""
    service = PodWithASlowMember()
    reply = RuntimeServiceAdapter(None, service, service, None, stats=None, streaming=None, events=None) \
        .PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id="s1"), None)
    assert reply.status.id == "s1" and reply.timestamp == 0 and not reply.containers_statuses
