"""The event-fed index: lists equal Docker's truth after every step, whoever made the change,
and GetContainerEvents tells each subscriber about every lifecycle change."""

from __future__ import annotations

import queue
import threading
import time

import docker
import grpc
import pytest

from conftest import BUSYBOX, DOCKER_SOCKET, PAUSE
from containers_fixtures import fresh_pod  # noqa: F401  (fixture)
from private_dockerd import private_dockerd  # noqa: F401  (fixture)
from dockershim_py.api import api_pb2 as api
from dockershim_py.events import IndexedDockerClient, listing_of_entry, listing_of_inspect

CONTAINERS = {"label": ["io.kubernetes.docker.type=container"]}
SANDBOXES = {"label": ["io.kubernetes.docker.type=podsandbox"]}


def docker_truth(docker_api: docker.APIClient, namespace: str) -> tuple[dict, dict]:
    """(containers, sandboxes) of one pod namespace as Docker has them: id -> CRI state."""
    def states(filters: dict, running_state: int, other_state: int) -> dict:
        entries = docker_api.containers(all=True, filters={**filters, "name": f"_{namespace}_"})
        return {e["Id"]: running_state if e["State"] == "running" else
                (api.CONTAINER_CREATED if e["State"] == "created" and other_state == api.CONTAINER_EXITED
                 else other_state) for e in entries}
    return (states(CONTAINERS, api.CONTAINER_RUNNING, api.CONTAINER_EXITED),
            states(SANDBOXES, api.SANDBOX_READY, api.SANDBOX_NOTREADY))


def assert_lists_match(runtime, docker_api: docker.APIClient, namespace: str, pod_id: str) -> None:
    """The shim's lists equal Docker's truth; changes behind its back show within a second."""
    deadline = time.monotonic() + 2.0
    while True:
        truth_containers, truth_sandboxes = docker_truth(docker_api, namespace)
        listed = runtime.ListContainers(
            api.ListContainersRequest(filter=api.ContainerFilter(pod_sandbox_id=pod_id)), timeout=30).containers
        seen_containers = {c.id: c.state for c in listed}
        sandboxes = runtime.ListPodSandbox(api.ListPodSandboxRequest(), timeout=30).items
        seen_sandboxes = {s.id: s.state for s in sandboxes if s.metadata.namespace == namespace}
        if seen_containers == truth_containers and seen_sandboxes == truth_sandboxes:
            return
        if time.monotonic() > deadline:
            assert seen_containers == truth_containers
            assert seen_sandboxes == truth_sandboxes
        time.sleep(0.05)


def test_lists_follow_changes_made_by_the_shim_and_behind_its_back(fresh_pod, docker_api) -> None:
    pod = fresh_pod
    check = lambda: assert_lists_match(pod.runtime, docker_api, pod.namespace, pod.id)  # noqa: E731
    check()
    first = pod.run("first")
    check()
    second = pod.create(pod.container_config("second"))
    check()
    # Behind the shim's back: a container with the shim's own labels, made and started by Docker.
    labels = docker_api.inspect_container(first)["Config"]["Labels"]
    labels = {**labels, "io.kubernetes.container.name": "intruder"}
    intruder = docker_api.create_container(
        BUSYBOX, command=["sleep", "3600"], labels=labels,
        name=f"k8s_intruder_pod_{pod.namespace}_uid-{pod.namespace}_0",
        host_config=docker_api.create_host_config(network_mode=f"container:{pod.id}"),
    )["Id"]
    check()
    docker_api.start(intruder)
    check()
    docker_api.kill(first)
    check()
    pod.start(second)
    check()
    docker_api.remove_container(intruder, force=True)
    check()
    pod.runtime.StopContainer(api.StopContainerRequest(container_id=second, timeout=0), timeout=30)
    check()
    pod.remove(second)
    check()
    docker_api.stop(pod.id, timeout=0)
    check()


