"""Containers on the real daemon: create, start, list, status, stop, remove; exit codes and reasons."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import docker
import grpc
import pytest

from conftest import BUSYBOX, wait_for
from containers_fixtures import Pod, fresh_pod, pod, rpc_error  # noqa: F401 (fixtures)
from dockershim_py.api import api_pb2 as api

UNKNOWN_ID = "0123456789abcdef" * 4


def test_lifecycle(fresh_pod: Pod, docker_api: docker.APIClient, images) -> None:
    pod = fresh_pod
    config = pod.container_config("app", ["sleep", "3600"], labels={"tier": "web"}, annotations={"note": "hi"},
                                  envs=[api.KeyValue(key="GREETING", value="grüße".encode())], working_dir="/tmp",
                                  stop_signal=api.SIGKILL)
    config.image.user_specified_image = "busybox:1.0"
    before = time.time_ns()
    container_id = pod.create(config)

    # Docker's side: dockershim's name and labels, the sandbox's namespaces, json-file logging.
    inspect = docker_api.inspect_container(container_id)
    assert inspect["Name"] == f"/k8s_app_pod_{pod.namespace}_uid-{pod.namespace}_0"
    docker_labels = inspect["Config"]["Labels"]
    assert docker_labels["io.kubernetes.docker.type"] == "container"
    assert docker_labels["io.kubernetes.sandbox.id"] == pod.id
    assert docker_labels["io.kubernetes.container.logpath"] == str(pod.log_directory / "app/0.log")
    assert docker_labels["annotation.note"] == "hi"
    host_config = inspect["HostConfig"]
    assert host_config["NetworkMode"] == host_config["IpcMode"] == host_config["PidMode"] == f"container:{pod.id}"
    assert host_config["LogConfig"]["Type"] == "json-file"
    assert host_config["ShmSize"] == 64 * 1024 * 1024

    status = pod.status(container_id)
    assert status.state == api.CONTAINER_CREATED
    assert before - 2_000_000_000 < status.created_at <= time.time_ns()
    assert status.created_at % 1_000_000_000 != 0  # nanoseconds
    assert (status.started_at, status.finished_at) == (0, 0)

    pod.start(container_id)
    status = pod.status(container_id)
    assert status.state == api.CONTAINER_RUNNING
    assert status.started_at >= status.created_at
    assert status.metadata == api.ContainerMetadata(name="app", attempt=0)
    # Docker merges the image's labels into the container's; those and the internal ones stay hidden.
    assert dict(status.labels) == {"tier": "web"}
    assert dict(status.annotations) == {"note": "hi"}
    image = images.ImageStatus(api.ImageStatusRequest(image=api.ImageSpec(image=BUSYBOX)), timeout=10).image
    assert status.image_id == image.id
    assert status.image.image == BUSYBOX
    assert status.image.user_specified_image == "busybox:1.0"
    assert status.image_ref.startswith("docker-pullable://127.0.0.1:5000/dspy/busybox@sha256:")
    assert status.log_path == str(pod.log_directory / "app/0.log")
    assert status.user.linux.uid == 0
    assert status.stop_signal == api.SIGKILL
    assert pod.sh(container_id, "echo $GREETING; pwd") == "grüße\n/tmp\n"

    verbose = pod.runtime.ContainerStatus(api.ContainerStatusRequest(container_id=container_id, verbose=True), timeout=10)
    info = json.loads(verbose.info["info"])
    assert info["sandboxID"] == pod.id and info["pid"] > 0

    listed = pod.runtime.ListContainers(api.ListContainersRequest(
        filter=api.ContainerFilter(pod_sandbox_id=pod.id)), timeout=10).containers
    assert [(c.id, c.state, c.pod_sandbox_id, c.image_id) for c in listed] == [
        (container_id, api.CONTAINER_RUNNING, pod.id, image.id)]
    assert dict(listed[0].labels) == dict(status.labels)

    # StopContainer: the stop signal (SIGKILL here) ends it at once; stopping again is fine.
    pod.runtime.StopContainer(api.StopContainerRequest(container_id=container_id, timeout=30), timeout=60)
    status = pod.status(container_id)
    assert status.state == api.CONTAINER_EXITED
    assert (status.exit_code, status.reason) == (137, "Error")
    assert status.finished_at >= status.started_at > 0
    pod.runtime.StopContainer(api.StopContainerRequest(container_id=container_id, timeout=0), timeout=60)

    pod.remove(container_id)
    assert not pod.runtime.ListContainers(api.ListContainersRequest(
        filter=api.ContainerFilter(id=container_id)), timeout=10).containers
    with pytest.raises(docker.errors.NotFound):
        docker_api.inspect_container(container_id)

    # Stop and Remove of a container already gone succeed (the kubelet retries them).
    pod.runtime.StopContainer(api.StopContainerRequest(container_id=container_id, timeout=1), timeout=10)
    pod.remove(container_id)


def test_stop_waits_the_grace_period_then_kills(pod: Pod) -> None:
    trapped = pod.run("trapper", ["sh", "-c", "trap 'echo term; exit 7' TERM; while true; do sleep 0.1; done"])
    ignoring = pod.run("ignorer", ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"])
    time.sleep(0.3)
    pod.runtime.StopContainer(api.StopContainerRequest(container_id=trapped, timeout=10), timeout=30)
    assert pod.status(trapped).exit_code == 7
    started = time.monotonic()
    pod.runtime.StopContainer(api.StopContainerRequest(container_id=ignoring, timeout=1), timeout=30)
    assert 0.9 < time.monotonic() - started < 10
    assert pod.status(ignoring).exit_code == 137
    for container_id in (trapped, ignoring):
        pod.remove(container_id)


def test_a_grace_period_of_any_length_is_waited(pod: Pod) -> None:
    """terminationGracePeriodSeconds is an int64: one past what a socket timeout can hold still stops."""
    trapped = pod.run("patient", ["sh", "-c", "trap 'exit 7' TERM; while true; do sleep 0.1; done"])
    time.sleep(0.3)
    pod.runtime.StopContainer(api.StopContainerRequest(container_id=trapped, timeout=2**62), timeout=30)
    assert pod.status(trapped).exit_code == 7
    pod.remove(trapped)


@pytest.mark.parametrize(
    ("command", "exit_code", "reason"),
    [(["sh", "-c", "exit 0"], 0, "Completed"), (["sh", "-c", "exit 3"], 3, "Error")],
)
def test_exit_codes_and_reasons(pod: Pod, command, exit_code, reason) -> None:
    container_id = pod.run("exiter", command)
    status = pod.exited(container_id)
    assert (status.exit_code, status.reason) == (exit_code, reason)
    assert status.finished_at >= status.started_at > 0
    pod.remove(container_id)


def test_oom_killed(pod: Pod) -> None:
    resources = api.LinuxContainerResources(memory_limit_in_bytes=16 * 1024 * 1024)
    container_id = pod.run("hog", ["sh", "-c", "tail /dev/zero"], linux=api.LinuxContainerConfig(resources=resources))
    status = pod.exited(container_id)
    assert (status.reason, status.exit_code) == ("OOMKilled", 137)
    pod.remove(container_id)


def test_a_container_that_cannot_run(pod: Pod) -> None:
    container_id = pod.create(pod.container_config("broken", ["/no/such/binary"]))
    code, message = rpc_error(pod.start, container_id)
    assert "no/such/binary" in message
    assert code == grpc.StatusCode.FAILED_PRECONDITION  # Docker's 400: the request was fine, the container cannot run
    status = pod.status(container_id)
    assert (status.state, status.reason) == (api.CONTAINER_EXITED, "ContainerCannotRun")
    assert status.exit_code != 0 and "no/such/binary" in status.message
    assert status.started_at == status.finished_at == status.created_at
    listed = pod.runtime.ListContainers(api.ListContainersRequest(filter=api.ContainerFilter(id=container_id)),
                                        timeout=10).containers
    assert listed[0].state == api.CONTAINER_EXITED  # Docker lists it as "created"
    assert rpc_error(pod.start, container_id)[0] == grpc.StatusCode.FAILED_PRECONDITION
    pod.remove(container_id)


def test_a_container_that_cannot_run_lists_exited_after_a_restart(start_shim, docker_api: docker.APIClient) -> None:
    """Docker lists a failed start as "created": a restarted shim must still call it exited."""
    first = start_shim()
    pod = Pod(first.runtime, docker_api)
    try:
        container_id = pod.create(pod.container_config("broken", ["/no/such/binary"]))
        rpc_error(pod.start, container_id)
        first.stop()
        pod.runtime = start_shim(["--root-directory", str(first.root)]).runtime
        request = api.ListContainersRequest(filter=api.ContainerFilter(id=container_id))
        assert wait_for(lambda: [item.state for item in pod.runtime.ListContainers(request, timeout=10).containers]
                        == [api.CONTAINER_EXITED], timeout=10)  # once the restart's recovery has run
    finally:
        pod.close()


def test_list_filters(fresh_pod: Pod, shim) -> None:
    pod = fresh_pod
    running = pod.run("one", labels={"role": "a"})
    created = pod.create(pod.container_config("two", labels={"role": "b"}))
    other = Pod(shim.runtime, pod.docker)
    try:
        elsewhere = other.run("three", labels={"role": "a"})

        def listed(**fields) -> set[str]:
            reply = pod.runtime.ListContainers(api.ListContainersRequest(filter=api.ContainerFilter(**fields)), timeout=10)
            return {container.id for container in reply.containers}

        assert {running, created, elsewhere} <= listed()
        assert listed(pod_sandbox_id=pod.id) == {running, created}
        assert listed(pod_sandbox_id=pod.id[:12]) == {running, created}
        assert listed(id=running[:12]) == {running}
        assert listed(id="not-hex") == set()
        assert listed(pod_sandbox_id=pod.id, state=api.ContainerStateValue(state=api.CONTAINER_CREATED)) == {created}
        assert listed(pod_sandbox_id=pod.id, state=api.ContainerStateValue(state=api.CONTAINER_RUNNING)) == {running}
        assert listed(label_selector={"role": "a"}) >= {running, elsewhere}
        assert created not in listed(label_selector={"role": "a"})
        assert listed(pod_sandbox_id=pod.id, label_selector={"role": "b"}) == {created}
        sandbox_ids = {c.pod_sandbox_id for c in pod.runtime.ListContainers(api.ListContainersRequest(), timeout=10).containers}
        assert pod.id in sandbox_ids and other.id in sandbox_ids
    finally:
        other.close()


def test_status_and_start_by_id_prefix(pod: Pod) -> None:
    container_id = pod.create(pod.container_config("prefix"))
    pod.start(container_id[:12])
    assert pod.status(container_id[:12]).id == container_id
    pod.remove(container_id[:12])


def test_unknown_ids_are_not_found_except_for_stop_and_remove(pod: Pod) -> None:
    runtime = pod.runtime
    for call, request in [
        (runtime.StartContainer, api.StartContainerRequest(container_id=UNKNOWN_ID)),
        (runtime.ContainerStatus, api.ContainerStatusRequest(container_id=UNKNOWN_ID)),
        (runtime.ContainerStatus, api.ContainerStatusRequest(container_id="not-hex")),
        (runtime.UpdateContainerResources, api.UpdateContainerResourcesRequest(container_id=UNKNOWN_ID)),
        (runtime.ReopenContainerLog, api.ReopenContainerLogRequest(container_id=UNKNOWN_ID)),
        (runtime.ExecSync, api.ExecSyncRequest(container_id=UNKNOWN_ID, cmd=["true"])),
    ]:
        code, message = rpc_error(call, request, timeout=10)
        assert code == grpc.StatusCode.NOT_FOUND, (call, message)
    runtime.StopContainer(api.StopContainerRequest(container_id=UNKNOWN_ID), timeout=10)
    runtime.RemoveContainer(api.RemoveContainerRequest(container_id=UNKNOWN_ID), timeout=10)
    # A sandbox is not a container.
    code, _ = rpc_error(runtime.RemoveContainer, api.RemoveContainerRequest(container_id=pod.id), timeout=10)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert rpc_error(runtime.RemoveContainer, api.RemoveContainerRequest(container_id=""), timeout=10)[0] == \
        grpc.StatusCode.INVALID_ARGUMENT


def test_create_refusals(pod: Pod) -> None:
    code, message = rpc_error(pod.create, pod.container_config("noimage", image=api.ImageSpec(image="127.0.0.1:5000/dspy/absent:1")))
    assert code == grpc.StatusCode.NOT_FOUND and "dspy/absent" in message
    request = api.CreateContainerRequest(pod_sandbox_id=UNKNOWN_ID, config=pod.container_config("nopod"),
                                         sandbox_config=pod.config)
    assert rpc_error(pod.runtime.CreateContainer, request, timeout=10)[0] == grpc.StatusCode.NOT_FOUND
    code, message = rpc_error(pod.create, pod.container_config(
        "badcap", linux=api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(
            capabilities=api.Capability(add_capabilities=["WIZARDRY"])))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "WIZARDRY" in message
    code, message = rpc_error(pod.create, pod.container_config("badsignal", stop_signal=999))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "stop_signal 999" in message
    code, message = rpc_error(pod.create, pod.container_config(
        "nulpath", mounts=[api.Mount(container_path="/data", host_path="/tmp/dspy-nul\0x")]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "config.mounts[0].host_path holds a NUL byte" in message
    assert not [c for c in pod.docker.containers(all=True, filters={"name": f"_{pod.namespace}_"})
                if any(f"_{name}_" in c["Names"][0] for name in ("badcap", "noimage", "badsignal", "nulpath"))]


def test_a_start_the_runtime_refuses_is_a_failed_precondition(pod: Pod) -> None:
    """What only runc finds out (no such user, no such device) came back UNKNOWN."""
    for name, fields in (
            ("nouser", {"linux": api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(
                run_as_username="dspy-no-such-user"))}),
            ("nodevice", {"devices": [api.Device(host_path="/dev/dspy-no-such-device", container_path="/dev/x",
                                                  permissions="rwm")]})):
        try:
            container_id = pod.create(pod.container_config(name, **fields))
        except grpc.RpcError as refused:  # refused at create is as good
            assert refused.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
            continue
        code, message = rpc_error(pod.start, container_id)
        assert code == grpc.StatusCode.FAILED_PRECONDITION and message, (name, message)
        pod.remove(container_id)


def _outcome(call, *args) -> tuple[grpc.StatusCode, object]:
    try:
        return grpc.StatusCode.OK, call(*args)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()


def test_create_replaces_a_created_container_of_the_same_name(pod: Pod) -> None:
    config = pod.container_config("again")
    first = pod.create(config)
    second = pod.create(config)  # the kubelet lost the first answer and asks again
    assert second != first
    with pytest.raises(docker.errors.NotFound):
        pod.docker.inspect_container(first)
    pod.remove(second)


def test_side_by_side_creates_of_one_name_make_one_container(pod: Pod) -> None:
    config = pod.container_config("twice")
    with ThreadPoolExecutor(3) as pool:
        outcomes = [call.result() for call in [pool.submit(_outcome, pod.create, config) for _ in range(3)]]
    assert [code for code, _ in outcomes].count(grpc.StatusCode.OK) == 1, outcomes
    assert all(code in (grpc.StatusCode.OK, grpc.StatusCode.ALREADY_EXISTS) for code, _ in outcomes)
    made = [c for c in pod.docker.containers(all=True, filters={"name": f"_{pod.namespace}_"})
            if "_twice_" in c["Names"][0]]
    assert len(made) == 1
    pod.remove(made[0]["Id"])


def test_a_stopped_sandbox_takes_no_containers(fresh_pod: Pod) -> None:
    fresh_pod.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=fresh_pod.id), timeout=30)
    code, message = rpc_error(fresh_pod.create, fresh_pod.container_config("late"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "not running" in message


def test_update_container_resources(pod: Pod) -> None:
    container_id = pod.run("resize", linux=api.LinuxContainerConfig(resources=api.LinuxContainerResources(
        cpu_shares=512, memory_limit_in_bytes=64 << 20)))
    assert pod.sh(container_id, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes").strip() == str(64 << 20)
    pod.runtime.UpdateContainerResources(api.UpdateContainerResourcesRequest(
        container_id=container_id, linux=api.LinuxContainerResources(
            cpu_shares=1024, cpu_period=100000, cpu_quota=50000, memory_limit_in_bytes=128 << 20)), timeout=30)
    observed = pod.sh(container_id, "cd /sys/fs/cgroup; cat cpu/cpu.shares cpu/cpu.cfs_period_us cpu/cpu.cfs_quota_us "
                                    "memory/memory.limit_in_bytes").split()
    assert observed == ["1024", "100000", "50000", str(128 << 20)]
    resources = pod.status(container_id).resources.linux
    assert (resources.cpu_shares, resources.cpu_quota, resources.memory_limit_in_bytes) == (1024, 50000, 128 << 20)
    pod.remove(container_id)


def test_docker_restart_policy_is_never_set(pod: Pod, docker_api: docker.APIClient) -> None:
    container_id = pod.run("once", ["sh", "-c", "exit 1"])
    pod.exited(container_id)
    assert docker_api.inspect_container(container_id)["HostConfig"]["RestartPolicy"]["Name"] in ("", "no")
    assert wait_for(lambda: pod.status(container_id).state == api.CONTAINER_EXITED, timeout=1)
    pod.remove(container_id)


def test_the_images_labels_are_not_the_containers_or_the_sandboxes_cri_labels(pod: Pod) -> None:
    """Docker copies an image's labels to its containers; the CRI's labels are only the kubelet's."""
    container_id = pod.run("labelled", labels={"app": "web", "io.dockershim-py.test": "mine"},
                           annotations={"note": "x"})
    status = pod.status(container_id)
    assert dict(status.labels) == {"app": "web", "io.dockershim-py.test": "mine"}  # the CRI's value wins
    assert dict(status.annotations) == {"note": "x"}
    plain = pod.run("plain")
    assert dict(pod.status(plain).labels) == {}
    (listed,) = pod.runtime.ListContainers(api.ListContainersRequest(filter=api.ContainerFilter(
        id=plain)), timeout=30).containers
    assert dict(listed.labels) == {}
    assert pod.runtime.ListContainers(api.ListContainersRequest(filter=api.ContainerFilter(
        pod_sandbox_id=pod.id, label_selector={"io.dockershim-py.test": "busybox"})), timeout=30).containers == []
    (sandbox,) = pod.runtime.ListPodSandbox(api.ListPodSandboxRequest(filter=api.PodSandboxFilter(
        id=pod.id)), timeout=30).items
    assert "org.opencontainers.image.version" not in sandbox.labels and "io.dockershim-py.test" not in sandbox.labels
    pod.remove(container_id)
    pod.remove(plain)


