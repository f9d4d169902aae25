"""Docker list entries and cgroup readings to CRI stats and cAdvisor-style metrics (no I/O)."""

from __future__ import annotations

import dataclasses
import os

import pytest

from dockershim_py import labels, metrics
from dockershim_py.api import api_pb2 as api
from dockershim_py.cgroup_stats import CgroupSample, DeviceIo, InterfaceCounters, Pressure, ProcessCounts, Stall
from dockershim_py.stats import (
    container_attributes,
    container_matches,
    cpu_usage,
    image_name,
    inspected,
    io_usage,
    memory_usage,
    network_usage,
    process_usage,
    sandbox_attributes,
    sandbox_matches,
    swap_usage,
    writable_layer_usage,
)
from dockershim_py.writable_layer import LayerUsage

SANDBOX_ID = "b" * 64
CONTAINER_ID = "c" * 64


def container_entry(**overrides: object) -> dict:
    entry = {
        "Id": CONTAINER_ID,
        "Names": ["/k8s_app_web_default_uid-1_2"],
        "Image": "sha256:1234",
        "State": "running",
        "Labels": {
            **labels.container_labels({"tier": "front"}, {"note": "x"}, SANDBOX_ID, "/var/log/pods/app.log"),
            labels.USER_SPECIFIED_IMAGE_LABEL: "busybox:1.0",
        },
    }
    entry.update(overrides)
    return entry


def sandbox_entry(**overrides: object) -> dict:
    entry = {
        "Id": SANDBOX_ID,
        "Names": ["/k8s_POD_web_default_uid-1_0"],
        "State": "running",
        "Labels": labels.sandbox_labels({"app": "web"}, {"owner": "me"}),
    }
    entry.update(overrides)
    return entry


SAMPLE = CgroupSample(
    cpu_usage_ns=2_500_000_000, memory_usage=80_000_000, memory_working_set=79_000_000, memory_rss=70_000_000,
    page_faults=1074, major_page_faults=5, memory_limit=100_000_000, swap_usage=4096, swap_limit=8192, tasks=3,
)
# Everything a detailed (metrics) reading of a v1 cgroup can tell.
DETAILED = dataclasses.replace(
    SAMPLE, cpu_user_ns=2 * 10**9, cpu_system_ns=5 * 10**8, cfs_periods=10, cfs_throttled_periods=2,
    cfs_throttled_ns=3 * 10**9, memory_cache=1_290_816, memory_mapped_file=151_552, memory_max_usage=95_000_000,
    memory_failcnt=7, oom_kills=1, memory_kernel=417_792, local_page_faults=600, local_major_page_faults=2,
    memory_swap_limit=134_217_728, cpu_period_us=100_000, cpu_quota_us=50_000, cpu_shares=512, pids_limit=None,
    block_io=(DeviceIo(8, 0, "/dev/sda", {"Read": 4096, "Write": 8192, "Total": 12288}, {"Read": 1, "Write": 2}),),
    cpu_pressure=Pressure(Stall(17.02, 3.07, 0.64, 3_022_525), Stall(0.18, 0.03, 0.0, 36_721)),
    memory_pressure=Pressure(Stall(0.0, 0.0, 0.0, 2_500_000), Stall(0.0, 0.0, 0.0, 1_999_999)),
    io_pressure=Pressure(Stall(1.5, 0.5, 0.25, 7_000_000), Stall(1.0, 0.25, 0.125, 5_000_000)),
)
FILESYSTEM = os.statvfs_result((4096, 4096, 1000, 500, 400, 2000, 1500, 1500, 0, 255))


# --- attributes and filters -----------------------------------------------------------------------


def test_container_attributes_hide_internal_labels() -> None:
    attributes = container_attributes(container_entry())
    assert attributes is not None
    assert attributes.id == CONTAINER_ID
    assert (attributes.metadata.name, attributes.metadata.attempt) == ("app", 2)
    assert dict(attributes.labels) == {"tier": "front"}
    assert dict(attributes.annotations) == {"note": "x"}


