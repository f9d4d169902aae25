"""Container and pod sandbox stats and metrics through the real gRPC client, checked against what
the containers do: memory held, a busy core, bytes written, packets counted by the kernel.

One module-wide set of pods (made once, removed at the end) keeps the run short:
  pod "busy":  a cgroup parent (pod-level figures come from the pod cgroup), containers
               "mem" (holds 64 MiB in /dev/shm), "spin" (a busy loop) and "done" (exited);
  pod "quiet": no cgroup parent (pod figures are the sum of its containers), container "idle".
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import grpc
import pytest

from conftest import BUSYBOX, CRICTL, Shim, needs_crictl, wait_for
from dockershim_py.api import api_pb2 as api
from dockershim_py.api import api_pb2_grpc
from dockershim_py.cgroup_stats import CgroupReader, Mount, pod_cgroup

MiB = 1024 * 1024
CORE = 1_000_000_000


@dataclass
class Pod:
    id: str
    config: api.PodSandboxConfig
    cgroup_parent: str  # Docker's, as the pause container got it
    containers: dict[str, str] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.config.metadata.namespace


class Pods:
    """Pods and their containers made through the shim, removed with what Docker left behind."""

    def __init__(self, runtime: api_pb2_grpc.RuntimeServiceStub, docker_api: docker.APIClient) -> None:
        self.runtime = runtime
        self.docker = docker_api
        self.namespace = f"dspy-stats-{secrets.token_hex(4)}"
        self.pods: list[Pod] = []

    def run(self, name: str, cgroup_parent: str = "", pod_labels: dict[str, str] | None = None,
            host_network: bool = False) -> Pod:
        config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, namespace=self.namespace, uid=f"uid-{name}"),
            labels={"dspy-stats": self.namespace, "pod": name, **(pod_labels or {})},
            linux=api.LinuxPodSandboxConfig(cgroup_parent=cgroup_parent),
        )
        if host_network:
            config.linux.security_context.namespace_options.network = api.NODE
        sandbox_id = self.runtime.RunPodSandbox(api.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id
        pod = Pod(sandbox_id, config, self.docker.inspect_container(sandbox_id)["HostConfig"]["CgroupParent"] or "")
        self.pods.append(pod)
        return pod

    def add(self, pod: Pod, name: str, script: str, container_labels: dict[str, str] | None = None,
            wait_running: bool = True, resources: api.LinuxContainerResources | None = None) -> str:
        config = api.ContainerConfig(
            metadata=api.ContainerMetadata(name=name),
            image=api.ImageSpec(image=BUSYBOX, user_specified_image=BUSYBOX),
            command=["sh", "-c", script],
            labels={"app": name, **(container_labels or {})},
            annotations={"note": name},
        )
        if resources is not None:
            config.linux.resources.CopyFrom(resources)
        request = api.CreateContainerRequest(pod_sandbox_id=pod.id, config=config, sandbox_config=pod.config)
        container_id = self.runtime.CreateContainer(request, timeout=60).container_id
        pod.containers[name] = container_id
        self.runtime.StartContainer(api.StartContainerRequest(container_id=container_id), timeout=60)
        if wait_running:
            assert wait_for(lambda: self.docker.inspect_container(container_id)["State"]["Running"])
        return container_id

    def cleanup(self) -> None:
        driver = self.docker.info().get("CgroupDriver", "cgroupfs")
        for pod in self.pods:
            try:
                self.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
            finally:
                for container_id in [*pod.containers.values(), pod.id]:  # in case the shim could not
                    try:
                        self.docker.remove_container(container_id, force=True, v=True)
                    except docker.errors.NotFound:
                        pass
                remove_cgroup(pod.cgroup_parent, driver)


def remove_cgroup(cgroup_parent: str, driver: str) -> None:
    """Docker leaves the (soon empty) pod cgroup it made for the parent behind, in every hierarchy."""
    path = pod_cgroup(cgroup_parent, driver)
    if path is None:
        return
    left = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if "-" in fields and fields[fields.index("-") + 1] in ("cgroup", "cgroup2"):
            directory = Mount(fields[4], fields[3]).directory(path)
            if directory is not None and os.path.isdir(directory):
                left.append(directory)

    def removed() -> bool:  # runc may still be removing the containers' cgroups inside
        for directory in list(left):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
                left.remove(directory)
        return not left

    assert wait_for(removed, timeout=10, interval=0.2), f"cgroups left behind: {left}"


def rpc_error(call, request) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    return caught.value.code()


@pytest.fixture(scope="module")
def pods(shim: Shim, docker_api: docker.APIClient) -> Iterator[Pods]:
    made = Pods(shim.runtime, docker_api)
    try:
        busy = made.run("busy", cgroup_parent=f"/dspystats{secrets.token_hex(4)}", pod_labels={"tier": "busy"})
        made.add(busy, "mem", "head -c 67108864 /dev/zero > /dev/shm/held && touch /tmp/ready; exec sleep 3600")
        made.add(busy, "spin", "while :; do :; done")
        made.add(busy, "done", "echo bye > /tmp/out", wait_running=False)
        quiet = made.run("quiet")
        made.add(quiet, "idle", "exec sleep 3600", container_labels={"role": "idle"})
        assert wait_for(lambda: not docker_api.inspect_container(busy.containers["done"])["State"]["Running"])
        assert wait_for(lambda: exec_in(docker_api, busy.containers["mem"], "test -f /tmp/ready && echo ok") == "ok")
        yield made
    finally:
        made.cleanup()


@pytest.fixture(scope="module")
def busy(pods: Pods) -> Pod:
    return pods.pods[0]


@pytest.fixture(scope="module")
def quiet(pods: Pods) -> Pod:
    return pods.pods[1]


def exec_in(docker_api: docker.APIClient, container_id: str, script: str) -> str:
    exec_id = docker_api.exec_create(container_id, ["sh", "-c", script])["Id"]
    return docker_api.exec_start(exec_id).decode().strip()


def container_stats(runtime: api_pb2_grpc.RuntimeServiceStub, container_id: str) -> api.ContainerStats:
    return runtime.ContainerStats(api.ContainerStatsRequest(container_id=container_id), timeout=30).stats


def list_stats(runtime: api_pb2_grpc.RuntimeServiceStub, **filters: object) -> dict[str, api.ContainerStats]:
    request = api.ListContainerStatsRequest(filter=api.ContainerStatsFilter(**filters))
    return {stats.attributes.id: stats for stats in runtime.ListContainerStats(request, timeout=30).stats}


def pod_stats(runtime: api_pb2_grpc.RuntimeServiceStub, **filters: object) -> dict[str, api.PodSandboxStats]:
    request = api.ListPodSandboxStatsRequest(filter=api.PodSandboxStatsFilter(**filters))
    return {stats.attributes.id: stats for stats in runtime.ListPodSandboxStats(request, timeout=30).stats}


# --- values against what the containers do ------------------------------------------------------


def test_memory_held_shows_in_the_working_set(runtime: api_pb2_grpc.RuntimeServiceStub, busy: Pod) -> None:
    stats = container_stats(runtime, busy.containers["mem"])
    assert stats.attributes.metadata.name == "mem"
    memory = stats.memory
    assert memory.working_set_bytes.value >= 64 * MiB
    assert memory.usage_bytes.value >= memory.working_set_bytes.value
    assert memory.rss_bytes.value < 16 * MiB  # tmpfs pages are not anonymous memory
    assert memory.page_faults.value > 0
    assert memory.timestamp > 0
    assert not memory.HasField("available_bytes")  # no limit
    pod = runtime.PodSandboxStats(api.PodSandboxStatsRequest(pod_sandbox_id=busy.id), timeout=30).stats
    assert pod.linux.memory.working_set_bytes.value >= 64 * MiB


def test_a_busy_loop_uses_about_one_core(runtime: api_pb2_grpc.RuntimeServiceStub, busy: Pod) -> None:
    spin = busy.containers["spin"]
    first = container_stats(runtime, spin)
    pod_stats(runtime, id=busy.id)  # the pod's first sample too
    time.sleep(2.5)
    second = container_stats(runtime, spin)
    cores = second.cpu.usage_nano_cores.value / CORE
    assert 0.5 <= cores <= 1.5, f"a busy loop used {cores:.2f} cores"
    elapsed = second.cpu.timestamp - first.cpu.timestamp
    used = second.cpu.usage_core_nano_seconds.value - first.cpu.usage_core_nano_seconds.value
    assert 0.5 <= used / elapsed <= 1.5
    pod = pod_stats(runtime, id=busy.id)[busy.id]
    assert pod.linux.cpu.usage_nano_cores.value >= 0.5 * CORE
    assert pod.linux.cpu.usage_core_nano_seconds.value >= second.cpu.usage_core_nano_seconds.value
    idle = container_stats(runtime, busy.containers["mem"])
    assert idle.cpu.usage_nano_cores.value < 0.2 * CORE


def test_pod_network_and_processes(runtime: api_pb2_grpc.RuntimeServiceStub, docker_api: docker.APIClient,
                                   busy: Pod) -> None:
    kernel = exec_in(docker_api, busy.containers["mem"], "cat /proc/net/dev")
    before = {line.split(":")[0].strip(): int(line.split(":")[1].split()[0])
              for line in kernel.splitlines() if ":" in line}
    pod = pod_stats(runtime, id=busy.id)[busy.id]
    network = pod.linux.network
    assert network.default_interface.name == "eth0"
    assert network.default_interface.rx_bytes.value >= before["eth0"]
    assert "lo" not in [interface.name for interface in network.interfaces]
    # pause, sleep, the busy shell (the exited container has none left)
    assert pod.linux.process.process_count.value >= 3


def test_writable_layer_is_measured_in_the_background(runtime: api_pb2_grpc.RuntimeServiceStub,
                                                      pods: Pods, quiet: Pod) -> None:
    writer = pods.add(quiet, "writer", "head -c 5242880 /dev/urandom > /blob && mkdir -p /a/b && exec sleep 3600")
    assert wait_for(lambda: exec_in(pods.docker, writer, "test -d /a/b && echo ok") == "ok")

    def measured() -> api.ContainerStats | None:
        stats = container_stats(runtime, writer)
        return stats if stats.writable_layer.used_bytes.value >= 5 * MiB else None

    stats = wait_for(measured, timeout=20, interval=0.2)
    assert stats, "the writable layer was not measured"
    layer = stats.writable_layer
    assert layer.inodes_used.value >= 4  # the layer's root, /blob, /a, /a/b
    assert layer.fs_id.mountpoint
    assert 0 < layer.timestamp <= time.time_ns()


def test_a_new_containers_first_stats_have_its_writable_layer(runtime: api_pb2_grpc.RuntimeServiceStub,
                                                             pods: Pods, quiet: Pod) -> None:
    """The kubelet's first poll after a start must not find the layer missing: the call measures a
    small one itself, before the background worker's turn (as the metrics do)."""
    fresh = pods.add(quiet, "fresh", "exec sleep 3600")
    layer = container_stats(runtime, fresh).writable_layer
    assert layer.fs_id.mountpoint and 0 < layer.timestamp <= time.time_ns()
    assert layer.HasField("used_bytes") and layer.inodes_used.value >= 1