def test_stops_that_wait_out_their_grace_period_hold_up_no_other_call(start_shim, docker_api) -> None:
    """A drain stops many containers that ignore SIGTERM at once; each stop holds a thread for its
    grace period. With --grpc-workers 2, three such stops held every worker before stops had threads
    of their own, and StartContainer and ImageStatus waited behind them."""
    shim = start_shim(["--grpc-workers", "2"])
    stubborn_pod = Pod(shim.runtime, docker_api)
    try:
        stubborn = stubborn_pod.run("stubborn", ["sh", "-c", "trap '' TERM; while :; do sleep 1; done"])
        with ThreadPoolExecutor(3) as pool:
            stops = [pool.submit(shim.runtime.StopContainer,
                                 api.StopContainerRequest(container_id=stubborn, timeout=30), timeout=60)
                     for _ in range(3)]
            time.sleep(1)  # the three stops are waiting on Docker
            assert not any(stop.done() for stop in stops)
            started = time.monotonic()
            code, _ = rpc_error(shim.runtime.StartContainer, api.StartContainerRequest(container_id=UNKNOWN_ID),
                                timeout=10)
            assert code == grpc.StatusCode.NOT_FOUND
            shim.images.ImageStatus(api.ImageStatusRequest(image=api.ImageSpec(image=BUSYBOX)), timeout=10)
            assert time.monotonic() - started < 5
            docker_api.kill(stubborn)  # the stops end
            for stop in stops:
                stop.result(timeout=30)
    finally:
        stubborn_pod.close()