def test_foreign_names_are_not_ours() -> None:
    assert container_attributes(container_entry(Names=["/nginx"])) is None
    assert container_attributes(container_entry(Names=[])) is None
    assert sandbox_attributes(sandbox_entry(Names=["/k8s_app_web_default_uid-1_2"])) is None


def test_sandbox_attributes() -> None:
    attributes = sandbox_attributes(sandbox_entry())
    assert attributes is not None
    assert (attributes.metadata.name, attributes.metadata.namespace, attributes.metadata.uid) == (
        "web", "default", "uid-1")
    assert dict(attributes.labels) == {"app": "web"}  # not io.kubernetes.container.name=POD
    assert dict(attributes.annotations) == {"owner": "me"}


@pytest.mark.parametrize("stats_filter, matches", [
    (None, True),
    (api.ContainerStatsFilter(), True),
    (api.ContainerStatsFilter(id="ccc"), True),
    (api.ContainerStatsFilter(id="cd"), False),
    (api.ContainerStatsFilter(pod_sandbox_id="bbbb"), True),
    (api.ContainerStatsFilter(pod_sandbox_id="bc"), False),
    (api.ContainerStatsFilter(label_selector={"tier": "front"}), True),
    (api.ContainerStatsFilter(label_selector={"tier": "back"}), False),
    (api.ContainerStatsFilter(label_selector={labels.SANDBOX_ID_LABEL: SANDBOX_ID}), False),  # internal: hidden
])
def test_container_filter(stats_filter: api.ContainerStatsFilter | None, matches: bool) -> None:
    entry = container_entry()
    assert container_matches(entry, container_attributes(entry), stats_filter) is matches


@pytest.mark.parametrize("stats_filter, matches", [
    (None, True),
    (api.PodSandboxStatsFilter(id="bb"), True),
    (api.PodSandboxStatsFilter(id="c"), False),
    (api.PodSandboxStatsFilter(label_selector={"app": "web"}), True),
    (api.PodSandboxStatsFilter(label_selector={"app": "web", "x": "y"}), False),
])
def test_sandbox_filter(stats_filter: api.PodSandboxStatsFilter | None, matches: bool) -> None:
    assert sandbox_matches(sandbox_attributes(sandbox_entry()), stats_filter) is matches


def test_image_name_prefers_what_the_pod_spec_said() -> None:
    assert image_name(container_entry()) == "busybox:1.0"
    assert image_name(container_entry(Labels={})) == "sha256:1234"


# --- CRI figures ------------------------------------------------------------------------------------


def test_cpu_usage_has_nano_cores_only_when_known() -> None:
    with_rate = cpu_usage(SAMPLE, 1_000_000_000, timestamp=42)
    assert with_rate.timestamp == 42
    assert with_rate.usage_core_nano_seconds.value == 2_500_000_000
    assert with_rate.usage_nano_cores.value == 1_000_000_000
    assert not cpu_usage(SAMPLE, None, timestamp=42).HasField("usage_nano_cores")


def test_memory_usage() -> None:
    memory = memory_usage(SAMPLE, timestamp=42)
    assert memory.working_set_bytes.value == 79_000_000
    assert memory.usage_bytes.value == 80_000_000
    assert memory.rss_bytes.value == 70_000_000
    assert memory.available_bytes.value == 21_000_000
    assert (memory.page_faults.value, memory.major_page_faults.value) == (1074, 5)


