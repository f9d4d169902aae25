"""The streaming lists (KEP-5825) through a real gRPC client: the unary list's items, split so that a
list larger than the client's receive limit still arrives."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import docker
import grpc
import pytest

from conftest import BUSYBOX, Shim
from containers_fixtures import Pod, pod  # noqa: F401  (fixture)
from dockershim_py.api import api_pb2 as api
from dockershim_py.api import api_pb2_grpc
from dockershim_py.cri.list_streams import MESSAGE_BUDGET_BYTES

# Containers whose annotation makes each about 400 KB in a list: six of them are 2.4 MB.
BIG_ANNOTATION = {"dspy.example/big": "x" * (400 << 10)}
BIG_CONTAINERS = 6
SMALL_RECEIVE_LIMIT = 2 << 20


def by_id(items) -> list[tuple[str, bytes]]:
    """Each item, as (ID, bytes) in ID order: a duplicate shows as one more entry."""
    return sorted((item.id, item.SerializeToString(deterministic=True)) for item in items)


def streamed(call, request, **kwargs) -> list:
    return list(call(request, timeout=60, **kwargs))


def test_streamed_sandboxes_and_containers_equal_the_unary_lists(runtime, pod: Pod) -> None:
    running = pod.run("running", labels={"dspy-test": pod.namespace})
    exited = pod.run("exited", ["true"])
    pod.exited(exited)
    cases = [
        (None, None),
        (api.ContainerFilter(pod_sandbox_id=pod.id), api.PodSandboxFilter(id=pod.id)),
        (api.ContainerFilter(state=api.ContainerStateValue(state=api.CONTAINER_RUNNING)),
         api.PodSandboxFilter(state=api.PodSandboxStateValue(state=api.SANDBOX_READY))),
        (api.ContainerFilter(id=running[:12]), api.PodSandboxFilter(id=pod.id[:12])),
        (api.ContainerFilter(label_selector={"dspy-test": pod.namespace}),
         api.PodSandboxFilter(label_selector={"dspy-test": "none-has-it"})),
    ]
    for container_filter, sandbox_filter in cases:
        containers = runtime.ListContainers(api.ListContainersRequest(filter=container_filter), timeout=30).containers
        assert containers, container_filter
        messages = streamed(runtime.StreamContainers, api.StreamContainersRequest(filter=container_filter))
        assert by_id(item for message in messages for item in message.containers) == by_id(containers)
        sandboxes = runtime.ListPodSandbox(api.ListPodSandboxRequest(filter=sandbox_filter), timeout=30).items
        messages = streamed(runtime.StreamPodSandboxes, api.StreamPodSandboxesRequest(filter=sandbox_filter))
        assert by_id(item for message in messages for item in message.pod_sandboxes) == by_id(sandboxes)
    mine = api.ContainerFilter(pod_sandbox_id=pod.id)
    listed = streamed(runtime.StreamContainers, api.StreamContainersRequest(filter=mine))
    assert {item.id for message in listed for item in message.containers} == {running, exited}


def test_streamed_stats_and_metrics_name_what_the_unary_lists_name(runtime, pod: Pod) -> None:
    running = pod.run("measured")
    for stats_filter in (None, api.ContainerStatsFilter(pod_sandbox_id=pod.id), api.ContainerStatsFilter(id=running)):
        unary = runtime.ListContainerStats(api.ListContainerStatsRequest(filter=stats_filter), timeout=30).stats
        messages = streamed(runtime.StreamContainerStats, api.StreamContainerStatsRequest(filter=stats_filter))
        assert sorted(s.attributes.id for m in messages for s in m.container_stats) == sorted(s.attributes.id for s in unary)
    assert running in {s.attributes.id for m in messages for s in m.container_stats}
    for sandbox_filter in (None, api.PodSandboxStatsFilter(id=pod.id)):
        unary_pods = runtime.ListPodSandboxStats(api.ListPodSandboxStatsRequest(filter=sandbox_filter), timeout=30).stats
        messages = streamed(runtime.StreamPodSandboxStats, api.StreamPodSandboxStatsRequest(filter=sandbox_filter))
        pods = [s for m in messages for s in m.pod_sandbox_stats]
        assert sorted(s.attributes.id for s in pods) == sorted(s.attributes.id for s in unary_pods)
    [mine] = [s for s in pods if s.attributes.id == pod.id]
    assert running in {c.attributes.id for c in mine.linux.containers}
    assert mine.linux.cpu.usage_core_nano_seconds.value > 0
    unary_metrics = runtime.ListPodSandboxMetrics(api.ListPodSandboxMetricsRequest(), timeout=30).pod_metrics
    messages = streamed(runtime.StreamPodSandboxMetrics, api.StreamPodSandboxMetricsRequest())
    metrics = [m for message in messages for m in message.pod_sandbox_metrics]
    assert sorted(m.pod_sandbox_id for m in metrics) == sorted(m.pod_sandbox_id for m in unary_metrics)
    assert pod.id in {m.pod_sandbox_id for m in metrics}


def test_streamed_images_equal_list_images(images) -> None:
    for image_filter in (None, api.ImageFilter(image=api.ImageSpec(image=BUSYBOX))):
        unary = images.ListImages(api.ListImagesRequest(filter=image_filter), timeout=30).images
        messages = streamed(images.StreamImages, api.StreamImagesRequest(filter=image_filter))
        assert by_id(image for message in messages for image in message.images) == by_id(unary)
        assert unary


def test_nothing_matching_ends_the_stream_with_no_message(runtime, images) -> None:
    absent = "f" * 64
    assert streamed(runtime.StreamContainers, api.StreamContainersRequest(filter=api.ContainerFilter(id=absent))) == []
    assert streamed(runtime.StreamPodSandboxes,
                    api.StreamPodSandboxesRequest(filter=api.PodSandboxFilter(id=absent))) == []
    assert streamed(runtime.StreamContainerStats,
                    api.StreamContainerStatsRequest(filter=api.ContainerStatsFilter(id=absent))) == []
    assert streamed(runtime.StreamPodSandboxStats,
                    api.StreamPodSandboxStatsRequest(filter=api.PodSandboxStatsFilter(id=absent))) == []
    no_such = api.ImageFilter(image=api.ImageSpec(image="127.0.0.1:5000/dspy/no-such-image:1"))
    assert streamed(images.StreamImages, api.StreamImagesRequest(filter=no_such)) == []


@pytest.fixture
def big_pod(shim: Shim, docker_api: docker.APIClient) -> Iterator[tuple[Pod, list[str]]]:
    made = Pod(shim.runtime, docker_api)
    ids = [made.run(f"big{index}", annotations=BIG_ANNOTATION) for index in range(BIG_CONTAINERS)]
    yield made, ids
    made.close()


@pytest.mark.parametrize("transport", ["http2", "grpcio"])
def test_a_list_over_the_clients_receive_limit_arrives_as_a_stream(start_shim, big_pod, transport: str) -> None:
    made, ids = big_pod
    shim = start_shim(args=["--grpc-transport", transport])
    channel = grpc.insecure_channel(shim.endpoint, options=[("grpc.max_receive_message_length", SMALL_RECEIVE_LIMIT)])
    runtime = api_pb2_grpc.RuntimeServiceStub(channel)
    try:
        mine = api.ContainerFilter(pod_sandbox_id=made.id)
        with pytest.raises(grpc.RpcError) as unary:
            runtime.ListContainers(api.ListContainersRequest(filter=mine), timeout=30)
        assert unary.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        messages = streamed(runtime.StreamContainers, api.StreamContainersRequest(filter=mine))
        assert len(messages) >= 3
        assert all(0 < message.ByteSize() <= MESSAGE_BUDGET_BYTES for message in messages)
        assert sorted(item.id for message in messages for item in message.containers) == sorted(ids)
        assert all(item.annotations == BIG_ANNOTATION for message in messages for item in message.containers)

        stats_filter = api.ContainerStatsFilter(pod_sandbox_id=made.id)
        with pytest.raises(grpc.RpcError) as unary:
            runtime.ListContainerStats(api.ListContainerStatsRequest(filter=stats_filter), timeout=30)
        assert unary.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        messages = streamed(runtime.StreamContainerStats, api.StreamContainerStatsRequest(filter=stats_filter))
        assert len(messages) >= 3
        assert sorted(s.attributes.id for message in messages for s in message.container_stats) == sorted(ids)
    finally:
        channel.close()


def test_a_client_that_leaves_mid_stream_leaves_the_server_serving(start_shim, big_pod) -> None:
    made, ids = big_pod
    shim = start_shim()
    mine = api.StreamContainersRequest(filter=api.ContainerFilter(pod_sandbox_id=made.id))
    for _ in range(5):
        call = shim.runtime.StreamContainers(mine, timeout=30)
        first = next(call)
        assert first.containers
        call.cancel()
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(
        sum(len(m.containers) for m in shim.runtime.StreamContainers(mine, timeout=60)))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert results == [len(ids)] * 4
    assert shim.runtime.Version(api.VersionRequest(), timeout=10).runtime_name == "docker"
    assert "Traceback" not in shim.log() and " ERROR " not in shim.log()