def test_no_container_outlives_a_pod_removed_while_it_was_created(shim, docker_api) -> None:
    """RemovePodSandbox lists the pod's containers; one whose create was under way was left in
    Docker, pointing at a pod that was gone (4 of 4 rounds in the fuzz audit's repro)."""
    for round_number in range(4):
        racing_pod = Pod(shim.runtime, docker_api)
        outcomes: list[grpc.StatusCode] = []

        def create(index: int) -> None:
            try:
                racing_pod.create(racing_pod.container_config(f"racer-{index}"))
                outcomes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                outcomes.append(exc.code())

        with ThreadPoolExecutor(5) as pool:
            creates = [pool.submit(create, index) for index in range(4)]
            time.sleep(0.01 * round_number)
            pool.submit(shim.runtime.RemovePodSandbox,
                        api.RemovePodSandboxRequest(pod_sandbox_id=racing_pod.id), timeout=60).result()
            for made in creates:
                made.result()
        assert set(outcomes) <= {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}, outcomes
        left = docker_api.containers(all=True, filters={"label": f"io.kubernetes.sandbox.id={racing_pod.id}"})
        assert left == [], f"round {round_number}: {[entry['Names'] for entry in left]} outlived their pod"


def test_removing_a_pod_that_is_gone_takes_the_containers_it_left(shim, docker_api) -> None:
    """What an earlier shim's race left: containers of a pod whose pause container and checkpoint
    are gone. The kubelet removes the pod again; the second removal found nothing and kept them."""
    gone_pod_id = "e" * 64
    left = docker_api.create_container(BUSYBOX, command=["sleep", "60"], name=f"k8s_left_pod_dspy-gone-{time.time_ns()}_u_0",
                                       labels={"io.kubernetes.docker.type": "container",
                                               "io.kubernetes.sandbox.id": gone_pod_id})["Id"]
    try:
        shim.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=gone_pod_id), timeout=30)
        assert docker_api.containers(all=True, filters={"id": left}) == []
    finally:
        try:
            docker_api.remove_container(left, force=True)
        except docker.errors.NotFound:
            pass