def test_pressure_in_nanoseconds_as_the_cri_counts() -> None:
    cpu = cpu_usage(DETAILED, None, timestamp=42)
    assert (cpu.psi.Some.Total, cpu.psi.Some.Avg10, cpu.psi.Some.Avg60, cpu.psi.Some.Avg300) == (
        3_022_525_000, 17.02, 3.07, 0.64)
    assert cpu.psi.Full.Total == 36_721_000
    memory = memory_usage(DETAILED, timestamp=42)
    assert (memory.psi.Some.Total, memory.psi.Full.Total) == (2_500_000_000, 1_999_999_000)
    io = io_usage(DETAILED, timestamp=42)
    assert io is not None and io.timestamp == 42
    assert (io.psi.Some.Total, io.psi.Full.Total, io.psi.Full.Avg300) == (7_000_000_000, 5_000_000_000, 0.125)
    old_kernel = dataclasses.replace(DETAILED, cpu_pressure=Pressure(Stall(1.0, 1.0, 1.0, 10), None))
    assert cpu_usage(old_kernel, None, timestamp=1).psi.HasField("Some")
    assert not cpu_usage(old_kernel, None, timestamp=1).psi.HasField("Full")
    calm = dataclasses.replace(DETAILED, io_pressure=Pressure(Stall(0.0, 0.0, 0.0, 0), Stall(0.0, 0.0, 0.0, 0)))
    calm_io = io_usage(calm, timestamp=1)
    assert calm_io is not None and calm_io.psi.HasField("Some") and calm_io.psi.HasField("Full")  # zero, not unknown


def test_no_pressure_without_psi() -> None:
    assert not cpu_usage(SAMPLE, None, timestamp=1).HasField("psi")
    assert not memory_usage(SAMPLE, timestamp=1).HasField("psi")
    assert io_usage(SAMPLE, timestamp=1) is None


def test_memory_without_limit_has_no_available_bytes() -> None:
    memory = memory_usage(CgroupSample(1, 10, 5, 3, 0, 0), timestamp=1)
    assert not memory.HasField("available_bytes")


def test_swap_and_process_usage() -> None:
    swap = swap_usage(SAMPLE, timestamp=1)
    assert swap is not None and (swap.swap_usage_bytes.value, swap.swap_available_bytes.value) == (4096, 4096)
    assert swap_usage(CgroupSample(1, 10, 5, 3, 0, 0), timestamp=1) is None
    process = process_usage(SAMPLE, timestamp=1)
    assert process is not None and process.process_count.value == 3
    assert process_usage(CgroupSample(1, 10, 5, 3, 0, 0), timestamp=1) is None


def counters(base: int) -> InterfaceCounters:
    return InterfaceCounters(base, base + 1, base + 2, base + 3, base + 4, base + 5, base + 6, base + 7)


def test_network_usage_eth0_is_default_loopback_left_out() -> None:
    usage = network_usage({"lo": counters(0), "eth0": counters(10), "net1": counters(20)}, timestamp=5)
    assert usage is not None
    assert usage.default_interface.name == "eth0"
    assert (usage.default_interface.rx_bytes.value, usage.default_interface.rx_errors.value) == (10, 12)
    assert (usage.default_interface.tx_bytes.value, usage.default_interface.tx_errors.value) == (14, 16)
    assert [interface.name for interface in usage.interfaces] == ["net1"]


def test_network_usage_without_eth0_or_any_interface() -> None:
    usage = network_usage({"lo": counters(0), "ens5": counters(1)}, timestamp=5)
    assert usage is not None and usage.default_interface.name == "ens5" and not usage.interfaces
    assert network_usage({"lo": counters(0)}, timestamp=5) is None


def test_writable_layer_usage() -> None:
    layer = writable_layer_usage(LayerUsage(4096, 7, 99), "/var/lib/docker/overlay2")
    assert (layer.timestamp, layer.used_bytes.value, layer.inodes_used.value) == (99, 4096, 7)
    assert layer.fs_id.mountpoint == "/var/lib/docker/overlay2"
    assert not writable_layer_usage(LayerUsage(4096, None, 99), "/x").HasField("inodes_used")


def test_inspected_keeps_what_the_stats_need() -> None:
    facts = inspected({
        "State": {"Status": "running", "Pid": 42, "StartedAt": "2024-05-01T10:20:30.5Z"},
        "HostConfig": {"CgroupParent": "/kubepods/pod1", "NetworkMode": "container:abc"},
        "GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": "/var/lib/docker/overlay2/x/diff"}},
    })
    assert (facts.state, facts.pid, facts.cgroup_parent, facts.host_network) == (
        "running", 42, "/kubepods/pod1", False)
    assert facts.upper_dir == "/var/lib/docker/overlay2/x/diff"
    assert facts.started_at == 1714558830_500_000_000
    other = inspected({"State": {"Status": "created", "StartedAt": "0001-01-01T00:00:00Z"},
                       "HostConfig": {"NetworkMode": "host"}, "GraphDriver": {"Name": "btrfs", "Data": {}}})
    assert (other.pid, other.upper_dir, other.started_at, other.host_network) == (0, "", 0, True)