# --- filters and unknown IDs ----------------------------------------------------------------------


def test_filters(runtime: api_pb2_grpc.RuntimeServiceStub, busy: Pod, quiet: Pod) -> None:
    ours = set(busy.containers.values()) | set(quiet.containers.values())
    everything = list_stats(runtime)
    assert ours <= set(everything)
    assert set(list_stats(runtime, pod_sandbox_id=busy.id)) == set(busy.containers.values())
    assert set(list_stats(runtime, pod_sandbox_id=quiet.id[:13])) == set(quiet.containers.values())
    spin = busy.containers["spin"]
    assert set(list_stats(runtime, id=spin[:12])) == {spin}
    assert set(list_stats(runtime, label_selector={"role": "idle"})) == {quiet.containers["idle"]}
    assert set(list_stats(runtime, label_selector={"app": "spin"}, pod_sandbox_id=busy.id)) == {spin}
    assert list_stats(runtime, label_selector={"app": "spin"}, pod_sandbox_id=quiet.id) == {}
    assert list_stats(runtime, id="0" * 64) == {}
    assert list_stats(runtime, id="not-hex") == {}
    # a pod sandbox is not a container
    assert busy.id not in everything

    assert set(pod_stats(runtime, label_selector={"dspy-stats": busy.namespace})) == {busy.id, quiet.id}
    assert set(pod_stats(runtime, label_selector={"tier": "busy"})) == {busy.id}
    assert set(pod_stats(runtime, id=quiet.id[:12])) == {quiet.id}
    assert pod_stats(runtime, id="0" * 64) == {}