@pytest.mark.parametrize("bad_id", ["../../x", "..%2F..%2Fx", "k8s_app_pod", "F" * 64, "a" * 65])
def test_an_id_that_is_no_id_is_not_found(pod: Pod, bad_id: str) -> None:
    """Docker takes names too, and answers an ID holding `../` with a redirect and no body (the
    shim took that for an answer: INTERNAL)."""
    namespaces = api.NamespaceOption(pid=api.TARGET, target_id=bad_id)
    for call, request in (
            (pod.runtime.ExecSync, api.ExecSyncRequest(container_id=bad_id, cmd=["true"], timeout=5)),
            (pod.runtime.Exec, api.ExecRequest(container_id=bad_id, cmd=["true"], stdout=True)),
            (pod.runtime.Attach, api.AttachRequest(container_id=bad_id, stdout=True)),
            (pod.runtime.PortForward, api.PortForwardRequest(pod_sandbox_id=bad_id, port=[80])),
            (pod.runtime.StartContainer, api.StartContainerRequest(container_id=bad_id)),
            (pod.runtime.ContainerStatus, api.ContainerStatusRequest(container_id=bad_id)),
            (pod.runtime.CreateContainer, api.CreateContainerRequest(
                pod_sandbox_id=bad_id, config=pod.container_config("bad-sandbox"), sandbox_config=pod.config)),
            (pod.runtime.CreateContainer, api.CreateContainerRequest(
                pod_sandbox_id=pod.id, sandbox_config=pod.config, config=pod.container_config(
                    "bad-target", linux=api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(
                        namespace_options=namespaces))))),
    ):
        code, message = rpc_error(call, request, timeout=10)
        assert code == grpc.StatusCode.NOT_FOUND, (call, message)