# --- metrics ----------------------------------------------------------------------------------------


LABELS = {"container": "app", "id": "/kubepods/pod1/c", "image": "busybox:1.0", "name": "k8s_app_web",
          "namespace": "default", "pod": "web"}


def test_descriptors_are_unique_with_sorted_keys() -> None:
    descriptors = metrics.descriptors()
    names = [descriptor.name for descriptor in descriptors]
    assert len(names) == len(set(names))
    for descriptor in descriptors:
        assert list(descriptor.label_keys) == sorted(descriptor.label_keys)
        assert {"pod", "namespace", "container", "image"} <= set(descriptor.label_keys)
        assert descriptor.help
    assert {"container_cpu_usage_seconds_total", "container_memory_working_set_bytes", "container_memory_rss",
            "container_network_receive_bytes_total", "container_fs_usage_bytes"} <= set(names)


def test_every_metric_follows_its_descriptor() -> None:
    keys = {descriptor.name: list(descriptor.label_keys) for descriptor in metrics.descriptors()}
    produced = api.ContainerMetrics().metrics
    metrics.add_cgroup_metrics(produced, LABELS, DETAILED)
    metrics.add_last_seen_metric(produced, LABELS, 1714558899_900_000_000)
    metrics.add_process_metrics(produced, LABELS, ProcessCounts(2, 5, 1))
    metrics.add_start_time_metric(produced, LABELS, 1714558830_500_000_000)
    metrics.add_writable_layer_metric(produced, LABELS, "/var/lib/docker/overlay2", LayerUsage(4096, 1, 77))
    metrics.add_filesystem_metrics(produced, LABELS, "/var/lib/docker/overlay2", FILESYSTEM)
    metrics.add_network_metrics(produced, LABELS, {"eth0": counters(10), "lo": counters(0)})
    for metric in produced:
        assert metric.name in keys
        assert len(metric.label_values) == len(keys[metric.name])
    assert {metric.name for metric in produced} == set(keys)  # every descriptor has its figures
    by_name = {metric.name: metric for metric in produced}
    cpu = by_name["container_cpu_usage_seconds_total"]
    assert cpu.value.value == 2 and cpu.metric_type == api.COUNTER and cpu.timestamp == 0
    assert list(cpu.label_values) == ["app", "total", "/kubepods/pod1/c", "busybox:1.0", "k8s_app_web", "default", "web"]
    assert by_name["container_memory_working_set_bytes"].value.value == 79_000_000
    assert by_name["container_memory_working_set_bytes"].metric_type == api.GAUGE
    assert by_name["container_spec_memory_limit_bytes"].value.value == 100_000_000
    assert by_name["container_start_time_seconds"].value.value == 1714558830
    layer = by_name["container_fs_usage_bytes"]
    assert layer.timestamp == 77 and "/var/lib/docker/overlay2" in layer.label_values  # measured earlier
    receive = by_name["container_network_receive_bytes_total"]
    assert receive.value.value == 10 and "eth0" in receive.label_values
    assert not any("lo" in metric.label_values for metric in produced)


def labelled(produced: list[api.Metric], name: str) -> dict[tuple[str, ...], api.Metric]:
    """The metrics named `name` by their label values other than the container's own."""
    keys = next(list(descriptor.label_keys) for descriptor in metrics.descriptors() if descriptor.name == name)
    return {tuple(value for key, value in zip(keys, metric.label_values) if key not in LABELS): metric
            for metric in produced if metric.name == name}