def test_status_calls_see_changes_at_once(fresh_pod, docker_api) -> None:
    pod = fresh_pod
    container = pod.run("status")
    assert pod.status(container).state == api.CONTAINER_RUNNING
    docker_api.kill(container)
    docker_api.wait(container, timeout=30)
    deadline = time.monotonic() + 2
    while pod.status(container).state != api.CONTAINER_EXITED:
        assert time.monotonic() < deadline, "ContainerStatus kept a stale state"
        time.sleep(0.05)
    assert pod.status(container).exit_code == 137


def _subscribe(runtime) -> tuple[queue.Queue, grpc.Future]:
    events: queue.Queue = queue.Queue()
    call = runtime.GetContainerEvents(api.GetEventsRequest(), timeout=120)

    def read() -> None:
        try:
            for event in call:
                events.put(event)
        except grpc.RpcError:
            pass

    threading.Thread(target=read, daemon=True).start()
    return events, call


def _events_for(events: queue.Queue, container_id: str, count: int, timeout: float = 20) -> list:
    found: list = []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        try:
            event = events.get(timeout=0.2)
        except queue.Empty:
            continue
        if event.container_id == container_id:
            found.append(event)
    return found


def test_get_container_events_reports_the_lifecycle_to_every_subscriber(fresh_pod) -> None:
    """Each step waits for its event: a message describes the pod as it is when the shim hears of it."""
    pod = fresh_pod
    subscribers = [_subscribe(pod.runtime) for _ in range(2)]
    time.sleep(0.5)  # both streams are open

    def heard(container_id: str, count: int) -> list[list]:
        return [_events_for(events, container_id, count) for events, _ in subscribers]

    try:
        container = pod.create(pod.container_config("evented"))
        pod.start(container)
        for created, started in heard(container, 2):
            assert created.container_event_type == api.CONTAINER_CREATED_EVENT
            assert started.container_event_type == api.CONTAINER_STARTED_EVENT
            assert started.pod_sandbox_status.id == pod.id
            assert started.pod_sandbox_status.state == api.SANDBOX_READY
            assert started.created_at >= created.created_at > 0
            own = [status for status in started.containers_statuses if status.id == container]
            assert own and own[0].state == api.CONTAINER_RUNNING
        pod.runtime.StopContainer(api.StopContainerRequest(container_id=container, timeout=0), timeout=30)
        for (stopped,) in heard(container, 1):
            assert stopped.container_event_type == api.CONTAINER_STOPPED_EVENT
            own = [status for status in stopped.containers_statuses if status.id == container]
            assert own and own[0].state == api.CONTAINER_EXITED
        pod.remove(container)
        for (deleted,) in heard(container, 1):
            assert deleted.container_event_type == api.CONTAINER_DELETED_EVENT
            assert container not in {status.id for status in deleted.containers_statuses}
    finally:
        for _, call in subscribers:
            call.cancel()


def test_event_subscribers_are_bounded_so_the_other_calls_keep_workers(start_shim) -> None:
    """Each stream holds a gRPC worker: with every worker held, Status (the node's readiness) waited."""
    shim = start_shim(["--grpc-workers", "4"])  # one subscriber at most
    first = shim.runtime.GetContainerEvents(api.GetEventsRequest(), timeout=60)
    try:
        time.sleep(0.5)  # the first stream is open
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(shim.runtime.GetContainerEvents(api.GetEventsRequest(), timeout=10)))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--grpc-workers" in refused.value.details()
        assert shim.runtime.Status(api.StatusRequest(), timeout=5).status.conditions
    finally:
        first.cancel()


def test_sandbox_lifecycle_events_carry_the_sandbox_status(shim, docker_api) -> None:
    from containers_fixtures import Pod

    events, call = _subscribe(shim.runtime)
    time.sleep(0.5)
    pod = Pod(shim.runtime, docker_api)
    try:
        started = [e for e in _events_for(events, pod.id, 2) if e.container_event_type == api.CONTAINER_STARTED_EVENT]
        assert started and started[0].pod_sandbox_status.metadata.namespace == pod.namespace
        pod.close()
        deleted = [e for e in _events_for(events, pod.id, 2) if e.container_event_type == api.CONTAINER_DELETED_EVENT]
        # Gone, yet its deletion says whose it was: the kubelet skips an event without it.
        assert deleted and deleted[0].pod_sandbox_status.metadata.uid == pod.config.metadata.uid
        assert deleted[0].pod_sandbox_status.state == api.SANDBOX_NOTREADY
    finally:
        call.cancel()
        pod.close()