def test_unknown_ids(runtime: api_pb2_grpc.RuntimeServiceStub, busy: Pod) -> None:
    assert rpc_error(runtime.ContainerStats, api.ContainerStatsRequest(container_id="0" * 64)) == grpc.StatusCode.NOT_FOUND
    assert rpc_error(runtime.ContainerStats, api.ContainerStatsRequest(container_id="zz")) == grpc.StatusCode.NOT_FOUND
    assert rpc_error(runtime.ContainerStats, api.ContainerStatsRequest(container_id=busy.id)) == grpc.StatusCode.NOT_FOUND
    assert rpc_error(runtime.ContainerStats, api.ContainerStatsRequest()) == grpc.StatusCode.INVALID_ARGUMENT
    assert rpc_error(runtime.PodSandboxStats,
                     api.PodSandboxStatsRequest(pod_sandbox_id="0" * 64)) == grpc.StatusCode.NOT_FOUND
    assert rpc_error(runtime.PodSandboxStats,
                     api.PodSandboxStatsRequest(pod_sandbox_id=busy.containers["spin"])) == grpc.StatusCode.NOT_FOUND
    assert rpc_error(runtime.PodSandboxStats, api.PodSandboxStatsRequest()) == grpc.StatusCode.INVALID_ARGUMENT