def test_cgroup_metrics_of_a_detailed_reading() -> None:
    produced = api.ContainerMetrics().metrics
    metrics.add_cgroup_metrics(produced, LABELS, DETAILED)
    by_name = {metric.name: metric for metric in produced}
    assert by_name["container_memory_kernel_usage"].value.value == 417_792
    assert by_name["container_spec_cpu_period"].value.value == 100_000
    assert by_name["container_spec_cpu_quota"].value.value == 50_000
    assert by_name["container_spec_cpu_shares"].value.value == 512
    assert by_name["container_spec_cpu_shares"].metric_type == api.GAUGE
    assert by_name["container_spec_memory_swap_limit_bytes"].value.value == 134_217_728
    assert by_name["container_threads_max"].value.value == 0  # no pids limit: "infinity if value is zero"
    failures = labelled(list(produced), "container_memory_failures_total")
    assert {labels: metric.value.value for labels, metric in failures.items()} == {
        ("pgfault", "container"): 600, ("pgmajfault", "container"): 2,
        ("pgfault", "hierarchy"): 1074, ("pgmajfault", "hierarchy"): 5,
    }
    assert all(metric.metric_type == api.COUNTER for metric in failures.values())
    blkio = labelled(list(produced), "container_blkio_device_usage_total")
    assert {labels: metric.value.value for labels, metric in blkio.items()} == {
        ("/dev/sda", "8", "0", "Read"): 4096, ("/dev/sda", "8", "0", "Total"): 12288,
        ("/dev/sda", "8", "0", "Write"): 8192,
    }
    assert {name: labelled(list(produced), name)[("/dev/sda",)].value.value for name in (
        "container_fs_reads_bytes_total", "container_fs_writes_bytes_total", "container_fs_reads_total",
        "container_fs_writes_total")} == {
        "container_fs_reads_bytes_total": 4096, "container_fs_writes_bytes_total": 8192,
        "container_fs_reads_total": 1, "container_fs_writes_total": 2,
    }
    assert {name: by_name[f"container_pressure_{name}_seconds_total"].value.value for name in (
        "cpu_waiting", "cpu_stalled", "memory_waiting", "memory_stalled", "io_waiting", "io_stalled")} == {
        "cpu_waiting": 3, "cpu_stalled": 0, "memory_waiting": 2, "memory_stalled": 1, "io_waiting": 7,
        "io_stalled": 5,
    }  # whole seconds, as every _seconds_total counter here
    assert by_name["container_pressure_io_stalled_seconds_total"].metric_type == api.COUNTER


def test_process_filesystem_and_last_seen_metrics() -> None:
    produced = api.ContainerMetrics().metrics
    metrics.add_last_seen_metric(produced, LABELS, 1714558899_900_000_000)
    metrics.add_process_metrics(produced, LABELS, ProcessCounts(2, None, None))  # too many files to count
    metrics.add_filesystem_metrics(produced, LABELS, "/var/lib/docker/overlay2", FILESYSTEM)
    by_name = {metric.name: metric for metric in produced}
    assert by_name["container_last_seen"].value.value == 1714558899
    assert by_name["container_processes"].value.value == 2
    assert "container_file_descriptors" not in by_name and "container_sockets" not in by_name
    assert by_name["container_fs_limit_bytes"].value.value == 4096 * 1000
    assert by_name["container_fs_inodes_total"].value.value == 2000
    assert by_name["container_fs_inodes_free"].value.value == 1500
    assert labelled(list(produced), "container_fs_inodes_free").keys() == {("/var/lib/docker/overlay2",)}


def test_unknown_figures_are_left_out() -> None:
    produced = api.ContainerMetrics().metrics
    metrics.add_cgroup_metrics(produced, LABELS, CgroupSample(1, 10, 5, 3, 0, 0))
    names = {metric.name for metric in produced}
    assert "container_memory_failcnt" not in names and "container_cpu_user_seconds_total" not in names
    assert "container_spec_cpu_shares" not in names and "container_memory_kernel_usage" not in names
    assert "container_blkio_device_usage_total" not in names  # no I/O yet
    assert not any(name.startswith("container_pressure_") for name in names)  # no PSI on this kernel
    failures = {tuple(metric.label_values) for metric in produced if metric.name == "container_memory_failures_total"}
    assert len(failures) == 2  # the hierarchy's page faults only
    assert "container_spec_memory_limit_bytes" in names  # 0: unlimited, as cAdvisor says