def test_the_index_is_right_after_a_docker_restart(start_shim, private_dockerd, docker_api) -> None:
    """dockerd restarts without live-restore stop every container: the lists must say so, and a
    GetContainerEvents subscriber hears that the container stopped."""

    daemon = docker.APIClient(base_url=private_dockerd.endpoint, version="1.41", timeout=120)
    for image in (PAUSE, BUSYBOX):  # the private daemon cannot reach the registries: load them
        daemon.load_image(b"".join(docker_api.get_image(image)))
    shim = start_shim(docker_endpoint=private_dockerd.endpoint)
    host_network = api.LinuxPodSandboxConfig(security_context=api.LinuxSandboxSecurityContext(
        namespace_options=api.NamespaceOption(network=api.NODE)))
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="restart", namespace="dspy-restart", uid="uid-restart"),
        linux=host_network,
    )
    sandbox_id = shim.runtime.RunPodSandbox(api.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id
    container_id = shim.runtime.CreateContainer(api.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, sandbox_config=config,
        config=api.ContainerConfig(metadata=api.ContainerMetadata(name="app"), image=api.ImageSpec(image=BUSYBOX),
                                   command=["sleep", "3600"]),
    ), timeout=60).container_id
    shim.runtime.StartContainer(api.StartContainerRequest(container_id=container_id), timeout=60)
    assert_lists_match(shim.runtime, daemon, "dspy-restart", sandbox_id)
    events, call = _subscribe(shim.runtime)
    time.sleep(0.5)  # the stream is open

    private_dockerd.stop()
    private_dockerd.start()
    deadline = time.monotonic() + 20
    while True:
        try:
            shim.runtime.ListContainers(api.ListContainersRequest(), timeout=10)
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline, "the shim did not see dockerd come back"
            time.sleep(0.2)
    assert_lists_match(shim.runtime, daemon, "dspy-restart", sandbox_id)
    status = shim.runtime.ContainerStatus(api.ContainerStatusRequest(container_id=container_id), timeout=10)
    assert status.status.state == api.CONTAINER_EXITED
    heard = [event.container_event_type for event in _events_for(events, container_id, 1)]
    call.cancel()
    assert heard == [api.CONTAINER_STOPPED_EVENT]
    for call, request in ((shim.runtime.StopPodSandbox, api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id)),
                          (shim.runtime.RemovePodSandbox, api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))):
        call(request, timeout=60)
    assert daemon.containers(all=True) == []


def within_2s(condition, message: str) -> None:
    """Docker's events reach the index in milliseconds; two seconds is ample."""
    deadline = time.monotonic() + 2
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def test_a_tag_moved_behind_the_shims_back_shows_in_image_status_and_creates(fresh_pod, images, docker_api) -> None:
    """Image inspects are kept; Docker's tag events must make the next ImageStatus and create see a move."""
    pod = fresh_pod
    repository, tag = "127.0.0.1:5000/dspy/moving", pod.namespace
    reference = f"{repository}:{tag}"
    busybox_id, pause_id = docker_api.inspect_image(BUSYBOX)["Id"], docker_api.inspect_image(PAUSE)["Id"]

    def image_status_id() -> str:
        return images.ImageStatus(api.ImageStatusRequest(image=api.ImageSpec(image=reference)), timeout=30).image.id

    docker_api.tag(BUSYBOX, repository, tag)
    try:
        assert image_status_id() == busybox_id
        first = pod.create(pod.container_config("first", image=api.ImageSpec(image=reference)))
        assert docker_api.inspect_container(first)["Image"] == busybox_id
        docker_api.tag(PAUSE, repository, tag, force=True)
        within_2s(lambda: image_status_id() == pause_id, "ImageStatus kept the image the tag no longer names")
        moved = pod.create(pod.container_config("moved", image=api.ImageSpec(image=reference)))
        assert docker_api.inspect_container(moved)["Image"] == pause_id
        docker_api.remove_image(reference)
        within_2s(lambda: image_status_id() == "", "ImageStatus kept a removed tag")
        with pytest.raises(grpc.RpcError) as error:
            pod.create(pod.container_config("gone", image=api.ImageSpec(image=reference)))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        try:
            docker_api.remove_image(reference)
        except docker.errors.NotFound:
            pass