# --- exited containers and stopped pods -----------------------------------------------------------


def test_exited_containers_have_attributes_but_no_figures(runtime: api_pb2_grpc.RuntimeServiceStub,
                                                          busy: Pod) -> None:
    done = container_stats(runtime, busy.containers["done"])
    assert done.attributes.metadata.name == "done"
    assert dict(done.attributes.labels)["app"] == "done"
    assert dict(done.attributes.annotations) == {"note": "done"}
    assert not done.HasField("cpu") and not done.HasField("memory")
    pod = pod_stats(runtime, id=busy.id)[busy.id]
    members = {stats.attributes.metadata.name: stats for stats in pod.linux.containers}
    assert set(members) == {"mem", "spin", "done"}
    assert not members["done"].HasField("cpu")
    assert members["spin"].cpu.usage_core_nano_seconds.value > 0
    assert pod.attributes.metadata.name == "busy" and pod.attributes.metadata.namespace == busy.namespace
    assert dict(pod.attributes.labels)["tier"] == "busy"


def test_pod_without_cgroup_parent_sums_its_containers(runtime: api_pb2_grpc.RuntimeServiceStub,
                                                       quiet: Pod) -> None:
    pod = runtime.PodSandboxStats(api.PodSandboxStatsRequest(pod_sandbox_id=quiet.id), timeout=30).stats
    containers_memory = sum(stats.memory.working_set_bytes.value for stats in pod.linux.containers)
    assert pod.linux.memory.working_set_bytes.value >= containers_memory  # plus the pause container
    assert pod.linux.memory.working_set_bytes.value > 0
    assert pod.linux.process.process_count.value >= 2
    assert pod.linux.network.default_interface.name == "eth0"