def test_an_update_racing_a_removal_is_not_found(pod: Pod) -> None:
    """Docker answers 500 'marked for removal' while it removes: that was UNKNOWN (10 of 10 rounds)."""
    codes = set()
    for round_number in range(6):
        container_id = pod.run(f"updated-{round_number}")
        update = api.UpdateContainerResourcesRequest(
            container_id=container_id, linux=api.LinuxContainerResources(cpu_shares=512 + round_number))
        with ThreadPoolExecutor(2) as pool:
            removal = pool.submit(pod.runtime.RemoveContainer,
                                  api.RemoveContainerRequest(container_id=container_id), timeout=30)
            updates = [pool.submit(_outcome, pod.runtime.UpdateContainerResources, update) for _ in range(6)]
            removal.result()
            codes |= {made.result()[0] for made in updates}
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}, codes


def test_pod_sandbox_status_carries_the_pods_container_statuses_newest_first(pod: Pod) -> None:
    """A kubelet with EventedPLEG takes a pod's containers from PodSandboxStatus alone once it
    has a timestamp: without them it started the pod's containers again every sync (326 copies
    of one in 50 s under a real kubelet)."""
    first = pod.run("app", ["true"])
    pod.exited(first)
    second = pod.run("app")  # its restart, attempt 1
    sidecar = pod.run("sidecar")
    reply = pod.runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod.id), timeout=10)
    assert reply.timestamp > 0
    assert [status.id for status in reply.containers_statuses] == [sidecar, second, first]
    assert list(reply.containers_statuses) == [pod.status(container) for container in (sidecar, second, first)]
    pod.remove(first)
    reply = pod.runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod.id), timeout=10)
    assert [status.id for status in reply.containers_statuses] == [sidecar, second]