def test_a_containers_image_name_follows_its_tag_moved_or_removed_behind_the_shims_back(fresh_pod, docker_api) -> None:
    """Docker lists a container's image by the name it was made from while that name still points
    at its image, else by the image's ID: the kept list entry must follow a tag's move and removal."""
    pod = fresh_pod
    repository, tag = "127.0.0.1:5000/dspy/renamed", pod.namespace
    reference = f"{repository}:{tag}"
    docker_api.tag(BUSYBOX, repository, tag)
    busybox_id = docker_api.inspect_image(BUSYBOX)["Id"]

    def listed_image(container_id: str) -> str:
        listed = pod.runtime.ListContainers(
            api.ListContainersRequest(filter=api.ContainerFilter(id=container_id)), timeout=30).containers
        return listed[0].image.image

    def docker_listed_image(container_id: str) -> str:
        return docker_api.containers(all=True, filters={"id": container_id})[0]["Image"]

    try:
        moved = pod.run("moved", image=api.ImageSpec(image=reference))
        assert listed_image(moved) == docker_listed_image(moved) == reference
        docker_api.tag(PAUSE, repository, tag, force=True)  # the name points at another image now
        assert docker_listed_image(moved) == busybox_id
        within_2s(lambda: listed_image(moved) == busybox_id, "ListContainers kept a name that moved to another image")
        docker_api.tag(BUSYBOX, repository, tag, force=True)  # and back
        within_2s(lambda: listed_image(moved) == reference, "ListContainers kept the image ID of a name moved back")
        docker_api.remove_image(reference)
        assert docker_listed_image(moved) == busybox_id
        within_2s(lambda: listed_image(moved) == busybox_id, "ListContainers kept a removed name")
    finally:
        try:
            docker_api.remove_image(reference)
        except docker.errors.NotFound:
            pass


def test_image_status_answers_from_docker_at_once_after_a_change_behind_the_shims_back(images, docker_api) -> None:
    """The index keeps image inspects until Docker's event arrives; ImageStatus must not answer from them."""
    repository, tag = "127.0.0.1:5000/dspy/at-once", f"t{time.time_ns()}"
    reference = f"{repository}:{tag}"

    def image_status_id() -> str:
        return images.ImageStatus(api.ImageStatusRequest(image=api.ImageSpec(image=reference)), timeout=30).image.id

    busybox_id = docker_api.inspect_image(BUSYBOX)["Id"]
    try:
        for _ in range(30):
            docker_api.tag(BUSYBOX, repository, tag)
            assert image_status_id() == busybox_id
            docker_api.remove_image(reference)
            assert image_status_id() == ""
    finally:
        try:
            docker_api.remove_image(reference)
        except docker.errors.NotFound:
            pass


def test_an_inspect_gives_the_listing_docker_shows(fresh_pod, docker_api) -> None:
    """The index re-reads a changed container by inspect: what it keeps must equal Docker's list entry."""
    pod = fresh_pod
    repository, tag = "127.0.0.1:5000/dspy/relisted", pod.namespace
    reference, volume = f"{repository}:{tag}", f"dspy-listing-{pod.namespace}"
    docker_api.tag(BUSYBOX, repository, tag)
    shims = pod.run("app")  # with the shim's mounts and labels
    other = docker_api.create_container(
        reference, command=["sleep", "60"], labels={"a": "b"},
        host_config=docker_api.create_host_config(binds=["/tmp:/h:ro", f"{volume}:/v"]),
    )["Id"]

    def assert_same_listing(container_id: str) -> None:
        entry = docker_api.containers(all=True, filters={"id": container_id})[0]
        inspect = docker_api.inspect_container(container_id)
        try:
            reference_id = docker_api.inspect_image(inspect["Config"]["Image"])["Id"]
        except docker.errors.NotFound:
            reference_id = None
        assert listing_of_inspect(inspect, reference_id) == listing_of_entry(entry)

    try:
        for container_id in (pod.id, shims, other):
            assert_same_listing(container_id)
        docker_api.start(other)
        assert_same_listing(other)
        docker_api.tag(PAUSE, repository, tag, force=True)  # the reference names another image now
        assert_same_listing(other)
        docker_api.remove_image(reference)  # and then none
        assert_same_listing(other)
    finally:
        docker_api.remove_container(other, force=True)
        docker_api.remove_volume(volume)
        try:
            docker_api.remove_image(reference)
        except docker.errors.NotFound:
            pass