def test_host_network_pod_has_no_network_figures(runtime: api_pb2_grpc.RuntimeServiceStub, pods: Pods) -> None:
    """The pause process's namespace is the node's: its counters are not the pod's."""
    host = pods.run("host", host_network=True)
    stats = runtime.PodSandboxStats(api.PodSandboxStatsRequest(pod_sandbox_id=host.id), timeout=30).stats
    assert not stats.linux.HasField("network")
    assert stats.linux.memory.working_set_bytes.value > 0 and stats.linux.process.process_count.value >= 1


def test_stopped_pod(runtime: api_pb2_grpc.RuntimeServiceStub, pods: Pods) -> None:
    stopped = pods.run("stopped")
    pods.add(stopped, "gone", "trap 'exit 0' TERM; sleep 3600 & wait $!")  # stops at once
    runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=stopped.id), timeout=60)
    assert stopped.id not in pod_stats(runtime)  # only ready pods are listed
    stats = runtime.PodSandboxStats(api.PodSandboxStatsRequest(pod_sandbox_id=stopped.id), timeout=30).stats
    assert stats.attributes.id == stopped.id
    assert not stats.linux.HasField("cpu") and not stats.linux.HasField("network")
    assert [member.attributes.metadata.name for member in stats.linux.containers] == ["gone"]
    runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=stopped.id), timeout=60)
    assert rpc_error(runtime.PodSandboxStats,
                     api.PodSandboxStatsRequest(pod_sandbox_id=stopped.id)) == grpc.StatusCode.NOT_FOUND


def kernel_pressure_total_us(docker_api: docker.APIClient, container_id: str, resource: str) -> int | None:
    """The `some` total of the container's pressure file, found without the shim's code (the
    cgroup2 mount, and the container's path in it); None where the host keeps no PSI."""
    pid = docker_api.inspect_container(container_id)["State"]["Pid"]
    path = next((line[3:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                 if line.startswith("0::")), None)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if path is not None and "-" in fields and fields[fields.index("-") + 1] == "cgroup2":
            directory = Mount(fields[4], fields[3]).directory(path)
            pressure = Path(directory or "/nonexistent", f"{resource}.pressure")
            if pressure.is_file():
                return int(pressure.read_text().splitlines()[0].rsplit("total=", 1)[1])
    return None


def test_pressure_stall_information(runtime: api_pb2_grpc.RuntimeServiceStub, docker_api: docker.APIClient,
                                    pods: Pods) -> None:
    """Two busy loops pinned to one CPU: one of them always waits, so the CPU's `some` pressure
    grows about as fast as the clock; the figures are the kernel's, in nanoseconds."""
    pod = pods.run("contended", cgroup_parent=f"/dspystats{secrets.token_hex(4)}")
    contended = pods.add(pod, "two-loops", "while :; do :; done & while :; do :; done",
                         resources=api.LinuxContainerResources(cpuset_cpus="0"))
    try:
        before = kernel_pressure_total_us(docker_api, contended, "cpu")
        if before is None:
            pytest.skip("this host keeps no pressure stall information for containers (no cgroup2, or PSI is off)")
        first = container_stats(runtime, contended)
        after = kernel_pressure_total_us(docker_api, contended, "cpu")
        assert after is not None and before * 1000 <= first.cpu.psi.Some.Total <= after * 1000
        assert first.memory.HasField("psi") and first.io.HasField("psi") and first.io.timestamp > 0
        time.sleep(2.5)  # past the one-second reuse of a reading
        second = container_stats(runtime, contended)
        elapsed = second.cpu.timestamp - first.cpu.timestamp
        waited = (second.cpu.psi.Some.Total - first.cpu.psi.Some.Total) / elapsed
        assert waited >= 0.5, f"two loops on one CPU waited {waited:.2f} of the time"
        assert second.cpu.psi.Some.Avg10 > 0
        pod_level = pod_stats(runtime, id=pod.id)[pod.id].linux
        # The pod cgroup holds the container. (Its total trails the container's by some milliseconds
        # at times, as the kernel adds up a parent's stalls: compare with the reading 2.5 s before.)
        assert pod_level.cpu.psi.Some.Total > first.cpu.psi.Some.Total + 10**9
        assert pod_level.HasField("io") and pod_level.memory.HasField("psi")
        reply = runtime.ListPodSandboxMetrics(api.ListPodSandboxMetricsRequest(), timeout=30)
        pod_metrics = next(metrics for metrics in reply.pod_metrics if metrics.pod_sandbox_id == pod.id)
        container_metrics = next(metrics for metrics in pod_metrics.container_metrics
                                 if metrics.container_id == contended)
        waiting = next(metric for metric in container_metrics.metrics
                       if metric.name == "container_pressure_cpu_waiting_seconds_total")
        assert waiting.value.value >= 1 and waiting.value.value * 10**9 <= second.cpu.psi.Some.Total + 2 * 10**9
    finally:  # two busy loops would weigh on every later test
        runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)


# --- metrics --------------------------------------------------------------------------------------


def test_metrics_carry_pod_namespace_container_and_image(runtime: api_pb2_grpc.RuntimeServiceStub,
                                                         docker_api: docker.APIClient, busy: Pod) -> None:
    descriptors = runtime.ListMetricDescriptors(api.ListMetricDescriptorsRequest(), timeout=30).descriptors
    keys = {descriptor.name: list(descriptor.label_keys) for descriptor in descriptors}
    assert "container_memory_working_set_bytes" in keys
    reply = runtime.ListPodSandboxMetrics(api.ListPodSandboxMetricsRequest(), timeout=30)
    pod = next(metrics for metrics in reply.pod_metrics if metrics.pod_sandbox_id == busy.id)
    by_container = {metrics.container_id: metrics for metrics in pod.container_metrics}
    assert set(by_container) == {busy.containers["mem"], busy.containers["spin"]}  # "done" has exited

    def value(metrics: list[api.Metric], name: str) -> tuple[int, dict[str, str]]:
        metric = next(metric for metric in metrics if metric.name == name)
        assert len(metric.label_values) == len(keys[name])
        return metric.value.value, dict(zip(keys[name], metric.label_values))

    working_set, metric_labels = value(by_container[busy.containers["mem"]].metrics,
                                       "container_memory_working_set_bytes")
    assert working_set >= 64 * MiB
    assert metric_labels["pod"] == "busy" and metric_labels["namespace"] == busy.namespace
    assert metric_labels["container"] == "mem" and metric_labels["image"] == BUSYBOX
    assert metric_labels["id"].endswith(busy.containers["mem"])
    _, network_labels = value(list(pod.metrics), "container_network_receive_bytes_total")
    assert network_labels["interface"] == "eth0" and network_labels["container"] == ""
    found = CgroupReader.for_this_host().locate_pod(busy.cgroup_parent, docker_api.info()["CgroupDriver"])
    _, pod_labels = value(list(pod.metrics), "container_cpu_usage_seconds_total")
    assert found is not None and pod_labels["id"] == found[0]
    assert pod_labels["container"] == "" and pod_labels["pod"] == "busy" and pod_labels["cpu"] == "total"
    assert all(metric.name in keys for metric in pod.metrics)