def test_the_kept_image_list_follows_tags_removals_and_commits_behind_the_shims_back(images, docker_api) -> None:
    """ListImages is answered from a kept list; every image event, and a commit (an untagged one
    has no image event), must make the next list see the change."""
    reference = f"127.0.0.1:5000/dspy/listed:{time.monotonic_ns()}"

    def listed() -> tuple[set[str], set[str]]:
        found = images.ListImages(api.ListImagesRequest(), timeout=30).images
        return {image.id for image in found}, {tag for image in found for tag in image.repo_tags}

    container = docker_api.create_container(BUSYBOX, command=["true"])["Id"]
    committed = ""
    try:
        assert reference not in listed()[1]
        docker_api.tag(BUSYBOX, *reference.rsplit(":", 1))
        within_2s(lambda: reference in listed()[1], "ListImages kept a list without the new tag")
        docker_api.remove_image(reference)
        within_2s(lambda: reference not in listed()[1], "ListImages kept a removed tag")
        committed = docker_api.commit(container)["Id"]
        within_2s(lambda: committed in listed()[0], "ListImages kept a list without the committed image")
    finally:
        docker_api.remove_container(container, force=True)
        for image in (reference, committed):
            if image:
                try:
                    docker_api.remove_image(image)
                except docker.errors.NotFound:
                    pass


def test_catch_up_reads_the_events_docker_logged_and_returns_at_once(docker_api: docker.APIClient) -> None:
    """What RemovePodSandbox asks before listing a pod's members: Docker's events up to now, not a stream."""
    client = IndexedDockerClient(DOCKER_SOCKET, timeout=10)
    client.resync()
    before = time.time()
    container = docker_api.create_container(BUSYBOX, command=["true"])["Id"]
    try:
        logged = client.past_events(since=before, until=time.time())
        assert [event["Action"] for event in logged if event["Type"] == "container" and event["id"] == container] == [
            "create"]  # (others' containers may be made meanwhile)
        assert container not in {entry["Id"] for entry in client.list_containers({})}  # no stream runs here
        client.catch_up()
        assert container in {entry["Id"] for entry in client.list_containers({})}
    finally:
        docker_api.remove_container(container, force=True)


def test_a_network_connected_behind_the_shims_back_shows_in_the_pod_status(fresh_pod, docker_api) -> None:
    pod = fresh_pod
    before = pod.runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod.id), timeout=30).status
    assert before.network.ip
    network = docker_api.create_network(
        f"{pod.namespace}-net", ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.231.7.0/24")]))
    try:
        # An operator moving the pod to another network: its address on the bridge is gone.
        docker_api.connect_container_to_network(pod.id, network["Id"])
        docker_api.disconnect_container_from_network(pod.id, "bridge")
        deadline = time.monotonic() + 2
        while True:
            status = pod.runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod.id), timeout=30).status
            ips = [status.network.ip] + [extra.ip for extra in status.network.additional_ips]
            if ips == ["10.231.7.2"]:
                break
            assert time.monotonic() < deadline, f"the pod still shows {ips}, not its new address 10.231.7.2"
            time.sleep(0.05)
        listed = pod.runtime.ListPodSandbox(api.ListPodSandboxRequest(
            filter=api.PodSandboxFilter(id=pod.id)), timeout=30).items
        assert [item.state for item in listed] == [api.SANDBOX_READY]
    finally:
        try:
            docker_api.disconnect_container_from_network(pod.id, network["Id"], force=True)
        except docker.errors.APIError:
            pass
        docker_api.remove_network(network["Id"])