def test_metrics_tell_processes_files_limits_and_the_layer(runtime: api_pb2_grpc.RuntimeServiceStub,
                                                           docker_api: docker.APIClient, pods: Pods) -> None:
    """A new container with limits, a daemon listening and a 1 MiB file: each newer metric against the truth."""
    pod = pods.run("limits", cgroup_parent=f"/dspystats{secrets.token_hex(4)}")
    resources = api.LinuxContainerResources(cpu_shares=512, cpu_period=100_000, cpu_quota=50_000,
                                            memory_limit_in_bytes=64 * MiB, memory_swap_limit_in_bytes=128 * MiB)
    limited = pods.add(pod, "limited", "httpd -p 8080 -h /tmp && head -c 1048576 /dev/urandom > /blob "
                       "&& touch /tmp/ready; exec sleep 3600", resources=resources)
    assert wait_for(lambda: exec_in(docker_api, limited, "test -f /tmp/ready && echo ok") == "ok")
    host_config = docker_api.inspect_container(limited)["HostConfig"]
    descriptors = runtime.ListMetricDescriptors(api.ListMetricDescriptorsRequest(), timeout=30).descriptors
    keys = {descriptor.name: list(descriptor.label_keys) for descriptor in descriptors}
    before = time.time()
    reply = runtime.ListPodSandboxMetrics(api.ListPodSandboxMetricsRequest(), timeout=30)
    metrics = next(metrics for metrics in reply.pod_metrics if metrics.pod_sandbox_id == pod.id)
    [container] = metrics.container_metrics
    values: dict[str, int] = {}
    labelled: dict[tuple[str, ...], int] = {}
    for metric in container.metrics:
        assert len(metric.label_values) == len(keys[metric.name])
        values.setdefault(metric.name, metric.value.value)
        extra = [value for key, value in zip(keys[metric.name], metric.label_values)
                 if key in ("failure_type", "scope")]
        labelled[(metric.name, *extra)] = metric.value.value

    assert values["container_processes"] >= 2  # httpd and sleep
    assert values["container_file_descriptors"] >= 3
    assert values["container_sockets"] >= 1  # httpd's listening socket
    assert values["container_spec_cpu_shares"] == host_config["CpuShares"] == 512
    assert values["container_spec_cpu_period"] == host_config["CpuPeriod"] == 100_000
    assert values["container_spec_cpu_quota"] == host_config["CpuQuota"] == 50_000
    assert values["container_spec_memory_swap_limit_bytes"] == host_config["MemorySwap"] == 128 * MiB
    assert values["container_threads_max"] == (host_config.get("PidsLimit") or 0)  # 0: no limit
    assert values["container_memory_kernel_usage"] > 0
    assert labelled[("container_memory_failures_total", "pgfault", "hierarchy")] > 0
    assert labelled[("container_memory_failures_total", "pgfault", "container")] > 0
    assert before - 1 <= values["container_last_seen"] <= time.time() + 1
    # A container the background worker has not measured yet has its writable layer all the same.
    assert values["container_fs_usage_bytes"] >= MiB
    info = docker_api.info()
    storage = os.statvfs(os.path.join(info["DockerRootDir"], info["Driver"]))
    assert values["container_fs_limit_bytes"] == storage.f_blocks * storage.f_frsize
    assert values["container_fs_inodes_total"] == storage.f_files
    assert 0 < values["container_fs_inodes_free"] <= storage.f_files
    pod_values = {metric.name: metric.value.value for metric in metrics.metrics}
    assert pod_values["container_spec_cpu_shares"] > 0 and pod_values["container_last_seen"] > 0
    assert set(keys) - set(values) <= {  # what this node cannot tell: no per-device I/O on its virtual disk
        "container_blkio_device_usage_total", "container_fs_reads_bytes_total", "container_fs_reads_total",
        "container_fs_writes_bytes_total", "container_fs_writes_total",
    } | {name for name in keys if name.startswith("container_network_")}  # the pod's, not the container's


# --- crictl ---------------------------------------------------------------------------------------


def crictl(shim: Shim, *args: str) -> dict:
    result = subprocess.run(
        [str(CRICTL), "--runtime-endpoint", shim.endpoint, "--timeout", "30s", *args],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@needs_crictl
def test_crictl_stats_and_statsp(shim: Shim, busy: Pod) -> None:
    stats = crictl(shim, "stats", "-o", "json", "--id", busy.containers["mem"][:12])["stats"]
    assert len(stats) == 1
    assert int(stats[0]["memory"]["workingSetBytes"]["value"]) >= 64 * MiB
    pods = crictl(shim, "statsp", "-o", "json", "--id", busy.id)["stats"]
    assert [pod["attributes"]["id"] for pod in pods] == [busy.id]
    assert int(pods[0]["linux"]["memory"]["workingSetBytes"]["value"]) >= 64 * MiB
